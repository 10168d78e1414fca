"""`gpc search`: choose composition weights on selection seeds, report them on fresh seeds, write the cost."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gpc.app.config import ConfigError, env_factory, load_composer, resolve_path
from gpc.app.schema import check
from gpc.app.schemas import SearchConfig
from gpc.app.setups import setup_hash
from gpc.runtime.atomic import write_text_whole
from gpc.runtime.episodes import EpisodeStore, check_store
from gpc.runtime.outputs import check_output_dir
from gpc.runtime.report import Row, format_table, save_figure, summarize
from gpc.runtime.rollout import RolloutSettings
from gpc.runtime.search import SearchResult, run_search
from gpc.runtime.search.backends import LocalBackend, RayBackend
from gpc.runtime.search.spaces import Space, make_space
from gpc.runtime.search.strategies import GaussianProcessRejects, Grid, SuccessiveRejects


def make_strategy(settings: SearchConfig, space: Space):
    budget, first, n_candidates = settings.budget, settings.selection_seed, len(space.candidates)
    if settings.strategy == "grid":
        return Grid(n_candidates, budget // n_candidates, first)
    if settings.strategy == "adaptive":
        return SuccessiveRejects(n_candidates, budget, first, settings.delta)
    return GaussianProcessRejects(space.positions(), budget, first, settings.delta, settings.lengthscale)


def check_seeds(settings: SearchConfig, source: str) -> None:
    """Report seeds are fresh: their range may not meet the selection range."""
    selection = range(settings.selection_seed, settings.selection_seed + settings.budget)
    report = range(settings.report_seed, settings.report_seed + settings.report_episodes)
    if report and selection and report.start < selection.stop and selection.start < report.stop:
        raise ConfigError(f"{source}: report_seed: report seeds {report.start}..{report.stop - 1} overlap the "
                          f"selection seeds {selection.start}..{selection.stop - 1}")


def check_backend(settings: SearchConfig, source: str) -> None:
    if settings.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(f"{source}: backend: ray is not installed (pip install 'gpc[dist]')") from None


def make_backend(settings: SearchConfig, config: DictConfig, composer, make_env, store: EpisodeStore, setup: str):
    env = settings.env
    how = RolloutSettings(env.n_envs, env.max_steps, tuple(env.track_max), settings.progress)
    if settings.backend == "local":
        return LocalBackend(composer, make_env, how, store, setup)
    compose = OmegaConf.to_container(config.compose, resolve=True)
    for parent in compose["parents"]:  # workers may run elsewhere: give them absolute paths
        parent["path"] = str(resolve_path(str(parent["path"])).resolve())
    factory = OmegaConf.to_container(config.env.factory, resolve=True)
    return RayBackend(partial(_composer_from, compose), partial(_env_from, factory), how, store, setup,
                      settings.ray_address, settings.ray_workers)


def _composer_from(compose: dict):
    return load_composer(OmegaConf.create(compose), "compose")


def _env_from(factory: dict):
    from hydra.utils import instantiate

    return instantiate(OmegaConf.create(factory))


def main(config: DictConfig, source: str = "search config") -> None:
    settings = check(SearchConfig, config, source)
    out = check_output_dir(settings.output_dir, source)
    check_store(out / "episodes.sqlite", f"{source}: output_dir")
    composer = load_composer(config.compose, f"{source}: compose")
    if len(composer.parents) < 2:
        raise ConfigError(f"{source}: compose.parents: a weight search needs at least 2 parents, got 1")
    if composer.operator.name == "and":
        raise ConfigError(f"{source}: compose.operator: 'and' has no weights to search (non-zero weights only "
                          "choose the parents that take part); search convex or or")
    if composer.operator.superposed and settings.space == "schedule":
        raise ConfigError(f"{source}: space: the {composer.operator.name!r} operator takes constant weights; "
                          "search line or simplex")
    try:
        space = make_space(settings.space, len(composer.parents), settings.step)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    check_seeds(settings, source)
    try:
        strategy = make_strategy(settings, space)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    check_backend(settings, source)
    make_env = env_factory(config.env, source) if settings.backend == "local" else None  # Ray workers make their own
    out.mkdir(parents=True, exist_ok=True)
    setup = setup_hash(config)
    report_seeds = range(settings.report_seed, settings.report_seed + settings.report_episodes)
    track = settings.env.track_max
    with EpisodeStore(out / "episodes.sqlite", where=f"{source}: output_dir") as store:
        stored_before = store.done(setup)
        backend = make_backend(settings, config, composer, make_env, store, setup)
        try:
            result = run_search(space, strategy, backend, report_seeds, track[0] if track else None)
        finally:
            backend.close()
    report, rows = write_report(result, config, out, setup, stored_before)
    print(format_table(rows))
    chosen = report["chosen"]
    print(f"chosen {chosen['name']}: {_rate(chosen['selection'])} on its selection episodes (biased: chosen "
          f"on them); {_rate(chosen['held_out'])} on fresh seeds from {settings.report_seed}")
    cost = report["cost"]
    print(f"cost: {cost['selection_episodes']} selection + {cost['report_episodes']} report episodes "
          f"({cost['from_store']} from the store), {cost['wall_s']:.0f} s; report in {out}")


def _rate(part: dict | None) -> str:
    if not part:
        return "no episodes"
    lo, hi = part["success_ci"]
    return f"{100 * part['success_rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({part['episodes']} episodes)"


def write_report(result: SearchResult, config: DictConfig, out: Path, setup: str, stored_before: set
                 ) -> tuple[dict, list[Row]]:
    """search.json (every candidate's selection estimate, the chosen one on fresh seeds, the cost) and sweep.png."""
    keys, labels = [c.key for c in result.space.candidates], [c.label for c in result.space.candidates]
    rows = summarize(result.selection, keys, labels)
    best = keys[result.best]
    held_out = summarize(result.held_out, [best], [labels[result.best]])
    xs = result.space.xs or list(range(len(labels)))
    by_key = {r.candidate: r for r in rows}
    pairs = {(e.candidate, e.seed) for e in result.selection + result.held_out}
    report = {
        "parents": [str(parent.path) for parent in config.compose.parents], "setup": setup,
        "space": result.space.kind, "step": float(config.step), "strategy": str(config.strategy),
        "chosen": {"name": labels[result.best], "candidate": best,
                   "selection": {**_part(by_key[best]), "biased": "upward: chosen on these episodes"},
                   "held_out": _part(held_out[0]) if held_out else None},
        "candidates": [asdict(by_key[key]) for key in keys],
        "seeds": {"selection_from": int(config.selection_seed), "report_from": int(config.report_seed)},
        "cost": {"selection_episodes": len(result.selection), "report_episodes": len(result.held_out),
                 "from_store": len(pairs & stored_before), "wall_s": result.wall_s},
    }
    if result.space.xs is not None:
        for row, x in zip(report["candidates"], result.space.xs):
            row["x"] = float(x)
    write_text_whole(out / "search.json", json.dumps(report, indent=2))
    plot_search(rows, xs, by_key[best], held_out[0] if held_out else None, result.space.xs is not None,
                out / "sweep.png")
    return report, rows


def _part(row: Row) -> dict:
    return {"episodes": row.episodes, "success_rate": row.success_rate, "success_ci": list(row.success_ci),
            "non_finite": row.non_finite}


def plot_search(rows: list[Row], xs, best: Row, held_out: Row | None, on_line: bool, path: Path) -> None:
    """Every candidate's selection success with its 95% Wilson interval, and the chosen one on fresh seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(rs):
        rate = np.array([r.success_rate for r in rs]) * 100
        lo, hi = (np.array([r.success_ci[i] for r in rs]) * 100 for i in (0, 1))
        return rate, np.maximum(0, [rate - lo, hi - rate])  # Wilson bounds at 0% or 100% can be off by 1e-17

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows)), 4))
    rate, err = bars(rows)
    ax.errorbar(xs, rate, yerr=err, fmt="o-" if on_line else "o", capsize=3,
                label="selection episodes (95% Wilson CI; the chosen one's is biased upward)")
    for x, r, y in zip(xs, rows, rate):
        ax.annotate(str(r.episodes), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if held_out:
        x_best = xs[[r.candidate for r in rows].index(best.candidate)] + 0.01 * (max(xs) - min(xs) or 1)  # beside
        rate, err = bars([held_out])
        ax.errorbar([x_best], rate, yerr=err, fmt="s", color="tab:red", capsize=4,
                    label=f"chosen, {held_out.episodes} fresh seeds")
    if on_line:
        ax.set_xlabel("weight on the first parent")
    else:
        ax.set_xticks(xs, [r.name for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("success %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("weight search (numbers: episodes per candidate)")
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)
