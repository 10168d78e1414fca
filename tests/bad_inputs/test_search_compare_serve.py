"""`gpc search`, `gpc compare` and `gpc serve`: each case is one mistake a user makes."""

from __future__ import annotations

import sqlite3

import pytest

from .helpers import compose_arg, write

pytest.importorskip("gym_pusht")


def small_search(parents, *args):
    return ["search", compose_arg(parents["a"], parents["b"]), "budget=4", "report_episodes=1", "env.max_steps=8",
            "env.n_envs=2", "progress=false", *args]


SEARCH = {
    "step_zero": (lambda p, t: small_search(p, "step=0"), ("configs/search.yaml: step: need a number > 0",)),
    "step_not_dividing_one": (lambda p, t: small_search(p, "step=0.3"), ("configs/search.yaml: step",)),
    "strategy_unknown": (lambda p, t: small_search(p, "strategy=bayes"), ("strategy: need one of",)),
    "budget_zero": (lambda p, t: small_search(p, "budget=0"), ("budget: need an integer >= 1",)),
    "budget_too_small_for_rejects": (lambda p, t: small_search(p, "step=0.5", "budget=2"), ("budget:",)),
    "delta_one": (lambda p, t: small_search(p, "delta=1"), ("delta: need a number > 0 and < 1.0",)),
    "lengthscale_negative": (lambda p, t: small_search(p, "strategy=gp", "lengthscale=-1"), ("lengthscale",)),
    "report_seeds_overlap_selection": (lambda p, t: small_search(p, "report_seed=100001"),
                                       ("report_seed: report seeds", "overlap the selection seeds")),
    "backend_unknown": (lambda p, t: small_search(p, "backend=slurm"), ("backend: need one of",)),
    "ray_workers_zero": (lambda p, t: small_search(p, "backend=ray", "ray_workers=0"), ("ray_workers",)),
    "one_parent": (lambda p, t: ["search", compose_arg(p["a"]), "compose.weights=[1.0]", "progress=false"],
                   ("compose.parents: a weight search needs at least 2 parents",)),
    "and_operator": (lambda p, t: small_search(p, "compose.operator=and"), ("compose.operator: 'and' has no weights",)),
    "schedule_space_with_or": (lambda p, t: small_search(p, "compose.operator=or", "space=schedule"),
                               ("space: the 'or' operator takes constant weights",)),
    "space_misspelt": (lambda p, t: small_search(p, "space=simplx"), ("space: need one of",)),
    "output_dir_is_a_file": (lambda p, t: small_search(p, f"output_dir={write(t / 'f', 'x')}"), ("output_dir",)),
    "output_dir_holds_an_empty_store": (lambda p, t: small_search(p, f"output_dir={_empty_store(t)}"),
                                        ("output_dir", "episodes.sqlite")),
}


def _empty_store(tmp):
    out = tmp / "run"
    out.mkdir()
    (out / "episodes.sqlite").write_bytes(b"")
    return out


def _run_with_store(tmp, name, make):
    out = tmp / name
    out.mkdir()
    make(out / "episodes.sqlite")
    return out


def _good_store(path, seeds=(1, 2)):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE episodes (setup TEXT NOT NULL, candidate TEXT NOT NULL, seed INTEGER NOT NULL, "
                   "success INTEGER NOT NULL, length INTEGER NOT NULL, maxima TEXT NOT NULL, wall_s REAL NOT NULL, "
                   "PRIMARY KEY (setup, candidate, seed))")
        db.executemany("INSERT INTO episodes VALUES ('s', 'w=1', ?, 1, 3, '{}', 0.1)", [(s,) for s in seeds])


COMPARE = {
    "runs_empty": (lambda p, t: ["compare", "runs=[]"], ("configs/compare.yaml: runs: name at least one",)),
    "runs_key_misspelt": (lambda p, t: ["compare", "run=[a]"], ("configs/compare.yaml: run: unknown setting",
                                                                "did you mean 'runs'")),
    "run_without_a_store": (lambda p, t: ["compare", f"runs=[{t}]"], ("runs[0]: no episodes.sqlite",)),
    "run_with_a_corrupt_store": (lambda p, t: ["compare", f"runs=[{_run_with_store(t, 'x', lambda f: f.write_bytes(b'junk' * 50))}]"],
                                 ("runs[0]", "episodes.sqlite")),
    "run_with_a_foreign_table": (lambda p, t: ["compare", f"runs=[{_run_with_store(t, 'y', lambda f: sqlite3.connect(f).execute('CREATE TABLE t (a)'))}]"],
                                 ("runs[0]", "episodes.sqlite")),
    "runs_sharing_no_seed": (lambda p, t: ["compare", "runs=[{},{}]".format(
        _run_with_store(t, "a", lambda f: _good_store(f, (1, 2))), _run_with_store(t, "b", lambda f: _good_store(f, (3,))))],
        ("runs: the runs share no seed",)),
    "run_named_twice": (lambda p, t: ["compare", "runs=[{0},{0}]".format(_run_with_store(t, "c", _good_store))],
                        ("runs[1]", "is named twice")),
}

SERVE = {
    "port_out_of_range": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "port=70000"],
                          ("configs/serve.yaml: port: need an integer >= 0 and <= 65535",)),
    "token_empty": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "token=''"], ("token: need a non-empty string",)),
    "message_limit_tiny": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "max_message_bytes=10"],
                           ("max_message_bytes: need >= 1024",)),
    "connections_zero": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "max_connections=0"],
                         ("max_connections: need an integer >= 1",)),
    "two_weight_vectors": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "weights=[[1,0],[0,1]]"],
                           ("weights: serve one weight vector",)),
    "setting_misspelt": (lambda p, t: ["serve", compose_arg(p["a"], p["b"]), "prot=8001"],
                         ("prot: unknown setting", "did you mean 'port'")),
    "composition_broken": (lambda p, t: ["serve", compose_arg(p["a"], t / "missing")], ("parents[1].path: not found",)),
}


@pytest.mark.parametrize("case", SEARCH)
def test_gpc_search_refuses(case, refused, parents, tmp_path):
    make, expect = SEARCH[case]
    refused(*make(parents, tmp_path), expect=expect)


@pytest.mark.parametrize("case", COMPARE)
def test_gpc_compare_refuses(case, refused, parents, tmp_path):
    make, expect = COMPARE[case]
    refused(*make(parents, tmp_path), expect=expect)


@pytest.mark.parametrize("case", SERVE)
def test_gpc_serve_refuses(case, refused, parents, tmp_path):
    make, expect = SERVE[case]
    refused(*make(parents, tmp_path), expect=expect)
