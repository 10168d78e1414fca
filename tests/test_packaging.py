"""A wheel built from this repository is all of gpc: every package, its configs and the main job's parents, so an
installed, non-editable copy runs `gpc eval` from any folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_in_pyproject():
    """Python packages, every config group, and the shipped checkpoints the main job reads."""
    found = {"gpc.checkpoints.pusht.state_diffusion.policy", "gpc.checkpoints.pusht.keypoint_flow.policy"}
    found |= {f"gpc.configs.{group.name}" for group in (ROOT / "configs").iterdir() if group.is_dir()
              and any(group.glob("*.yaml"))}
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    listed = set(SETUPTOOLS["packages"])
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    assert set(SETUPTOOLS["package-data"]) <= listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This repository built into a wheel and installed (its own files only; dependencies from this environment)
    into a folder outside the repository."""
    pytest.importorskip("setuptools")
    wheels = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("gpc-*.whl")
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def _gpc(args, site: Path, cwd: Path):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "gpc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_installed_wheel_runs_gpc_from_any_folder(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import gpc, gpc.app.cli as c; print(gpc.__file__, c.CONFIG_DIR)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True,
                           text=True)
    module, configs = probe.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(configs).is_relative_to(installed), probe.stdout
    help_text = _gpc(["eval", "--help"], installed, tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "compose: " in help_text.stdout and "pusht" in help_text.stdout
    pytest.importorskip("gym_pusht")
    run = _gpc(["eval", "episodes=2", "env.n_envs=2", "progress=false", "output_dir=out"], installed, tmp_path)
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["name"] for row in rows] == ["state_diffusion alone", "keypoint_flow alone", "composed w=0.5,0.5"]
    assert all(row["episodes"] == 2 for row in rows)
    shutil.rmtree(installed / "gpc" / "checkpoints")  # the parents came from the package, not from the repository
    missing = _gpc(["eval", "episodes=1", "progress=false", "output_dir=out2"], installed, tmp_path)
    assert missing.returncode == 2 and "parents[0].path: not found" in missing.stderr
