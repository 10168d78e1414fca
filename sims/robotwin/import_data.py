"""Import RoboTwin 2.0's collected episodes (`data/<task>/<config>/data/episode{i}.hdf5`) into gpc's zarr layout.

    python -m gpc.sims.robotwin.import_data /path/to/RoboTwin/data/beat_block_hammer/demo_clean \
        --out data/robotwin/beat_block_hammer.zarr [--cameras head_camera] [--point-cloud] [--episodes 50]

Like RoboTwin's own DP / DP3 `process_data.py`: frame t's joint vector is the state (stored as `agent_pos`,
the name gpc's parents read) and frame t+1's is `action`, so an episode of T frames gives T - 1 steps;
cameras are decoded from the JPEG bytes RoboTwin stores (OpenCV wrote them from RGB arrays, so OpenCV's
decode gives RGB back); the point cloud stays (1024, 6) xyz + rgb. Images stay HWC uint8, as gpc's datasets
store them. Run it in gpc's own environment: gpc's stores are zarr 3 (Python 3.11+), RoboTwin's has zarr 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpc.runtime.atomic import replace_directory


def decode_jpeg(buffer: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)


def read_episode(path: Path, cameras: list[str], with_point_cloud: bool) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        if "joint_action/vector" not in f:
            raise KeyError(f"{path}: joint_action/vector is missing")
        vector = np.asarray(f["joint_action/vector"], dtype=np.float32)
        if len(vector) < 2:
            raise ValueError(f"{path}: joint_action/vector has {len(vector)} frames; need at least 2")
        steps = {"agent_pos": vector[:-1], "action": vector[1:]}
        for camera in cameras:
            key = f"observation/{camera}/rgb"
            if key not in f:
                raise KeyError(f"{path}: {key} is missing (was that camera collected?)")
            steps[camera] = np.stack([decode_jpeg(bytes(b)) for b in f[key][:-1]])
        if with_point_cloud:
            points = np.asarray(f["pointcloud"], dtype=np.float32)
            if points.ndim != 3:
                raise ValueError(f"{path}: pointcloud has shape {points.shape}; collect with "
                                 "data_type.pointcloud: true")
            steps["point_cloud"] = points[:-1]
    return steps


def zarr3():
    """zarr, if it is version 3 (what gpc's datasets read); RoboTwin's environment has zarr 2."""
    try:
        import zarr
    except ImportError:
        zarr = None
    if zarr is None or int(getattr(zarr, "__version__", "0").split(".")[0]) < 3:
        raise ImportError("importing RoboTwin data needs zarr 3 (Python 3.11+): run it in gpc's own environment, "
                          "installed with pip install 'gpc[robotwin,train]'")
    return zarr


def import_episodes(source: Path, out: Path, cameras: list[str], with_point_cloud: bool,
                    episodes: int | None = None) -> dict:
    files = sorted((source / "data").glob("episode*.hdf5"), key=lambda p: int(p.stem.removeprefix("episode")))
    if episodes is not None:
        files = files[:episodes]
    if not files:
        raise FileNotFoundError(f"{source / 'data'}: no episode*.hdf5 files")
    zarr = zarr3()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(tmp, mode="w")
    arrays = {}
    ends = []
    try:
        for path in tqdm(files, desc="robotwin episodes"):
            steps = read_episode(path, cameras, with_point_cloud)
            for key, value in steps.items():
                if key not in arrays:
                    rows = max(1, min(4096, 2 ** 22 // max(1, value[0].nbytes)))  # chunks of about 4 MB
                    arrays[key] = root.create_array(f"data/{key}", shape=(0, *value.shape[1:]), dtype=value.dtype,
                                                    chunks=(rows, *value.shape[1:]))
                arrays[key].append(value)
            ends.append((ends[-1] if ends else 0) + len(steps["action"]))
        root.create_array("meta/episode_ends", data=np.array(ends, dtype=np.int64))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no partial output
        raise
    replace_directory(tmp, out)
    return {"episodes": len(ends), "steps": ends[-1], "keys": sorted(arrays), "source": str(source)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="RoboTwin's data/<task>/<config> folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cameras", nargs="*", default=["head_camera"])
    parser.add_argument("--point-cloud", action="store_true")
    parser.add_argument("--episodes", type=int, default=None, help="only the first N episodes")
    args = parser.parse_args()
    try:
        summary = import_episodes(args.source, args.out, args.cameras, args.point_cloud, args.episodes)
    except (FileNotFoundError, KeyError, ValueError, ImportError) as err:
        sys.exit(str(err).strip("'\""))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
