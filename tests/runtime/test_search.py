"""Weight search: spaces, strategies on a bandit with known success rates, and `gpc search` end to end on
PushT with tiny random parents (resume after a kill, determinism, honest report seeds, the Ray backend)."""

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from gpc.app.cli import compose
from gpc.app.cli import main as gpc_main
from gpc.app.config import load_composer
from gpc.app.search_job import write_report
from gpc.app.setups import setup_hash
from gpc.core.operators import WeightSchedule
from gpc.runtime.episodes import Episode, EpisodeStore
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.runtime.search import SearchResult, run_search
from gpc.runtime.search.backends import ReplayBandit, SimulatedBandit
from gpc.runtime.search.spaces import make_space, simplex_points
from gpc.runtime.search.strategies import GaussianProcessRejects, Results, SuccessiveRejects
from gpc.runtime.stats import sign_test, two_sided_sign_test

pytest.importorskip("gym_pusht")
# The CLI in a subprocess: one torch thread, or it fights other jobs for this machine's two cores.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")

_spec = importlib.util.spec_from_file_location("_test_cli", Path(__file__).parents[1] / "app" / "test_cli.py")
_test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_cli)
PEAKED = [0.40, 0.45, 0.50, 0.55, 0.60, 0.70, 0.85, 0.70, 0.60, 0.50, 0.40]  # best w=0.6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread while these tests run (a shared 2-core machine), restored after: other modules compare
    against subprocesses that use torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return _test_cli.tiny_checkpoint(root / "a", "a"), _test_cli.tiny_checkpoint(root / "b", "b", kind="flow")


def search_args(parents, out, *extra):
    a, b = parents
    return [f"compose.parents=[{{path:{a}}},{{path:{b}}}]", "env.max_steps=8", "env.factory.obs_keys=[keypoint]",
            "step=0.5", "report_episodes=3", "progress=false", f"output_dir={out}", *extra]


def run_job(parents, out, *extra):
    assert gpc_main(["search", *search_args(parents, out, *extra)]) == 0
    return json.loads((out / "search.json").read_text())


def stored(path):
    """The stored rows, read without creating the file (an empty file there is no store: a run refuses it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT candidate, seed, success, length, maxima, wall_s FROM episodes").fetchall()
    finally:
        db.close()


def test_spaces_list_every_weight_vector_of_the_step():
    assert simplex_points(3, 0.5) == [(0, 0, 1), (0, 0.5, 0.5), (0, 1, 0), (0.5, 0, 0.5), (0.5, 0.5, 0), (1, 0, 0)]
    line = make_space("line", 2, 0.25)
    assert line.xs == [0, 0.25, 0.5, 0.75, 1] and [c.weights[0] for c in line.candidates][1] == (0.25, 0.75)
    schedules = make_space("schedule", 2, 0.5)
    assert len(schedules.candidates) == 9 and sum(len(c.knots) == 1 for c in schedules.candidates) == 3
    for kind, n, step, message in [("line", 3, 0.5, "space: a line needs exactly 2 parents"),
                                   ("simplex", 3, 0.3, "step: must divide 1")]:
        with pytest.raises(ValueError, match=message):
            make_space(kind, n, step)


def test_sign_test_is_the_exact_binomial_tail():
    assert sign_test(5, 0) == 1 / 32 and sign_test(0, 0) == 1.0 and sign_test(3, 3) == 42 / 64
    assert two_sided_sign_test(0, 5) == 2 / 32 and two_sided_sign_test(3, 3) == 1.0


def test_successive_rejects_runs_survivors_on_common_seeds_within_budget_and_finds_the_peak():
    space = make_space("line", 2, 0.1)
    hits = 0
    for rep in range(20):
        bandit = SimulatedBandit(space, PEAKED, rho=0.5, seed=rep)
        strategy = SuccessiveRejects(len(space.candidates), 220, first_seed=100_000)
        result = run_search(space, strategy, bandit, report_seeds=[])
        seeds = {}
        for e in result.selection:
            seeds.setdefault(e.candidate, []).append(e.seed)
        # every candidate ran on a prefix of the same seed sequence: comparisons are paired
        longest = max(seeds.values(), key=len)
        assert all(s == longest[:len(s)] for s in seeds.values())
        assert len(result.selection) <= 220 and longest[0] == 100_000
        hits += abs(PEAKED[result.best] - max(PEAKED)) <= 0.03
    # 19 of these 20; a grid spending the same 220 episodes (20 each) finds it in 16 (over 500 repetitions:
    # successive rejects 95%, grid 83%)
    assert hits >= 18, hits


@pytest.mark.parametrize("n_candidates", [2, 3, 5, 11, 21])
def test_successive_rejects_never_exceeds_its_budget(n_candidates):
    space = make_space("simplex", 2, 1 / (n_candidates - 1))
    for budget in (2 * n_candidates, 3 * n_candidates + 1, 100, 550, 2200):
        if budget < 2 * n_candidates:
            continue
        bandit = SimulatedBandit(space, np.linspace(0.3, 0.5, n_candidates), rho=0.5, seed=budget)
        result = run_search(space, SuccessiveRejects(n_candidates, budget, 0, delta=1e-12), bandit, [])
        assert budget - n_candidates <= len(result.selection) <= budget, (budget, len(result.selection))


def test_successive_rejects_stops_early_when_one_candidate_is_clearly_best():
    space = make_space("line", 2, 0.25)
    bandit = SimulatedBandit(space, [0.0, 0.05, 0.1, 0.05, 1.0])
    result = run_search(space, SuccessiveRejects(5, 500, 0), bandit, report_seeds=[])
    # only the first phase ran: 5 candidates on ceil(495 / (logbar(5) x 5)) = 56 seeds
    assert result.best == 4 and len(result.selection) == 5 * 56


def test_gp_rejects_drops_nothing_extra_without_evidence():
    """Every weight failed on every seed: nothing tells them apart, so only successive rejects' one drop."""
    space = make_space("simplex", 3, 0.1)
    strategy = GaussianProcessRejects(space.positions(), 3300, 0)
    strategy.seeds = tuple(range(9))
    results = Results(len(space.candidates))
    for k in range(len(space.candidates)):
        for seed in strategy.seeds:
            results.add(k, seed, False)
    ranked = results.rank(list(range(len(space.candidates))), strategy.seeds)
    assert strategy._keep(results, ranked) == ranked[:-1]


def test_the_early_stop_level_covers_every_rival_and_every_time_the_test_runs():
    """Three candidates: two rivals, and the test can run twice, so the level is 0.05 / 4 = 0.0125. A 6-0 split
    (p = 1/64 = 0.016) would pass 0.05 / 2 but not this."""
    strategy = SuccessiveRejects(3, 60, 0)
    strategy.seeds = tuple(range(10))
    results = Results(3)
    for seed in strategy.seeds:
        results.add(0, seed, seed < 8)
        for rival in (1, 2):
            results.add(rival, seed, seed < 2)
    assert not strategy._leader_clearly_best(results, [0, 1, 2])
    results.add(0, 8, True)  # 8-0 (p = 1/256) passes
    results.add(0, 9, True)
    assert strategy._leader_clearly_best(results, [0, 1, 2])


def test_gp_best_probabilities_match_the_closed_form_for_independent_candidates():
    # Two candidates much farther apart than the lengthscale: independent Gaussian posteriors, prior N(mean,
    # amplitude^2) around the pooled rate, observed rate with binomial noise at the pooled rate.
    strategy = GaussianProcessRejects(np.array([[0.0], [10.0]]), 400, 0, lengthscale=0.15, amplitude=0.15,
                                      draws=200_000)
    results = Results(2)
    wins, n = (30, 24), 50
    for k in range(2):
        for seed in range(n):
            results.add(k, seed, seed < wins[k])
    pooled = sum(wins) / (2 * n)
    noise, prior = pooled * (1 - pooled) / n, 0.15 ** 2
    means = [pooled + prior / (prior + noise) * (w / n - pooled) for w in wins]
    var = prior * noise / (prior + noise)
    expected = NormalDist().cdf((means[0] - means[1]) / np.sqrt(2 * var))
    assert strategy.best_probabilities(results, [0, 1]) == pytest.approx([expected, 1 - expected], abs=0.005)


def test_gp_rejects_prunes_a_bad_region_at_once_and_stays_paired_reproducible_and_within_budget():
    space = make_space("simplex", 3, 0.1)
    distance = ((space.positions() - np.array([0.5, 0.3, 0.2])) ** 2).sum(1)
    surface = 0.3 + 0.4 * np.exp(-distance / (2 * 0.25 ** 2))
    peak = space.candidates[int(np.argmax(surface))].key
    runs = []
    for _ in range(2):
        bandit = RecordingBackend(SimulatedBandit(space, surface, rho=0.5, seed=3))
        result = run_search(space, GaussianProcessRejects(space.positions(), 1650, 100_000), bandit, [])
        runs.append([(e.candidate, e.seed, e.success) for e in result.selection])
    assert runs[0] == runs[1] and len(runs[0]) <= 1650
    # after the first phase on all 66, far more than successive rejects' one candidate went, the peak stayed
    calls = bandit.calls
    assert len(calls[0][0]) == 66 and len(calls[1][0]) < 40 and peak in calls[1][0], [len(c) for c, _ in calls]
    # paired: each batch runs survivors of the one before on the seeds that continue its own
    assert all(set(now) <= set(before) and seeds[0] == before_seeds[-1] + 1
               for (before, before_seeds), (now, seeds) in zip(calls, calls[1:]))


class RecordingBackend:
    """A backend that remembers what each batch asked for: (candidate keys, seeds)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def evaluate(self, candidates, seeds):
        self.calls.append(([c.key for c in candidates], list(seeds)))
        return self.inner.evaluate(candidates, seeds)


def test_replay_bandit_plays_stored_paired_rows_and_knows_their_rates():
    space = make_space("line", 2, 0.5)
    labels = [c.label for c in space.candidates]  # as stores written before exact keys named them
    stored = [Episode(label, seed, success=(seed + k) % 2 == 0, length=10, maxima={"coverage": seed / 10})
              for seed in range(4) for k, label in enumerate(labels)]
    stored.append(Episode(labels[0], 99, True, 10))  # seed 99 did not run every candidate: not in the pool
    replay = ReplayBandit(space, stored, seed=3)
    assert len(replay.pool) == 4 and replay.rates == [0.5, 0.5, 0.5]
    episodes = replay.evaluate(space.candidates, range(50))
    rows = {}
    for e in episodes:
        rows.setdefault(e.seed, []).append((e.success, e.maxima["coverage"]))
    pool_rows = {tuple(((seed + k) % 2 == 0, seed / 10) for k in range(3)) for seed in range(4)}
    assert all(tuple(row) in pool_rows for row in rows.values())  # each search seed replays one whole pool row
    assert len({tuple(row) for row in rows.values()}) == 4  # drawn with replacement from all of them
    assert episodes == replay.evaluate(space.candidates, range(50))  # the same draws every time


def test_grid_strategy_reproduces_a_sweep_run_by_hand(parents, tmp_path):
    report = run_job(parents, tmp_path / "out", "strategy=grid", "budget=9", "env.n_envs=5")
    config = compose("search", search_args(parents, tmp_path / "out", "env.n_envs=5"))
    candidates = [WeightSchedule.constant([w, 1 - w]) for w in (0.0, 0.5, 1.0)]
    by_hand = rollout(load_composer(config.compose, "compose"), lambda: instantiate(config.env.factory), candidates,
                      [100_000, 100_001, 100_002], RolloutSettings(5, 8, tuple(config.env.track_max), False))
    with EpisodeStore(tmp_path / "out" / "episodes.sqlite") as store:
        searched = [e for e in store.episodes(setup_hash(config)) if e.seed < 200_000]
    assert sorted(searched, key=lambda e: (e.candidate, e.seed)) == sorted(by_hand, key=lambda e: (e.candidate, e.seed))
    for row, candidate in zip(report["candidates"], candidates):
        mine = [e for e in by_hand if e.candidate == candidate.key]
        assert row["x"] == candidate.weights[0][0] and row["episodes"] == 3
        assert row["success_rate"] == np.mean([e.success for e in mine])
        assert row["maxima"]["coverage"][0] == np.mean([e.maxima["coverage"] for e in mine])
    best = max(report["candidates"], key=lambda r: (r["success_rate"], r["maxima"]["coverage"][0]))
    assert report["chosen"]["candidate"] == best["candidate"]
    assert report["cost"]["selection_episodes"] == 9 and report["cost"]["report_episodes"] == 3
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 0


@pytest.mark.parametrize("strategy", ["adaptive", "gp"])
def test_two_runs_with_the_same_seeds_give_the_same_report_and_report_on_fresh_seeds(parents, tmp_path, strategy):
    reports = [run_job(parents, tmp_path / name, "budget=6", "env.n_envs=6", f"strategy={strategy}")
               for name in ("one", "two")]
    for report in reports:
        assert report["cost"].pop("wall_s") > 0
    assert reports[0] == reports[1]
    rows = stored(tmp_path / "one" / "episodes.sqlite")
    chosen = reports[0]["chosen"]["candidate"]
    report_rows = [r for r in rows if r[1] >= 200_000]
    assert len(report_rows) == 3 and {r[0] for r in report_rows} == {chosen}
    assert all(100_000 <= r[1] < 100_006 for r in rows if r not in report_rows)


@pytest.mark.parametrize("override, field", [
    ("report_seed=100003", "report_seed: report seeds 100003..100005 overlap the selection seeds"),
    ("strategy=bayes", "strategy: need one of 'adaptive', 'gp', 'grid', got 'bayes'"),
    ("strategy=gp lengthscale=0", "lengthscale: need a number > 0, got 0"),
    ("budget=5", "budget: successive rejects over 3 candidates needs at least 6"),
    ("space=simplex step=0.3", "step: must divide 1"),
    ("backend=slurm", "backend: need one of 'local', 'ray', got 'slurm'"),
    ("compose.operator=and", "compose.operator: 'and' has no weights to search"),
    ("compose.operator=or space=schedule", "space: the 'or' operator takes constant weights"),
    ("env.n_envs=abc", "env.n_envs: need an integer >= 1, got 'abc'"),
    ("report_episodes=-1", "report_episodes: need an integer >= 0, got -1"),
    ("+env.factory.colour=red", "env.factory: make_env() got an unexpected keyword argument 'colour'"),
])
def test_bad_search_input_exits_2_with_one_line_naming_the_field(parents, tmp_path, capsys, override, field):
    assert gpc_main(["search", *search_args(parents, tmp_path / "out", "budget=6", *override.split())]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "configs/search.yaml" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_search_over_one_parent_is_refused_before_any_output(parents, tmp_path, capsys):
    args = search_args(parents, tmp_path / "out", f"compose.parents=[{{path:{parents[0]}}}]", "compose.weights=[1.0]")
    assert gpc_main(["search", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "compose.parents: a weight search needs at least 2 parents" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_crash_while_writing_search_json_leaves_the_previous_report_whole(parents, tmp_path, monkeypatch):
    space = make_space("line", 2, 0.5)
    labels = [c.key for c in space.candidates]
    selection = [Episode(label, seed, seed % 2 == 0, 8, {"coverage": 0.5}) for label in labels for seed in range(2)]
    result = SearchResult(space, 1, selection, [Episode(labels[1], 200_000, True, 8, {"coverage": 0.5})], 1.0)
    config = compose("search", search_args(parents, tmp_path))
    write_report(result, config, tmp_path, setup_hash(config), set())
    before = (tmp_path / "search.json").read_text()
    write_text = Path.write_text

    def crash_halfway(path, text, *args, **kwargs):
        write_text(path, text[:len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_report(result, config, tmp_path, setup_hash(config), set())
    assert (tmp_path / "search.json").read_text() == before


def test_killed_search_resumes_without_losing_a_finished_episode(parents, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "gpc.app.cli", "search", *search_args(parents, out, "strategy=grid", "budget=18",
                                                                    "env.n_envs=1", "env.max_steps=16")]
    process = subprocess.Popen(args, cwd=tmp_path, env=ONE_THREAD, stderr=subprocess.PIPE, text=True)
    seen = []
    while len(seen) < 4:
        assert process.poll() is None, process.stderr.read()
        try:
            seen = stored(out / "episodes.sqlite")
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    after_kill = stored(out / "episodes.sqlite")
    assert set(seen) <= set(after_kill) and len(after_kill) < 18  # killed mid-search, nothing recorded is lost
    rerun = subprocess.run(args, cwd=tmp_path, env=ONE_THREAD, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    final = stored(out / "episodes.sqlite")
    assert set(after_kill) <= set(final)  # unchanged rows, wall times included
    pairs = [(candidate, seed) for candidate, seed, *_ in final]
    expected = {(f"w={w}", s) for w in ("0.0,1.0", "0.5,0.5", "1.0,0.0") for s in range(100_000, 100_006)}
    assert len(pairs) == len(set(pairs)) == 18 + 3 and expected <= set(pairs)
    assert f"({len(after_kill)} from the store)" in rerun.stdout


def test_episode_store_keeps_the_first_record_of_an_episode(tmp_path):
    with EpisodeStore(tmp_path / "e.sqlite") as store:
        first = Episode("w=1,0", 7, True, 12, {"coverage": 0.97}, 1.5)
        store.record("setup", first)
        store.record("setup", Episode("w=1,0", 7, False, 300, {"coverage": 0.1}, 9.0))
        store.record("other", Episode("w=1,0", 8, False, 300, {}, 9.0))
        assert store.episodes("setup") == [first] and store.episodes("setup")[0].wall_s == 1.5
        assert store.done("setup") == {("w=1,0", 7)} and store.episodes("other", [("w=1,0", 7)]) == []



def test_a_read_only_store_reads_every_setup_and_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "e.sqlite"
    with EpisodeStore(path) as store:
        store.record("b", Episode("w=1,0", 7, True, 12))
        store.record("a", Episode("w=0,1", 8, False, 300))
    before = path.read_bytes()
    with EpisodeStore(path, read_only=True) as store:
        assert store.setups() == ["a", "b"] and store.episodes("b") == [Episode("w=1,0", 7, True, 12)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.record("a", Episode("w=0,1", 9, True, 5))
    assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="no episode store"):
        EpisodeStore(tmp_path / "missing.sqlite", read_only=True)

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_backend_gives_the_same_results_as_the_local_one(parents, tmp_path, local_ray):
    local = run_job(parents, tmp_path / "local", "budget=6", "env.n_envs=6")
    distributed = run_job(parents, tmp_path / "ray", "budget=6", "env.n_envs=6", "backend=ray")
    for report in (local, distributed):
        report["cost"].pop("wall_s")
    assert local == distributed
    without_wall = [sorted(r[:5] for r in stored(tmp_path / name / "episodes.sqlite")) for name in ("local", "ray")]
    assert without_wall[0] == without_wall[1] and len(without_wall[0]) == 5 + 3
