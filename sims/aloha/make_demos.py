"""Record scripted-expert ALOHA demos as a zarr store in Diffusion Policy's replay-buffer layout.

    python -m gpc.sims.aloha.make_demos --task transfer_cube --out data/aloha/transfer_cube.zarr --attempts 100 --seed 0

Attempt i resets with seed `seed + i`. Every attempt first runs without rendering (the expert reads
privileged state only), which measures the expert's success rate cheaply; the first `--max-demos`
successful seeds are then replayed with the camera on and recorded, while the store stays under `--max-mb`
(the sim is deterministic per seed:
the replay must reproduce the first run's actions and success, or the script stops). Row t of `data/*`
holds the observation before action t; `data/action` is the expert's commanded 14-dim joint target.

Size: the store must ship in git (< 40 MB a task). Images (120x160) compress to ~1 kB a step; point
clouds dominate (~4 kB a step), so their xyz is rounded to `--pc-mantissa-bits` float32 mantissa bits
before compression (10 bits: at most 0.25 mm for coordinates under 1 m, far below the ~1 cm a depth pixel
covers there), both are zstd level 19, and recording stops before a demo would take the store past
`--max-mb`. The store is written under a temporary name and renamed when
complete; the summary also goes to `<out>.json` (`.zarr` dropped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm
from zarr.codecs import ZstdCodec

from gpc.runtime.atomic import replace_directory
from gpc.sims.aloha.env import OBS_KEYS, make_env
from gpc.sims.aloha.expert import ScriptedExpert
from gpc.sims.expert_report import describe, expert_summary


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to `bits` mantissa bits (the low bits zeroed, so they compress)."""
    if bits >= 23:
        return x
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    drop = 23 - bits
    u = (u + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return u.view(np.float32)


def run_episode(env, expert: ScriptedExpert, seed: int, record: bool) -> tuple[dict[str, np.ndarray], bool]:
    """One expert episode; returns the per-step arrays (obs before each action, action) and success."""
    obs, info = env.reset(seed=seed)
    expert.reset(env)
    rows = {k: [] for k in (*OBS_KEYS, "action")} if record else {"action": []}
    while True:
        action = expert(env)
        if record:
            for key in OBS_KEYS:
                rows[key].append(obs[key])
        rows["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return {k: np.stack(v) for k, v in rows.items()}, bool(info["is_success"])


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def make_demos(task: str, out: Path, attempts: int, seed: int, max_demos: int = 50, image_size=(120, 160),
               n_points: int = 1024, max_steps: int = 400, pc_mantissa_bits: int = 10,
               max_mb: float = 36.0) -> dict:
    out = Path(out)
    expert = ScriptedExpert(task)
    start_time = time.perf_counter()
    probe = make_env(task, obs_keys=("agent_pos",), max_episode_steps=max_steps)
    successes: list[tuple[int, np.ndarray]] = []
    lengths = []
    bar = tqdm(range(attempts), desc=f"aloha {task} expert")
    for i in bar:
        episode, success = run_episode(probe, expert, seed + i, record=False)
        lengths.append(len(episode["action"]))
        if success:
            successes.append((seed + i, episode["action"]))
        bar.set_postfix(success=len(successes))
    expert_seconds = time.perf_counter() - start_time

    height, width = image_size
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(tmp, mode="w")
    compressors, dense = [ZstdCodec(level=9)], [ZstdCodec(level=19)]
    data = {
        "head_camera": root.create_array("data/head_camera", shape=(0, height, width, 3), dtype="uint8",
                                         chunks=(64, height, width, 3), compressors=dense),
        "point_cloud": root.create_array("data/point_cloud", shape=(0, n_points, 6), dtype="float32",
                                         chunks=(64, n_points, 6), compressors=dense),
        "agent_pos": root.create_array("data/agent_pos", shape=(0, 14), dtype="float32", chunks=(4096, 14),
                                       compressors=compressors),
        "action": root.create_array("data/action", shape=(0, 14), dtype="float32", chunks=(4096, 14),
                                    compressors=compressors),
    }
    recorder = make_env(task, obs_keys=OBS_KEYS, image_size=image_size, n_points=n_points,
                        max_episode_steps=max_steps)
    ends, seeds, record_start = [], [], time.perf_counter()
    budget = max_mb * 1e6
    for episode_seed, actions in tqdm(successes[:max_demos], desc=f"aloha {task} recording"):
        if ends and store_bytes(tmp) * (len(ends) + 1) / len(ends) > budget:
            break  # one more demo of the average size would pass the size budget
        episode, success = run_episode(recorder, expert, episode_seed, record=True)
        if not success or not np.array_equal(episode["action"], actions):
            raise RuntimeError(f"seed {episode_seed}: the recording replay diverged from the expert run")
        episode["point_cloud"][..., :3] = round_mantissa(episode["point_cloud"][..., :3], pc_mantissa_bits)
        for key, array in data.items():
            array.append(episode[key].astype(array.dtype))
        ends.append((ends[-1] if ends else 0) + len(episode["action"]))
        seeds.append(episode_seed)
    root.create_array("meta/episode_ends", data=np.array(ends, dtype=np.int64))
    root.create_array("meta/episode_seeds", data=np.array(seeds, dtype=np.int64))
    root.attrs.update({"task": task, "vector": "RoboTwin aloha-agilex 14-dim joints, grippers 0..1 (1 = open)",
                       "image_size": [height, width], "n_points": n_points,
                       "point_cloud_xyz_mantissa_bits": pc_mantissa_bits})
    replace_directory(tmp, out)

    seconds = time.perf_counter() - start_time
    record_seconds = time.perf_counter() - record_start
    size = store_bytes(out)
    summary = expert_summary(
        attempts, len(successes), ends, seed, seconds, task=task,
        mean_attempt_length=float(np.mean(lengths)) if lengths else 0.0, max_episode_steps=max_steps,
        image_size=[height, width], n_points=n_points, point_cloud_xyz_mantissa_bits=pc_mantissa_bits,
        store_bytes=size, max_mb=max_mb, max_demos=max_demos,
        seconds_per_attempt=expert_seconds / attempts,  # the expert alone, without rendering
        seconds_per_recorded_demo=record_seconds / max(len(ends), 1))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("transfer_cube", "insertion"), default="transfer_cube")
    parser.add_argument("--out", type=Path, default=None, help="default data/aloha/<task>.zarr")
    parser.add_argument("--attempts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-demos", type=int, default=50)
    parser.add_argument("--max-mb", type=float, default=36.0, help="size budget of the store")
    parser.add_argument("--image-size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    parser.add_argument("--n-points", type=int, default=1024)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--pc-mantissa-bits", type=int, default=10)
    args = parser.parse_args()
    out = args.out or Path("data/aloha") / f"{args.task}.zarr"
    s = make_demos(args.task, out, args.attempts, args.seed, args.max_demos, tuple(args.image_size),
                   args.n_points, args.max_steps, args.pc_mantissa_bits, args.max_mb)
    print(f"{describe(s)} (expert, no rendering), {s['seconds_per_recorded_demo']:.1f} s/recorded demo, "
          f"store {s['store_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
