"""`gpc eval` end to end on PushT, and bad input: one line naming the problem, non-zero exit, no output."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpc.app.cli import main as gpc_main
from gpc.core.normalizer import Normalizer
from gpc.policies.checkpoint import save_policy
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy

pytest.importorskip("gym_pusht")
ROOT = Path(__file__).resolve().parents[2]


def tiny_checkpoint(path, name, action_dim=2, kind="diffusion"):
    config = load_policy_config({
        "name": name, "obs": [{"key": "keypoint", "type": "low_dim", "shape": [20]}], "action_dim": action_dim,
        "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4,
        "denoiser": {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16},
        "objective": {"kind": kind, "prediction_type": "epsilon" if kind == "diffusion" else "velocity"}})
    action_range = np.array([[0.0] * action_dim, [512.0] * action_dim], np.float32)
    normalizers = {"action": Normalizer.fit(action_range), "keypoint": Normalizer.fit(np.array([[0.0] * 20, [512.0] * 20]))}
    return save_policy(Policy(config, normalizers), path)


def stored_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM episodes ORDER BY rowid").fetchall()


def gpc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gpc.app.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return (tiny_checkpoint(root / "a", "a"), tiny_checkpoint(root / "b", "b", kind="flow"),
            tiny_checkpoint(root / "wide", "wide", action_dim=3))


def eval_args(a, b, out, *extra):
    return ["eval", f"compose.parents=[{{path:{a}}},{{path:{b}}}]", "episodes=2", "env.max_steps=16",
            "env.n_envs=3", "progress=false", f"output_dir={out}", *extra]


def test_gpc_eval_runs_parents_alone_and_composed_and_writes_table_json_csv(parents, tmp_path):
    a, b, _ = parents
    result = gpc(*eval_args(a, b, tmp_path / "out", "weights=[0.3,0.7]"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("a alone", "b alone", "composed w=0.3,0.7"):
        assert name in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["episodes"] for row in summary] == [2, 2, 2]
    assert (tmp_path / "out" / "summary.csv").exists()
    # rerunning resumes: every episode is already recorded, nothing is added or changed
    before = stored_rows(tmp_path / "out" / "episodes.sqlite")
    assert len(before) == 6
    assert gpc(*eval_args(a, b, tmp_path / "out", "weights=[0.3,0.7]"), cwd=tmp_path).returncode == 0
    assert stored_rows(tmp_path / "out" / "episodes.sqlite") == before
    # videos asked for later film the first seed of every row, and still add nothing to the store
    assert gpc(*eval_args(a, b, tmp_path / "out", "weights=[0.3,0.7]", "videos=1"), cwd=tmp_path).returncode == 0
    assert stored_rows(tmp_path / "out" / "episodes.sqlite") == before
    # videos are kept per setup, as episodes are: each parent alone under its own sampler, and the composition
    setups = list((tmp_path / "out" / "videos").iterdir())
    assert len(setups) == 3
    assert sorted(p.name.split("_seed")[0] for s in setups for p in s.glob("*.mp4")) == ["w=0.3,0.7", "w=1", "w=1"]
    assert all("_seed100000_" in p.name for s in setups for p in s.glob("*.mp4"))


def test_gpc_eval_sweep_writes_a_sweep_plot(parents, tmp_path):
    a, b, _ = parents
    result = gpc(*eval_args(a, b, tmp_path / "out", "sweep=0.5", "episodes=1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 0


def test_gpc_eval_with_or_and_gpc_compare_pair_runs_on_common_seeds(parents, tmp_path):
    a, b, _ = parents
    for operator in ("convex", "or"):
        result = gpc(*eval_args(a, b, tmp_path / operator, "alone=false", f"compose.operator={operator}"),
                     cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = gpc("compare", f"runs=[{tmp_path / 'convex'},{tmp_path / 'or'}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 common seeds" in result.stdout and "convex: w=0.5,0.5 vs or: w=0.5,0.5" in result.stdout
    result = gpc("compare", f"runs=[{tmp_path / 'nowhere'}]", cwd=tmp_path)
    assert result.returncode == 2 and "runs[0]: no episodes.sqlite" in result.stderr


@pytest.mark.parametrize("case, expected", [
    ("missing", "parents[1].path: not found"),
    ("wide", "action_dim 3"),
    ("weights", "weights: 3 weights for 2 parents"),
    ("operator", "compose: operator.name: unknown operator 'xor'"),
    ("fast", "compose: fast.precision: must be one of"),
])
def test_bad_composition_input_exits_non_zero_with_one_line_and_no_output(parents, tmp_path, case, expected):
    a, b, wide = parents
    extra = []
    if case == "missing":
        b = tmp_path / "nowhere"
    elif case == "wide":
        b = wide
    elif case == "operator":
        extra = ["compose.operator=xor"]
    elif case == "fast":
        extra = ["compose.fast.precision=int8"]
    else:
        extra = ["weights=[0.2,0.3,0.5]"]
    result = gpc(*eval_args(a, b, tmp_path / "out", *extra), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "configs/eval.yaml" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, field", [
    ("episodes=abc", "episodes: need an integer >= 1, got 'abc'"),
    ("seed=-1", "seed: need an integer >= 0, got -1"),
    ("env.n_envs=0", "env.n_envs: need an integer >= 1, got 0"),
    ("env.max_steps=2.5", "env.max_steps: need an integer >= 1, got 2.5"),
    ("sweep=0.3", "sweep: must be a step that divides 1"),
    ("sweep=-0.1", "sweep: need a number > 0 and <= 1.0, got -0.1"),
    ("compose.sampler={name:ddpm,num_inference_steps:200}", "compose: sampler.num_inference_steps: 200 exceeds"),
    ("compose.sampler={name:ddpm,timestep_spacing:middle}", "compose: sampler.timestep_spacing: must be one of"),
    ("compose.sampler={name:ddim,eta:-0.5}", "compose: sampler.eta: must be >= 0"),
    ("compose.n_action_steps=abc", "compose: n_action_steps: need an integer >= 1, got 'abc'"),
    ("compose.n_action_steps=9", "compose: n_action_steps: n_action_steps=9 must be an integer within"),
    ("compose.n_action_steps=0", "compose: n_action_steps: need an integer >= 1, got 0"),
    ("compose.operator=or compose.sampler={name:ddim,eta:0.5}", "compose: sampler.eta: the 'or' operator needs"),
    ("compose.parents=[checkpoints/pusht/keypoint_flow/path_x]", "compose: parents[0]: need a mapping of path, format"),
    ("weights=0.5", "weights: need a weight vector, a list of them, or schedules"),
    ("weights=[{knots:[0,1]}]", "weights: a schedule needs exactly 'knots' and 'weights', got ['knots']"),
    ("weights=[[0.5,abc]]", "weights: need a list of numbers, got [0.5, 'abc']"),
    ("compose.weights=[0.5,abc]", "compose.weights: need a list of numbers"),
    ("weights=[[0.5,0.5],[0.3,0.7],[0.5,0.5]]", "weights[2]: the same weights as weights[0]"),
    ("+env.factory.colour=red", "env.factory: make_env() got an unexpected keyword argument 'colour'"),
    ("videos=-1", "videos: need an integer >= 0, got -1"),
    ("env.factory._target_=gpc.sims.pusht.env.make_envv",
     "env.factory: Error loading 'gpc.sims.pusht.env.make_envv': ModuleNotFoundError"),
])
def test_bad_eval_input_exits_2_with_one_line_naming_the_field(parents, tmp_path, capsys, override, field):
    a, b, _ = parents
    assert gpc_main(eval_args(a, b, tmp_path / "out", *override.split())) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "configs/eval.yaml" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_help_prints_the_config_groups_and_the_command_defaults_and_runs_nothing(tmp_path):
    result = gpc("eval", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "env: " in result.stdout and "robomimic_can" in result.stdout
    assert "episodes:" in result.stdout and "parents:" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_rows_whose_labels_round_alike_show_their_exact_keys():
    from gpc.app.eval_job import display_names
    from gpc.core.operators import WeightSchedule

    schedules = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.3333, 0.6667], [0.3334, 0.6666], [0.5, 0.5])]
    assert display_names(schedules, ["a", "b"]) == [
        "a alone", "composed w=0.3333,0.6667", "composed w=0.3334,0.6666", "composed w=0.5,0.5"]


def test_a_command_whose_extra_is_missing_says_what_to_install(tmp_path):
    """Without zarr (the `train` extra), `gpc train` ends in one line naming the package and the extra."""
    script = ("import sys\n"
              "class Without:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] == 'zarr':\n"
              "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
              "sys.meta_path.insert(0, Without())\n"
              "from gpc.app.cli import main\n"
              f"sys.exit(main(['train', 'dataset.path={ROOT / 'data/pusht/demos.zarr'}', "
              f"'output_dir={tmp_path / 'out'}']))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "gpc train: error: this needs the Python package 'zarr', which is not installed: pip install 'gpc[train]'"]
    assert not (tmp_path / "out").exists()
