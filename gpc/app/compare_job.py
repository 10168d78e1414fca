"""`gpc compare runs=[dir,...]`: paired comparison of finished runs on the seeds they share.

Runs that used the same seeds (gpc eval / gpc search with equal seed ranges) faced the same start states and
noise, so their difference is best judged on the seeds where their outcomes differ: an exact two-sided sign
test (McNemar's exact test) on those discordant pairs, next to each policy's own success interval.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from omegaconf import DictConfig

from gpc.app.config import ConfigError
from gpc.app.schema import check
from gpc.app.schemas import CompareConfig
from gpc.runtime.episodes import EpisodeStore, display_name
from gpc.runtime.stats import two_sided_sign_test, wilson_interval


def run_labels(runs, source: str) -> list[str]:
    """Each run by its folder's name, or by its whole path where two folders share a name (a/eval, b/eval)."""
    paths = [str(run) for run in runs]
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise ConfigError(f"{source}: runs[{i}]: {path} is named twice")
    names = [Path(path).name for path in paths]
    return names if len(set(names)) == len(names) else paths


def load_policies(runs, source: str) -> dict[str, dict[int, bool]]:
    """'run: candidate' -> {seed: success}, for every candidate stored in every run directory."""
    policies: dict[str, dict[int, bool]] = {}
    for i, (run, label) in enumerate(zip(runs, run_labels(runs, source))):
        path = Path(str(run)) / "episodes.sqlite"
        if not path.exists():
            raise ConfigError(f"{source}: runs[{i}]: no episodes.sqlite in {run}")
        with EpisodeStore(path, read_only=True, where=f"{source}: runs[{i}]") as store:
            setups = store.setups()
            stored = [(setup, e) for setup in setups for e in store.episodes(setup)]
        shown = {}  # short labels, unless two candidates of one setup would share one
        for setup in setups:
            keys = {e.candidate for s, e in stored if s == setup}
            short = {key: display_name(key) for key in keys}
            clash = len(set(short.values())) < len(short)
            shown.update({(setup, key): key if clash else short[key] for key in keys})
        for setup, e in stored:
            name = f"{label}: {shown[setup, e.candidate]}" + (f" [{setup}]" if len(setups) > 1 else "")
            policies.setdefault(name, {})[e.seed] = e.success
    return policies


def main(config: DictConfig, source: str = "compare config") -> None:
    runs = check(CompareConfig, config, source).runs
    runs = [runs] if isinstance(runs, str) else runs
    if not runs:
        raise ConfigError(f"{source}: runs: name at least one run directory, e.g. runs=[outputs/a,outputs/b]")
    policies = load_policies(runs, source)
    seeds = sorted(set.intersection(*(set(outcomes) for outcomes in policies.values())))
    if not seeds:
        raise ConfigError(f"{source}: runs: the runs share no seed; compare runs made on the same seeds")
    print(f"{len(seeds)} common seeds ({seeds[0]}..{seeds[-1]})")
    width = max(len(name) for name in policies)
    for name, outcomes in policies.items():
        k = sum(outcomes[s] for s in seeds)
        lo, hi = wilson_interval(k, len(seeds))
        print(f"  {name:{width}s}  {100 * k / len(seeds):5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    print("paired: seeds where only the first / only the second succeeded, exact two-sided sign test")
    for a, b in combinations(policies, 2):
        wins = sum(policies[a][s] and not policies[b][s] for s in seeds)
        losses = sum(policies[b][s] and not policies[a][s] for s in seeds)
        print(f"  {a} vs {b}: {wins} / {losses}, p = {two_sided_sign_test(wins, losses):.3f}")
