"""Record scripted-expert PushT demos as a zarr store in Diffusion Policy's replay-buffer layout.

    python -m gpc.sims.pusht.make_demos --out data/pusht/demos.zarr --attempts 120 --seed 0

Attempt i resets with seed `seed + i`; only successful episodes are kept. Row t of `data/*` holds the
observation before action t. The store is written under a temporary name and renamed when complete, so
a crash never leaves a partial store; the summary also goes to `<out>.json` (`.zarr` dropped).
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

from gpc.runtime.atomic import replace_directory
from gpc.sims.expert_report import describe, expert_summary
from gpc.sims.pusht.env import make_env
from gpc.sims.pusht.expert import PushTExpert


def run_episode(env, expert: PushTExpert, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """One expert episode; returns the per-step arrays (obs before each action, action) and success."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    rows = {"state": [], "keypoint": [], "img": [], "action": []}
    while True:
        action = expert(env.unwrapped)
        for key, value in (("state", obs["state"]), ("keypoint", obs["keypoint"]), ("img", obs["image"]),
                           ("action", action)):
            rows[key].append(value)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return {k: np.stack(v) for k, v in rows.items()}, bool(info["is_success"])


def make_demos(out: Path, attempts: int, seed: int, image_size: int = 96, max_steps: int = 300) -> dict:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(tmp, mode="w")
    data = {
        "state": root.create_array("data/state", shape=(0, 5), dtype="float32", chunks=(4096, 5)),
        "keypoint": root.create_array("data/keypoint", shape=(0, 20), dtype="float32", chunks=(4096, 20)),
        "img": root.create_array("data/img", shape=(0, image_size, image_size, 3), dtype="uint8",
                                 chunks=(128, image_size, image_size, 3)),
        "action": root.create_array("data/action", shape=(0, 2), dtype="float32", chunks=(4096, 2)),
    }
    env = make_env(obs_keys=("state", "keypoint", "image"), image_size=image_size, max_episode_steps=max_steps)
    expert = PushTExpert()
    ends, seeds, start_time = [], [], time.perf_counter()
    bar = tqdm(range(attempts), desc="pusht demos")
    for i in bar:
        episode, success = run_episode(env, expert, seed + i)
        if success:
            for key, array in data.items():
                array.append(episode[key])
            ends.append((ends[-1] if ends else 0) + len(episode["action"]))
            seeds.append(seed + i)
        bar.set_postfix(kept=len(ends))
    root.create_array("meta/episode_ends", data=np.array(ends, dtype=np.int64))
    root.create_array("meta/episode_seeds", data=np.array(seeds, dtype=np.int64))
    replace_directory(tmp, out)

    summary = expert_summary(attempts, len(ends), ends, seed, time.perf_counter() - start_time, task="pusht",
                             max_episode_steps=max_steps, image_size=image_size)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attempts", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()
    print(describe(make_demos(args.out, args.attempts, args.seed, args.image_size, args.max_steps)))


if __name__ == "__main__":
    main()
