"""`gpc eval`, `search` and `compare` refuse an output folder that cannot be one, and an episodes.sqlite that
is no episode store, with one line naming the field and the path, before any output; the file is left as
it was. A store of the first schema (docs/results/*_episodes.sqlite) still resumes and compares."""

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gpc.app.cli import main as gpc_main
from gpc.app.schema import ConfigError
from gpc.runtime.outputs import check_output_dir

pytest.importorskip("gym_pusht")
_spec = importlib.util.spec_from_file_location("_test_cli", Path(__file__).with_name("test_cli.py"))
_test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_cli)
_spec = importlib.util.spec_from_file_location("_test_store", Path(__file__).parents[1] / "runtime" / "test_episodes.py")
_test_store = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_store)
SHIPPED, CORRUPT, corrupt_store = _test_store.SHIPPED, _test_store.CORRUPT, _test_store.corrupt_store
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")  # a shared 2-core machine


def nowhere_args(tmp_path, out):
    """Parents that do not exist: a check that passes only if it runs before they are loaded."""
    return [f"compose.parents=[{{path:{tmp_path / 'no_a'}}},{{path:{tmp_path / 'no_b'}}}]", "progress=false",
            f"output_dir={out}"]


def tree(root):
    """Every path under `root` with its bytes (None for a folder or a link)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(root.rglob("*"))}


def unwritable_folder(tmp_path):
    folder = tmp_path / "locked_up"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    if os.path.isdir("/proc/self") and not os.access("/proc/self", os.W_OK):  # root writes anywhere, but here
        return Path("/proc/self")
    pytest.skip("this user can write to every folder")


def bad_output_dir(kind, tmp_path):
    """(output_dir, what the refusal says) for a folder that cannot be the output folder."""
    if kind == "a_file":
        (tmp_path / "results.txt").write_text("not a folder")
        return tmp_path / "results.txt", f"output_dir: {tmp_path / 'results.txt'} is a file, not a folder"
    if kind == "below_a_file":
        (tmp_path / "results.txt").write_text("not a folder")
        out = tmp_path / "results.txt" / "run" / "1"
        return out, f"output_dir: {out} lies below {tmp_path / 'results.txt'}, which is a file"
    if kind == "below_an_unwritable_folder":
        folder = unwritable_folder(tmp_path)
        return folder / "run", f"output_dir: {folder / 'run'} cannot be created: {folder} is a folder this user cannot"
    if kind == "a_broken_link":
        (tmp_path / "gone").symlink_to(tmp_path / "nothing_here")
        return tmp_path / "gone" / "run", f"output_dir: {tmp_path / 'gone' / 'run'} lies below {tmp_path / 'gone'}, " \
                                          "which is a broken link"
    raise ValueError(kind)


BAD_OUTPUT_DIRS = ["a_file", "below_a_file", "below_an_unwritable_folder", "a_broken_link"]


@pytest.mark.parametrize("kind", BAD_OUTPUT_DIRS)
def test_gpc_eval_refuses_an_output_dir_that_cannot_be_a_folder_with_one_line_and_creates_nothing(tmp_path, kind):
    out, expected = bad_output_dir(kind, tmp_path)
    before = tree(tmp_path)
    result = subprocess.run([sys.executable, "-m", "gpc.app.cli", "eval", *nowhere_args(tmp_path, out)], cwd=tmp_path,
                            capture_output=True, text=True, env=ONE_THREAD)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpc eval: error: configs/eval.yaml: ") and expected in lines[0], \
        result.stderr
    assert result.stdout == "" and tree(tmp_path) == before


@pytest.mark.parametrize("kind", BAD_OUTPUT_DIRS)
def test_gpc_search_refuses_an_output_dir_that_cannot_be_a_folder_before_any_output(tmp_path, capsys, kind):
    out, expected = bad_output_dir(kind, tmp_path)
    before = tree(tmp_path)
    assert gpc_main(["search", *nowhere_args(tmp_path, out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "configs/search.yaml: " in lines[0] and expected in lines[0], lines
    assert tree(tmp_path) == before


def test_the_output_dir_check_takes_a_new_folder_below_folders_yet_to_be_made(tmp_path):
    assert check_output_dir(str(tmp_path / "a" / "b"), "eval config") == tmp_path / "a" / "b"
    assert check_output_dir(tmp_path, "eval config") == tmp_path
    for bad in (None, "", True):
        with pytest.raises(ConfigError, match="eval config: output_dir: need a folder path"):
            check_output_dir(bad, "eval config")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "search"])
@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_resume_over_a_file_that_is_no_episode_store_is_refused_and_leaves_it_as_it_was(tmp_path, capsys, command,
                                                                                           kind):
    out = tmp_path / "out"
    out.mkdir()
    corrupt_store(kind, out / "episodes.sqlite", out)
    before = tree(tmp_path)
    assert gpc_main([command, *nowhere_args(tmp_path, out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"configs/{command}.yaml: output_dir: {out / 'episodes.sqlite'}: " in lines[0] and CORRUPT[kind] in lines[0]
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_gpc_compare_refuses_a_file_that_is_no_episode_store_and_leaves_it_as_it_was(tmp_path, capsys, kind):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    shutil.copy(SHIPPED, good / "episodes.sqlite")
    corrupt_store(kind, bad / "episodes.sqlite", bad)
    before = tree(tmp_path)
    assert gpc_main(["compare", f"runs=[{good},{bad}]"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"configs/compare.yaml: runs[1]: {bad / 'episodes.sqlite'}: " in lines[0] and CORRUPT[kind] in lines[0]
    assert tree(tmp_path) == before


def test_gpc_compare_refuses_a_locked_store(tmp_path, capsys, monkeypatch):
    from gpc.runtime import episodes as episode_store

    monkeypatch.setattr(episode_store, "LOCK_WAIT_S", 0.05)
    shutil.copy(SHIPPED, tmp_path / "episodes.sqlite")
    holder = sqlite3.connect(tmp_path / "episodes.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert gpc_main(["compare", f"runs=[{tmp_path}]"]) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"runs[0]: {tmp_path / 'episodes.sqlite'}: is locked by another process" in lines[0]


def test_a_shipped_store_of_the_first_schema_compares_unchanged_and_resumes_migrated(tmp_path, capsys):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(SHIPPED, shipped / "episodes.sqlite")
    before = tree(shipped)
    assert gpc_main(["compare", f"runs=[{shipped}]"]) == 0
    assert "200 common seeds" in capsys.readouterr().out and tree(shipped) == before

    a, b = _test_cli.tiny_checkpoint(tmp_path / "a", "a"), _test_cli.tiny_checkpoint(tmp_path / "b", "b")
    with sqlite3.connect(SHIPPED) as db:
        old_rows = db.execute("SELECT * FROM episodes ORDER BY rowid").fetchall()
    db.close()
    assert gpc_main(_test_cli.eval_args(a, b, shipped, "episodes=1", "alone=false")) == 0
    with sqlite3.connect(shipped / "episodes.sqlite") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(episodes)")]
        rows = db.execute("SELECT * FROM episodes ORDER BY rowid").fetchall()
    db.close()
    assert columns[-1] == "reason" and len(rows) == len(old_rows) + 1
    assert [row[:-1] for row in rows[:-1]] == old_rows and all(row[-1] is None for row in rows[:-1])
    assert rows[-1][-1] in ("success", "time_limit", "terminated", "truncated")
    assert json.loads((shipped / "summary.json").read_text())[0]["non_finite"] == 0
