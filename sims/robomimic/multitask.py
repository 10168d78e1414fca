"""Join single-task robomimic demo stores into one multi-task store for a language-conditioned parent.

    python -m gpc.sims.robomimic.multitask data/robomimic/lift_images.zarr data/robomimic/can_images.zarr \
        data/robomimic/square_images.zarr --keys agentview_image robot0_eef_pos robot0_eef_quat \
        robot0_gripper_qpos --out data/robomimic/multitask_images.zarr

Episodes keep their order, store by store; a task recorded in shards (make_demos --seed per shard) is
given as all its stores, in seed order. `data/` holds `action` and the chosen keys, which every store
must have with one shape (the tasks' `object` vectors differ, so a multi-task parent sees the scene through
its cameras). `meta/instruction` gives each episode its task's sentence (`INSTRUCTIONS`, read from the
store's `env_args`), the language feature `instruction` of a policy trains on it; `meta/task` names the
task. The store is written whole or not at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer
from gpc.sims.robomimic.env import INSTRUCTION_KEY, INSTRUCTIONS


def store_task(path: Path) -> str:
    """The robosuite env name recorded in a demo store's `env_args`."""
    env_args = zarr.open_group(path, mode="r").attrs.get("env_args")
    if env_args is None:
        raise ValueError(f"{path}: env_args: missing; record the store with make_demos or import_hdf5")
    name = env_args.get("env_name")  # make_demos and import_hdf5 both store it parsed, as a mapping
    if name not in INSTRUCTIONS:
        raise ValueError(f"{path}: env_args.env_name: {name!r} has no instruction; tasks: {sorted(INSTRUCTIONS)}")
    return name


def join_stores(paths: Sequence[Path], keys: Sequence[str], out: Path, overwrite: bool = False) -> dict:
    """Write the multi-task store; returns a summary (episodes and steps per task)."""
    keys = list(dict.fromkeys([*keys, "action"]))
    data: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    ends, instructions, tasks, summary = [], [], [], {}
    for path in map(Path, paths):
        task = store_task(path)
        buffer = read_replay_buffer(path, keys)
        for key in keys:
            if data[key] and data[key][0].shape[1:] != buffer[key].shape[1:]:
                raise ValueError(f"{path}: data/{key}: shape {buffer[key].shape[1:]} differs from "
                                 f"{paths[0]}'s {data[key][0].shape[1:]}")
            data[key].append(buffer[key])
        offset = ends[-1] if ends else 0
        ends += [offset + int(e) for e in buffer.episode_ends]
        instructions += [INSTRUCTIONS[task]] * buffer.n_episodes
        tasks += [task] * buffer.n_episodes
        row = summary.setdefault(task, {"stores": [], "episodes": 0, "steps": 0})  # shards of one task add up
        row["stores"].append(str(path))
        row["episodes"] += buffer.n_episodes
        row["steps"] += buffer.n_steps
    write_replay_buffer(out, {key: np.concatenate(arrays) for key, arrays in data.items()}, ends,
                        {INSTRUCTION_KEY: np.array(instructions), "task": np.array(tasks)}, overwrite=overwrite)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--keys", nargs="+", required=True, help="observation keys to keep (action is always kept)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        summary = join_stores(args.stores, args.keys, args.out, args.overwrite)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"error: {err}") from None
    for task, row in summary.items():
        print(f"{task}: {row['episodes']} episodes, {row['steps']} steps from {', '.join(row['stores'])}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
