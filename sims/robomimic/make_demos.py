"""Record scripted-expert robomimic demos (Lift, PickPlaceCan, NutAssemblySquare) as a zarr store.

    python -m gpc.sims.robomimic.make_demos --task Lift --out data/robomimic/lift_demos.zarr --attempts 120
    python -m gpc.sims.robomimic.make_demos --task PickPlaceCan --out ... --images   # + agentview/eye-in-hand
    python -m gpc.sims.robomimic.make_demos --task PickPlaceCan --out ... --images --cameras agentview

Layout (the one `import_hdf5` writes for robomimic datasets): `data/<obs key>` with robomimic's key names
(low-dim `object`, `robot0_eef_pos`, `robot0_eef_quat`, `robot0_gripper_qpos`; with --images also
`agentview_image`, `robot0_eye_in_hand_image`), `data/action` (7-dim OSC_POSE deltas), `meta/episode_ends`,
`meta/episode_seeds`, and the env's robomimic-style metadata in the root attribute `env_args` (so
`env_from_metadata` rebuilds the env). Attempt i resets with seed `seed + i`; only successful episodes are
kept. Row t of `data/*` holds the observation before action t. The store is written under a temporary
name and renamed when complete, so a crash never leaves a partial store; the summary also goes to
`<out>.json` (`.zarr` dropped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import robosuite
import zarr
from tqdm import tqdm

from gpc.runtime.atomic import replace_directory
from gpc.sims.expert_report import describe, expert_summary
from gpc.sims.robomimic.env import CAMERAS, HORIZONS, LOW_DIM_KEYS, ROBOSUITE_ENV_TYPE, TASKS, make_env
from gpc.sims.robomimic.expert import make_expert


def env_args(env) -> dict:
    """robomimic-style metadata (`data.attrs["env_args"]`) of a gpc robomimic env."""
    inner = env.unwrapped
    kwargs = {k: v for k, v in inner.robosuite_kwargs.items()}
    return {"env_name": inner.env_name, "type": ROBOSUITE_ENV_TYPE, "env_kwargs": kwargs,
            "env_version": robosuite.__version__}


def run_episode(env, expert, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """One expert episode; returns the per-step arrays (obs before each action, action) and success."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    rows = {key: [] for key in (*obs, "action")}
    while True:
        action = expert(env)
        for key, value in obs.items():
            rows[key].append(value)
        rows["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return {k: np.stack(v) for k, v in rows.items()}, bool(info["is_success"])


def make_demos(out: Path, task: str, attempts: int, seed: int = 0, images: bool = False, image_size: int = 84,
               max_steps: int | None = None, progress: bool = True, cameras=CAMERAS) -> dict:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    max_steps = max_steps or HORIZONS.get(task, 400)
    obs_keys = LOW_DIM_KEYS + (tuple(f"{c}_image" for c in cameras) if images else ())
    env = make_env(task, obs_keys=obs_keys, image_size=image_size, cameras=cameras, max_episode_steps=max_steps)
    expert = make_expert(task)
    root = zarr.open_group(tmp, mode="w")
    data = {}
    for key, space in [*env.observation_space.items(), ("action", env.action_space)]:
        chunk_rows = 128 if key.endswith("_image") else 4096
        data[key] = root.create_array(f"data/{key}", shape=(0, *space.shape), dtype=space.dtype,
                                      chunks=(chunk_rows, *space.shape))
    root.attrs["env_args"] = env_args(env)

    ends, seeds, lengths, start_time = [], [], [], time.perf_counter()
    bar = tqdm(range(attempts), desc=f"{task} demos", disable=not progress)
    for i in bar:
        episode, success = run_episode(env, expert, seed + i)
        lengths.append(len(episode["action"]))
        if success:
            for key, array in data.items():
                array.append(episode[key].astype(array.dtype))
            ends.append((ends[-1] if ends else 0) + len(episode["action"]))
            seeds.append(seed + i)
        bar.set_postfix(kept=len(ends))
    env.close()
    root.create_array("meta/episode_ends", data=np.array(ends, dtype=np.int64))
    root.create_array("meta/episode_seeds", data=np.array(seeds, dtype=np.int64))
    replace_directory(tmp, out)

    summary = expert_summary(
        attempts, len(ends), ends, seed, time.perf_counter() - start_time, task=task,
        failed_seeds=sorted(set(range(seed, seed + attempts)) - set(seeds)), max_episode_steps=max_steps,
        images=images, image_size=image_size if images else None, cameras=list(cameras) if images else None)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attempts", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", action="store_true", help="also record camera images (--cameras)")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--cameras", nargs="+", choices=CAMERAS, default=list(CAMERAS),
                        help="with --images: the cameras to record (each costs render time)")
    parser.add_argument("--max-steps", type=int, default=None, help="default: robomimic's horizon (400)")
    args = parser.parse_args()
    print(describe(make_demos(args.out, args.task, args.attempts, args.seed, args.images, args.image_size,
                              args.max_steps, cameras=tuple(args.cameras))))


if __name__ == "__main__":
    main()
