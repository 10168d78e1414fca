"""The episode store: the setup hash that keys stored episodes (what decides an episode's outcome, and
nothing else), stores of the first schema, and files that are no store, which are refused and left alone."""

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gpc.app.setups import setup_hash
from gpc.runtime import episodes as episode_store
from gpc.runtime.episodes import Episode, EpisodeStore, StoreError, check_store


def config(parent, weights=(0.5, 0.5), n_envs=4, factory=None):
    env = {"max_steps": 300, "n_envs": n_envs, **({"factory": factory} if factory else {})}
    return OmegaConf.create({"compose": {"parents": [{"path": str(parent)}], "weights": list(weights)}, "env": env})


def test_a_parent_trained_again_into_the_same_folder_starts_a_new_setup(tmp_path):
    parent = tmp_path / "policy"
    parent.mkdir()
    (parent / "config.yaml").write_text("name: a\n")
    (parent / "model.safetensors").write_bytes(b"first weights")
    before = setup_hash(config(parent))
    assert setup_hash(config(parent, weights=(0.2, 0.8), n_envs=9)) == before  # neither decides an outcome
    os.utime(parent / "model.safetensors", (0, 0))
    assert setup_hash(config(parent)) == before  # a copy (new times, same bytes) keeps its episodes
    (parent / "model.safetensors").write_bytes(b"other weights")
    assert setup_hash(config(parent)) != before


def test_another_dataset_recorded_where_the_env_is_built_from_starts_a_new_setup(tmp_path):
    parent, dataset = tmp_path / "policy.safetensors", tmp_path / "demos.hdf5"
    parent.write_bytes(b"weights")
    dataset.write_bytes(b"env_args of one dataset")
    factory = {"_target_": "gpc.sims.robomimic.env.env_from_dataset", "path": str(dataset)}
    before = setup_hash(config(parent, factory=factory))
    assert setup_hash(config(parent, factory={**factory, "render_mode": "rgb_array"})) == before
    dataset.write_bytes(b"env_args of another")
    assert setup_hash(config(parent, factory=factory)) != before


SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "results" / "pusht_sweep_episodes.sqlite"


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_store_of_the_first_schema_reads_as_it_is_and_gains_the_reason_column_when_written(tmp_path):
    path = tmp_path / "episodes.sqlite"
    shutil.copy(SHIPPED, path)
    before = path.read_bytes()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:  # as shipped: no reason column
        assert "reason" not in [row[1] for row in db.execute("PRAGMA table_info(episodes)")]
    with EpisodeStore(path, read_only=True) as store:
        setups = store.setups()
        old = {setup: store.episodes(setup) for setup in setups}
    assert sum(map(len, old.values())) == 2200 and all(e.reason is None for es in old.values() for e in es)
    assert path.read_bytes() == before and listing(tmp_path) == ["episodes.sqlite"]
    check_store(path)  # a resume's check before any output: reads only
    assert path.read_bytes() == before and listing(tmp_path) == ["episodes.sqlite"]

    with EpisodeStore(path) as store:  # a resume: migrated in place, the stored rows kept as they were
        assert {setup: store.episodes(setup) for setup in setups} == old
        first = old[setups[0]][0]
        store.record(setups[0], Episode(first.candidate, first.seed, not first.success, 1, {}, 0.0, "success"))
        store.record("new", Episode("w=1,0", 1, False, 0, {}, 0.0, "non_finite_action"))
    with EpisodeStore(path, read_only=True) as store:
        assert store.episodes(setups[0])[0] == first  # a stored row is never changed
        assert store.episodes("new")[0].reason == "non_finite_action"
        assert {setup: store.episodes(setup) for setup in setups} == old


def corrupt_store(kind, path, tmp_path):
    """Put at `path` a file that is no usable episode store."""
    if kind == "not_sqlite":
        path.write_text("setup,candidate,seed\nabc,w=1,0\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        whole = tmp_path / "whole.sqlite"
        with EpisodeStore(whole) as store:
            for seed in range(400):
                store.record("s", Episode("w=1,0", seed, seed % 2 == 0, 10, {"coverage": 0.5}, 1.0, "success"))
        path.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
        whole.unlink()
    elif kind in ("no_table", "other_columns"):
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE runs (x)" if kind == "no_table" else "CREATE TABLE episodes (id, outcome)")
        db.close()
    elif kind == "folder":
        path.mkdir()
    else:
        raise ValueError(kind)


CORRUPT = {"not_sqlite": "is not an SQLite database", "empty": "is empty (0 bytes)",
           "truncated": "database disk image is malformed", "no_table": "has no episodes table",
           "other_columns": "its episodes table has columns (id, outcome)", "folder": "is a folder"}


def snapshot(path):
    return path.read_bytes() if path.is_file() else "folder"


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_file_that_is_no_episode_store_is_refused_naming_it_and_left_as_it_is(tmp_path, kind):
    path = tmp_path / "episodes.sqlite"
    corrupt_store(kind, path, tmp_path)
    before, files = snapshot(path), listing(tmp_path)
    for open_it in (lambda: EpisodeStore(path), lambda: EpisodeStore(path, read_only=True),
                    lambda: check_store(path, "configs/eval.yaml: output_dir")):
        with pytest.raises(StoreError) as refusal:
            open_it()
        message = str(refusal.value)
        assert f"{path}: " in message and CORRUPT[kind] in message and "\n" not in message
        assert snapshot(path) == before and listing(tmp_path) == files
    assert message.startswith(f"configs/eval.yaml: output_dir: {path}: ")


def test_a_store_another_process_holds_locked_is_refused_after_the_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(episode_store, "LOCK_WAIT_S", 0.05)
    path = tmp_path / "episodes.sqlite"
    shutil.copy(SHIPPED, path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as another process writing: readers wait too (a rollback journal)
    try:
        before = path.read_bytes()
        for open_it in (lambda: EpisodeStore(path), lambda: EpisodeStore(path, read_only=True),
                        lambda: check_store(path)):
            with pytest.raises(StoreError, match="is locked by another process"):
                open_it()
        assert path.read_bytes() == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    EpisodeStore(path, read_only=True).close()  # once released, it opens


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_store_is_refused_naming_it(tmp_path):
    path = tmp_path / "episodes.sqlite"
    shutil.copy(SHIPPED, path)
    path.chmod(0)
    try:
        with pytest.raises(StoreError, match="cannot be read"):
            EpisodeStore(path)
    finally:
        path.chmod(0o644)


def test_a_new_store_appears_whole(tmp_path, monkeypatch):
    """A kill while a store is created leaves no empty or tableless file that a rerun would refuse."""
    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(episode_store.os, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        EpisodeStore(tmp_path / "episodes.sqlite")
    assert listing(tmp_path) == []
    monkeypatch.undo()
    with EpisodeStore(tmp_path / "episodes.sqlite") as store:
        assert store.setups() == []
    assert listing(tmp_path) == ["episodes.sqlite"]
