"""`gpc eval`: each parent alone and the composition (or a weight sweep) on the same seeds, then a table.

Rows run in groups that share a sampler: the composition's candidates under its working sampler, and (with
`alone_sampler: native`, the default) each parent alone under its own codebase's sampler, so an "alone" row is
that policy as its authors run it. `alone_sampler: working` runs the alone rows as weight 1 under the working
sampler instead, the ends of the composition's simplex.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gpc.app.config import ConfigError, check_inputs, chosen_weights, env_factory, load_composer
from gpc.app.schema import check
from gpc.app.schemas import EvalConfig
from gpc.app.setups import setup_hash
from gpc.core.composer import Composer
from gpc.core.operators import WeightSchedule
from gpc.runtime.episodes import EpisodeStore, check_store
from gpc.runtime.outputs import check_output_dir
from gpc.runtime.report import format_table, summarize, write_reports
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.runtime.search.spaces import simplex_points


@dataclass
class Group:
    """Rows that run under one composer (one sampler): their schedules, display names and store setup."""

    composer: Composer
    schedules: list[WeightSchedule]
    names: list[str]
    setup: str

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.schedules]


def build_candidates(settings: EvalConfig, composer, weights, source: str, alone: bool):
    """(schedules, display names, sweep x-values or None) the working sampler runs."""
    names = [p.spec.name for p in composer.parents]
    n = len(names)
    if settings.sweep:
        if n != 2:
            raise ConfigError(f"{source}: sweep: a line sweep needs exactly 2 parents, got {n}")
        try:
            points = simplex_points(2, settings.sweep)
        except ValueError:
            raise ConfigError(f"{source}: sweep: must be a step that divides 1 (0.1, 0.25, 0.5, ...), "
                              f"got {settings.sweep}") from None
        schedules = [WeightSchedule.constant(p) for p in points]
        return schedules, display_names(schedules, names), [p[0] for p in points]
    schedules = [WeightSchedule.constant(np.eye(n)[i]) for i in range(n)] if alone else []
    keys = {s.key for s in schedules}
    schedules += [w for w in weights if w.key not in keys]
    return schedules, display_names(schedules, names), None


def display_names(schedules: list[WeightSchedule], names: list[str]) -> list[str]:
    """Row names: `<parent> alone` or `composed <label>`; where two labels round to the same text, those rows
    show their exact keys instead."""
    def name(schedule: WeightSchedule, exact: bool) -> str:
        if len(schedule.knots) == 1 and max(schedule.weights[0]) == 1.0:
            return f"{names[int(np.argmax(schedule.weights[0]))]} alone"
        return "composed " + (schedule.key if exact else schedule.label)

    short = [name(s, exact=False) for s in schedules]
    return [name(s, exact=short.count(text) > 1) for s, text in zip(schedules, short)]


def native_alone_groups(config: DictConfig, composer: Composer) -> list[Group]:
    """One group per parent: that parent alone under its own sampler and action count, stored under the setup
    of a composition of that parent alone with `sampler: native`."""
    groups = []
    for i, parent in enumerate(composer.parents):
        alone = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
        alone.compose.sampler, alone.compose.n_action_steps = "native", None
        alone.compose.parents = [alone.compose.parents[i]]
        own = Composer([parent], parent.spec.sampler, device=composer.device)
        groups.append(Group(own, [WeightSchedule.constant([1.0])], [f"{parent.spec.name} alone"], setup_hash(alone)))
    return groups


def main(config: DictConfig, source: str = "eval config") -> None:
    settings = check(EvalConfig, config, source)
    out = check_output_dir(settings.output_dir, source)
    check_store(out / "episodes.sqlite", f"{source}: output_dir")
    weights = chosen_weights(settings.weights, config.compose, source)
    composer = load_composer(config.compose, f"{source}: compose")
    native = settings.alone and settings.alone_sampler == "native" and not settings.sweep
    schedules, names, sweep_x = build_candidates(settings, composer, weights, source,
                                                 alone=settings.alone and not native)
    seeds = list(range(settings.seed, settings.seed + settings.episodes))
    env = settings.env
    make_env = env_factory(config.env, source, need_frames=settings.videos > 0)
    check_inputs(composer.parents, make_env.observation_space, source)
    groups = native_alone_groups(config, composer) if native else []
    if schedules:
        groups.append(Group(composer, schedules, names, setup_hash(config)))
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows = []
    with EpisodeStore(out / "episodes.sqlite", where=f"{source}: output_dir") as store:
        for group in groups:
            how = RolloutSettings(env.n_envs, env.max_steps, tuple(env.track_max), settings.progress,
                                  out / "videos" / group.setup, tuple(seeds[:settings.videos]))
            episodes = rollout(group.composer, make_env, group.schedules, seeds, how, store, group.setup)
            rows += summarize(episodes, group.keys, group.names)
    sweep = list(zip(sweep_x, rows)) if sweep_x is not None else ()
    write_reports(rows, out, sweep, f"weight on {composer.parents[0].spec.name}")
    print(format_table(rows))
    print(f"{len(seeds)} seeds from {settings.seed}; {time.perf_counter() - began:.0f} s; results in {out}")
    if settings.videos:
        print(f"videos in {out / 'videos'} (a folder per sampler setup)")
