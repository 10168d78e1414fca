"""`gpc eval`: each parent alone and the composition (or a weight sweep) on the same seeds, then a table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gpc.config import ConfigError, env_factory, integer_setting, load_composer, weight_candidates
from gpc.episode_store import EpisodeStore, setup_hash
from gpc.evaluate import candidate_label, candidate_labels, rollout
from gpc.operators import WeightSchedule
from gpc.report import format_table, summarize, write_reports
from gpc.search import simplex_points


def build_candidates(config: DictConfig, composer, weights, source: str):
    """(schedules, display names, sweep x-values or None) for what this run evaluates."""
    names = [p.spec.name for p in composer.parents]
    n = len(names)
    if config.get("sweep"):
        if n != 2:
            raise ConfigError(f"{source}: sweep: a line sweep needs exactly 2 parents, got {n}")
        try:
            points = simplex_points(2, float(config.sweep))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: sweep: must be a step that divides 1 (0.1, 0.25, 0.5, ...), "
                              f"got {config.sweep}") from None
        schedules = [WeightSchedule.constant(p) for p in points]
        return schedules, [_name(s, names) for s in schedules], [p[0] for p in points]
    schedules = []
    if config.get("alone", True):
        schedules += [WeightSchedule.constant(np.eye(n)[i]) for i in range(n)]
    schedules += [w for w in weights if w not in schedules]
    return schedules, [_name(s, names) for s in schedules], None


def _name(schedule: WeightSchedule, names) -> str:
    if len(schedule.knots) == 1 and max(schedule.weights[0]) == 1.0:
        return f"{names[int(np.argmax(schedule.weights[0]))]} alone"
    return "composed " + candidate_label(schedule)


def main(config: DictConfig, source: str = "eval config") -> None:
    composer = load_composer(config.compose, f"{source}: compose")
    if config.get("weights") is not None:
        weights = weight_candidates(config.weights, len(composer.parents), source)
    else:
        weights = weight_candidates(config.compose.get("weights"), len(composer.parents), source, "compose.weights")
    schedules, names, sweep_x = build_candidates(config, composer, weights, source)
    try:
        labels = candidate_labels(schedules)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    first_seed = integer_setting(config, "seed", source, minimum=0)
    seeds = list(range(first_seed, first_seed + integer_setting(config, "episodes", source)))
    env = config.env
    n_envs, max_steps = integer_setting(config, "env.n_envs", source), integer_setting(config, "env.max_steps", source)
    videos = integer_setting(config, "videos", source, minimum=0) if config.get("videos") is not None else 0
    make_env = env_factory(env, source, need_frames=videos > 0)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    setup = setup_hash(config)
    video_dir = out / "videos" / setup
    with EpisodeStore(out / "episodes.sqlite") as store:
        episodes = rollout(composer, make_env, schedules, seeds, n_envs, max_steps,
                           list(env.get("track_max", [])), store, setup,
                           progress=bool(config.get("progress", True)), video_dir=video_dir,
                           video_pairs=[(label, seed) for label in labels for seed in seeds[:videos]])
    rows = summarize(episodes, labels, names)
    sweep = list(zip(sweep_x, rows)) if sweep_x is not None else ()
    write_reports(rows, out, sweep, f"weight on {composer.parents[0].spec.name}")
    print(format_table(rows))
    print(f"{len(seeds)} seeds from {config.seed}; {time.perf_counter() - began:.0f} s; results in {out}")
    if videos:
        print(f"videos in {video_dir}")
