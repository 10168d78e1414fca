"""The bad-input suite: every case runs a `gpc` command in-process, as a user would type it, in an empty working
folder, and must end in exactly one stderr line that names the file and the field, a non-zero exit, no
traceback, and nothing written."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpc.app.cli import main as gpc_main

from .helpers import tiny_checkpoint


@dataclass
class Refusal:
    code: int
    line: str


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes, to prove a refused run left everything as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """run(*args) -> Refusal, after asserting the contract; the working folder is `tmp_path / 'work'`."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("GPC_DEBUG", raising=False)

    def run(*args: str, expect: str | tuple[str, ...]) -> Refusal:
        before = tree(tmp_path)
        code = gpc_main([str(a) for a in args])
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, f"exit {code}; stderr: {err}"
        assert "Traceback" not in err, err
        assert len(lines) == 1, f"want one line, got {lines}"
        for text in ([expect] if isinstance(expect, str) else expect):
            assert text in lines[0], f"{text!r} not in {lines[0]!r}"
        assert tree(tmp_path) == before, "a refused run changed files"
        assert not out.strip(), f"a refused run printed {out!r}"
        return Refusal(code, lines[0])

    run.work = work
    return run


@pytest.fixture(scope="session")
def parents(tmp_path_factory):
    """Small checkpoints (and copies to break) shared by every case; the cases never write into them."""
    root = tmp_path_factory.mktemp("parents")
    made = {
        "a": tiny_checkpoint(root / "a", "a"),
        "b": tiny_checkpoint(root / "b", "b", kind="flow"),
        "wide": tiny_checkpoint(root / "wide", "wide", action_dim=3),
        "skewed": tiny_checkpoint(root / "skewed", "skewed", scale=100.0),
    }
    nan = shutil.copytree(made["a"], root / "nan")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(nan / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("weight") and not k.startswith("normalizer"))
    tensors[key][0] = float("nan")
    save_file(tensors, str(nan / "model.safetensors"))
    made["nan"] = nan
    lost = shutil.copytree(made["b"], root / "lost_objective")
    import yaml

    document = yaml.safe_load((lost / "config.yaml").read_text())
    del document["policy"]["objective"]
    (lost / "config.yaml").write_text(yaml.safe_dump(document))
    made["lost_objective"] = lost
    return made


