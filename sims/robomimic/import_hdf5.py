"""Import a robomimic HDF5 dataset (low-dim or image) into gpc's zarr replay-buffer layout.

    python -m gpc.sims.robomimic.import_hdf5 lift/ph/low_dim_v15.hdf5 --out data/robomimic/lift_ph.zarr
    python -m gpc.sims.robomimic.import_hdf5 can/ph/image_v15.hdf5 --out ... \
        --obs-keys robot0_eef_pos robot0_eef_quat robot0_gripper_qpos agentview_image [--filter-key train]

robomimic stores `data/demo_N/obs/<key>` (row t: the observation before action t) and `data/demo_N/actions`;
demos are taken in numeric order of N (demo_2 before demo_10) and laid back to back: `data/<obs key>`
(robomimic's names, images HWC uint8 as stored), `data/action`, `meta/episode_ends`, and the root attributes
`env_args` (the dataset's env metadata, parsed from `data.attrs["env_args"]`, for `env_from_metadata`),
`demo_names` and `source`. Every requested key is checked in every demo before anything is written; a
missing one stops the import with a one-line error naming the file, demo and key. The store is written
under `<out>.tmp` and renamed when complete, so a failure never leaves partial output.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import zarr

from gpc.runtime.atomic import replace_directory


class DatasetError(ValueError):
    """A robomimic file that cannot be imported (missing group or key, inconsistent lengths)."""


def _demo_number(name: str) -> int:
    match = re.fullmatch(r"demo_(\d+)", name)
    return int(match.group(1)) if match else -1


def _demo_names(f, path: Path, filter_key: str | None) -> list[str]:
    if "data" not in f:
        raise DatasetError(f"{path}: no 'data' group (not a robomimic dataset)")
    if filter_key is not None:
        if f"mask/{filter_key}" not in f:
            raise DatasetError(f"{path}: no filter key 'mask/{filter_key}'")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{filter_key}"][:]]
        missing = [n for n in names if n not in f["data"]]
        if missing:
            raise DatasetError(f"{path}: mask/{filter_key} names {missing[0]}, which is not in data/")
    else:
        names = [n for n in f["data"].keys() if _demo_number(n) >= 0]
    if not names:
        raise DatasetError(f"{path}: no demos (data/demo_N) found")
    return sorted(names, key=_demo_number)


def import_hdf5(src: Path | str, out: Path | str, obs_keys=None, filter_key: str | None = None,
                action_key: str = "actions") -> dict:
    """Convert `src` to a zarr store at `out`; returns a short summary. See the module docstring."""
    import h5py

    src, out = Path(src), Path(out)
    if not src.is_file():
        raise DatasetError(f"{src}: no such file")
    with h5py.File(src, "r") as f:
        names = _demo_names(f, src, filter_key)
        if obs_keys is None:
            if "obs" not in f[f"data/{names[0]}"]:
                raise DatasetError(f"{src}: data/{names[0]} has no 'obs' group")
            obs_keys = sorted(f[f"data/{names[0]}/obs"].keys())
        obs_keys = list(obs_keys)
        if "action" in obs_keys:
            raise DatasetError(f"{src}: obs key 'action' would collide with data/action")

        # Validate everything first: a missing key anywhere means no output at all.
        lengths, shapes, dtypes = [], {}, {}
        for name in names:
            demo = f[f"data/{name}"]
            if action_key not in demo:
                raise DatasetError(f"{src}: data/{name} has no '{action_key}'")
            length = demo[action_key].shape[0]
            for key in obs_keys:
                if f"obs/{key}" not in demo:
                    raise DatasetError(f"{src}: data/{name} has no obs key '{key}'")
                dataset = demo[f"obs/{key}"]
                if dataset.shape[0] != length:
                    raise DatasetError(f"{src}: data/{name}/obs/{key} has {dataset.shape[0]} steps but "
                                       f"{action_key} has {length}")
                if shapes.setdefault(key, dataset.shape[1:]) != dataset.shape[1:]:
                    raise DatasetError(f"{src}: data/{name}/obs/{key} has shape {dataset.shape[1:]}, "
                                       f"other demos {shapes[key]}")
                dtypes.setdefault(key, dataset.dtype)
            shapes.setdefault("action", demo[action_key].shape[1:])
            dtypes.setdefault("action", demo[action_key].dtype)
            if demo[action_key].shape[1:] != shapes["action"]:
                raise DatasetError(f"{src}: data/{name}/{action_key} has shape {demo[action_key].shape[1:]}, "
                                   f"other demos {shapes['action']}")
            lengths.append(length)
        env_args = f["data"].attrs.get("env_args")
        if isinstance(env_args, bytes):
            env_args = env_args.decode()
        env_meta = json.loads(env_args) if env_args is not None else None

        ends = np.cumsum(lengths).astype(np.int64)
        starts = ends - np.asarray(lengths)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            root = zarr.open_group(tmp, mode="w")
            arrays = {}
            for key in [*obs_keys, "action"]:
                shape = shapes[key]
                rows = 128 if len(shape) == 3 else 4096
                arrays[key] = root.create_array(f"data/{key}", shape=(int(ends[-1]), *shape), dtype=dtypes[key],
                                                chunks=(min(rows, max(1, int(ends[-1]))), *shape))
            for name, start, end in zip(names, starts, ends):
                demo = f[f"data/{name}"]
                for key in obs_keys:
                    arrays[key][start:end] = demo[f"obs/{key}"][:]
                arrays["action"][start:end] = demo[action_key][:]
            root.create_array("meta/episode_ends", data=ends)
            root.attrs.update({"env_args": env_meta, "demo_names": names, "source": str(src)})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    replace_directory(tmp, out)
    return {"source": str(src), "out": str(out), "demos": len(names), "steps": int(ends[-1]),
            "obs_keys": obs_keys, "env_name": (env_meta or {}).get("env_name")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="robomimic HDF5 file")
    parser.add_argument("--out", type=Path, required=True, help="zarr store to write")
    parser.add_argument("--obs-keys", nargs="+", default=None, help="default: every obs key of the first demo")
    parser.add_argument("--filter-key", default=None, help="import only the demos of mask/<key> (e.g. train)")
    args = parser.parse_args(argv)
    try:
        summary = import_hdf5(args.src, args.out, args.obs_keys, args.filter_key)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{summary['demos']} demos, {summary['steps']} steps, keys {summary['obs_keys']} -> {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
