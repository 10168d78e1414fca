"""Nothing non-finite gets into or out of training, a damaged trainer state is never trained over, and policy,
checkpoint and train configs are strict: each refusal is one line naming the file, the field or the index."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from gpc.app.schema import ConfigError
from gpc.core.normalizer import Normalizer
from gpc.policies.checkpoint import load_policy, read_checkpoint_config, save_policy
from gpc.policies.configuration import load_policy_config
from gpc.policies.data.replay_buffer import write_replay_buffer
from gpc.policies.modeling import Policy
from gpc.policies.train import load_train_config, train

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "tiny", "obs": [{"key": "state", "type": "low_dim", "shape": [3]}], "action_dim": 2, "horizon": 4,
        "n_obs_steps": 2, "n_action_steps": 2,
        "denoiser": {"type": "unet", "down_dims": [8, 16], "n_groups": 4, "time_embed_dim": 8},
        "objective": {"kind": "diffusion", "prediction_type": "epsilon"}}
ENDS = np.array([20, 45, 60])


def store(path, **arrays):
    """Three episodes (20, 25 and 15 steps): `state` (n, 3), `action` (n, 2), overridable."""
    rng = np.random.default_rng(0)
    data = {"state": rng.normal(size=(60, 3)).astype(np.float32), "action": rng.normal(size=(60, 2)).astype(np.float32)}
    write_replay_buffer(path, {**data, **arrays}, ENDS)
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return store(tmp_path_factory.mktemp("data") / "clean.zarr")


def config_for(dataset, out, steps=4, **policy):
    return OmegaConf.create({
        "policy": {**TINY, **policy}, "dataset": {"path": str(dataset)},
        "training": {"seed": 0, "steps": steps, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0,
                     "warmup_steps": 1, "ema_power": 0.75, "ema_max_decay": 0.999, "log_every": 1,
                     "checkpoint_every": 2, "progress": False, "device": "cpu"},
        "output_dir": str(out)})


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# -- training data ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_in_the_action_is_refused_naming_array_index_episode_and_step(bad, tmp_path):
    action = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    action[37, 1] = bad  # episode 1 starts at step 20
    dataset = store(tmp_path / "bad.zarr", action=action)
    with pytest.raises(ValueError) as err:
        train(config_for(dataset, tmp_path / "out"))
    assert one_line(err) == (f"{dataset}: data/action[37, 1] is {bad} (episode 1, step 17); training needs finite "
                             "values: fix or drop that episode")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_an_observation_array_is_refused_naming_it(bad, tmp_path):
    state = np.zeros((60, 3), np.float32)
    state[50, 2] = bad  # episode 2 starts at step 45
    dataset = store(tmp_path / "bad.zarr", state=state)
    with pytest.raises(ValueError, match=re.escape(f"{dataset}: data/state[50, 2] is {bad} (episode 2, step 5)")):
        train(config_for(dataset, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_observation_dims_are_checked_after_dataset_dims_slicing_and_named_in_the_stored_array(tmp_path):
    """`dataset_dims: [1, 4]` reads state[:, 1:4]: a NaN in column 0 is not read (training runs); one in column 3
    is refused, named as data/state[.., 3] of the store."""
    state = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    state[:, 0] = np.nan
    sliced = [{"key": "agent", "type": "low_dim", "shape": [3], "dataset_key": "state", "dataset_dims": [1, 4]}]
    dataset = store(tmp_path / "unread.zarr", state=state)
    assert (train(config_for(dataset, tmp_path / "ok", steps=2, obs=sliced)) / "policy" / "model.safetensors").exists()
    state[12, 3] = np.inf
    dataset = store(tmp_path / "read.zarr", state=state)
    with pytest.raises(ValueError, match=re.escape(f"{dataset}: data/state[12, 3] is inf (episode 0, step 12)")):
        train(config_for(dataset, tmp_path / "out", obs=sliced))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (dict(obs=[{"key": "state", "type": "low_dim", "shape": [4]}]),
     "data/state has shape [60, 3], but policy.obs[0].shape says [4] per step"),
    (dict(action_dim=3), "data/action has shape [60, 2], but policy.action_dim says [3] per step"),
    (dict(obs=[{"key": "state", "type": "low_dim", "shape": [2], "dataset_dims": [2, 4]}]),
     "data/state has shape [60, 3]; dataset_dims [2, 4] reach past its last axis"),
    (dict(obs=[{"key": "points", "type": "pointcloud", "shape": [8, 3]}]),
     "data/points has shape [60, 8, 4], but policy.obs[0].shape says [any, 3] per step"),
])
def test_data_of_another_shape_than_the_policy_says_is_refused_before_training(change, message, tmp_path):
    dataset = store(tmp_path / "data.zarr", points=np.zeros((60, 8, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(f"{dataset}: {message}")):
        train(config_for(dataset, tmp_path / "out", **change))
    assert not (tmp_path / "out").exists()


def test_gpc_train_on_a_nan_dataset_exits_2_with_one_line_and_writes_nothing(tmp_path):
    keypoint = np.random.default_rng(0).normal(size=(60, 20)).astype(np.float32)
    keypoint[3, 7] = np.nan
    dataset = store(tmp_path / "nan.zarr", keypoint=keypoint)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "gpc.app.cli", "train", "policy=pusht_state_diffusion",
                             f"dataset.path={dataset}", f"output_dir={out}", "training.device=cpu",
                             "training.progress=false"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"gpc train: error: {dataset}: data/keypoint[3, 7] is nan (episode 0, "
                                          "step 3); training needs finite values: fix or drop that episode"]
    assert not out.exists()


# -- the loss, the gradients and the weights -------------------------------------------------------------------

def nan_at_call(monkeypatch, call: int, make_bad):
    """Policy.compute_loss, made non-finite by `make_bad(per_sample, policy)` from its `call`-th call on."""
    calls = {"n": 0}
    original = Policy.compute_loss

    def compute_loss(self, batch, generator=None):
        calls["n"] += 1
        per_sample = original(self, batch, generator)
        return make_bad(per_sample, self) if calls["n"] >= call else per_sample

    monkeypatch.setattr(Policy, "compute_loss", compute_loss)


def test_a_non_finite_loss_mid_run_stops_it_and_keeps_the_last_good_checkpoint(clean, tmp_path, monkeypatch):
    nan_at_call(monkeypatch, 3, lambda loss, policy: loss * math.nan)
    with pytest.raises(ValueError) as err:
        train(config_for(clean, tmp_path / "out", steps=6))
    assert one_line(err) == (f"train config: training stopped at step 3: the loss is nan; nothing was saved for this "
                             f"step; the last checkpoint, of step 2, is in {tmp_path / 'out' / 'policy'} (a lower "
                             "training.lr may help, or check the data)")
    saved = yaml.safe_load((tmp_path / "out" / "policy" / "config.yaml").read_text())
    assert saved["trained"]["step"] == 2
    assert json.loads((tmp_path / "out" / "train_state" / "state.json").read_text())["step"] == 2
    weights = load_file(str(tmp_path / "out" / "policy" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_non_finite_loss_before_any_checkpoint_writes_no_checkpoint(clean, tmp_path, monkeypatch):
    nan_at_call(monkeypatch, 2, lambda loss, policy: loss + math.inf)
    with pytest.raises(ValueError, match=re.escape("training stopped at step 2: the loss is inf; nothing was saved "
                                                   "for this step (a lower")):
        train(config_for(clean, tmp_path / "out", steps=6))
    assert not (tmp_path / "out" / "policy").exists() and not (tmp_path / "out" / "train_state").exists()


def test_a_non_finite_gradient_under_a_finite_loss_stops_the_run(clean, tmp_path, monkeypatch):
    def nan_gradient(loss, policy):  # sqrt at 0: the value 0 is finite, its gradient is not
        weight = next(policy.denoiser.parameters())
        return loss + 0.0 * torch.sqrt(weight.flatten()[0] - weight.flatten()[0].detach())

    nan_at_call(monkeypatch, 1, nan_gradient)
    with pytest.raises(ValueError, match=r"training stopped at step 1: the gradient of denoiser\.\S+ holds NaN or inf"):
        train(config_for(clean, tmp_path / "out"))
    assert not (tmp_path / "out" / "policy").exists()


def test_weights_made_non_finite_by_the_optimizer_step_are_never_saved(clean, tmp_path, monkeypatch):
    """The loss and gradients of step 4 are finite, its optimizer step is not: the checkpoint of step 4 is
    refused whole (policy and trainer state), the one of step 2 stays."""
    calls = {"n": 0}
    step = torch.optim.AdamW.step

    def corrupting_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.nan)
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", corrupting_step)
    with pytest.raises(ValueError, match=r"training stopped at step 4: train_state/model\.safetensors: refusing to "
                                         r"save non-finite values: \S+ has \d+ NaN or inf of \d+; nothing was saved"):
        train(config_for(clean, tmp_path / "out", steps=6))
    assert yaml.safe_load((tmp_path / "out" / "policy" / "config.yaml").read_text())["trained"]["step"] == 2
    assert json.loads((tmp_path / "out" / "train_state" / "state.json").read_text())["step"] == 2


def tiny_policy(**normalizer_override):
    config = load_policy_config(TINY)
    normalizers = {"action": Normalizer.fit(np.array([[0.0, 0.0], [1.0, 2.0]])),
                   "state": Normalizer.fit(np.array([[0.0] * 3, [1.0] * 3])), **normalizer_override}
    return Policy(config, normalizers)


def test_save_policy_refuses_nan_weights_and_keeps_the_previous_checkpoint(tmp_path):
    good = save_policy(tiny_policy(), tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    policy = tiny_policy()
    name, weight = next(iter(policy.named_parameters()))
    with torch.no_grad():
        weight.view(-1)[0] = math.nan
    with pytest.raises(ValueError, match=re.escape(f"{good / 'model.safetensors'}: refusing to save non-finite values: "
                                                   f"{name} has 1 NaN or inf of {weight.numel()}")):
        save_policy(policy, good)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    with pytest.raises(ValueError, match="refusing to save non-finite values"):
        save_policy(policy, tmp_path / "new" / "ckpt")
    assert not (tmp_path / "new").exists()


def test_save_policy_refuses_a_non_finite_normalizer(tmp_path):
    broken = Normalizer(np.array([0.0, np.inf], np.float32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match=re.escape("normalizer.action.offset has 1 NaN or inf of 2")):
        save_policy(tiny_policy(action=broken), tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


# -- resuming --------------------------------------------------------------------------------------------------

def corrupt(state: Path, case: str) -> str:
    """Damage the trainer state in one way; returns the file the error must name."""
    def rewrite(name, change):
        tensors = load_file(str(state / name))
        change(tensors)
        save_file(tensors, str(state / name))

    meta = json.loads((state / "state.json").read_text())
    if case == "garbage state.json":
        (state / "state.json").write_text('{"step": 2, "run"')
    elif case == "state.json without step":
        del meta["step"]
        (state / "state.json").write_text(json.dumps(meta))
    elif case == "state.json with a negative step":
        (state / "state.json").write_text(json.dumps({**meta, "step": -1}))
    elif case == "no state.json":
        (state / "state.json").unlink()
    elif case == "foreign param groups":
        (state / "state.json").write_text(json.dumps({**meta, "param_groups": []}))
    elif case == "truncated weights":
        data = (state / "model.safetensors").read_bytes()
        (state / "model.safetensors").write_bytes(data[:len(data) // 2])
        return "model.safetensors"
    elif case == "empty weights":
        (state / "model.safetensors").write_bytes(b"")
        return "model.safetensors"
    elif case == "missing weights file":
        (state / "ema.safetensors").unlink()
        return "ema.safetensors"
    elif case == "a weight missing":
        rewrite("model.safetensors", lambda t: t.pop(sorted(t)[0]))
        return "model.safetensors"
    elif case == "a foreign weight":
        rewrite("model.safetensors", lambda t: t.update(extra=torch.zeros(2)))
        return "model.safetensors"
    elif case == "a weight of another shape":
        rewrite("ema.safetensors", lambda t: t.update({"0": torch.zeros(7)}))
        return "ema.safetensors"
    elif case == "a nan weight":
        rewrite("model.safetensors", lambda t: t[sorted(t)[0]].view(-1).__setitem__(0, math.nan))
        return "model.safetensors"
    elif case == "an inf optimizer slot":
        rewrite("optimizer.safetensors", lambda t: t[sorted(t)[0]].fill_(math.inf))
        return "optimizer.safetensors"
    elif case == "an optimizer slot of no parameter":
        rewrite("optimizer.safetensors", lambda t: t.update({"9999.exp_avg": torch.zeros(1)}))
        return "optimizer.safetensors"
    return "state.json"


@pytest.mark.parametrize("case, message", [
    ("garbage state.json", "not readable JSON"),
    ("state.json without step", "step: missing"),
    ("state.json with a negative step", "step: need an integer >= 0, got -1"),
    ("no state.json", "missing"),
    ("foreign param groups", "param_groups do not fit the optimizer"),
    ("truncated weights", "not a readable safetensors file"),
    ("empty weights", "not a readable safetensors file"),
    ("missing weights file", "missing"),
    ("a weight missing", "does not hold the policy's weights: missing "),
    ("a foreign weight", "does not hold the policy's weights: unexpected extra"),
    ("a weight of another shape", "0 has shape [7], one EMA tensor per policy parameter has"),
    ("a nan weight", "holds NaN or inf"),
    ("an inf optimizer slot", "holds NaN or inf"),
    ("an optimizer slot of no parameter", "'9999.exp_avg' names no parameter of the optimizer"),
])
def test_a_damaged_trainer_state_is_one_error_naming_the_file_and_is_left_as_it_is(case, message, clean, tmp_path):
    out = tmp_path / "out"
    train(config_for(clean, out, steps=2))
    state = out / "train_state"
    named = state / corrupt(state, case)
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    policy_before = (out / "policy" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError) as err:
        train(config_for(clean, out, steps=4))
    assert one_line(err).startswith(f"{named}: ")
    assert message in str(err.value)
    assert str(err.value).endswith(f"the trainer state in {state} is damaged and is left as it is: delete that folder "
                                   "to train from scratch, or train into a new output_dir")
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before
    assert (out / "policy" / "model.safetensors").read_bytes() == policy_before


def test_a_torn_last_log_row_is_dropped_on_resume_but_a_garbled_one_is_an_error(clean, tmp_path):
    out = tmp_path / "out"
    train(config_for(clean, out, steps=2))
    log = out / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "lo')  # killed while writing step 3's row
    train(config_for(clean, out, steps=4))
    assert [json.loads(row)["step"] for row in log.read_text().splitlines()] == [1, 2, 3, 4]
    rows = log.read_text().splitlines()
    log.write_text("\n".join([rows[0], "garbage", *rows[1:]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{log}: line 2 is not a log row with an integer step")):
        train(config_for(clean, out, steps=6))


# -- strict configs --------------------------------------------------------------------------------------------

def test_every_shipped_policy_config_and_checkpoint_config_passes_the_strict_schemas():
    policies = sorted((ROOT / "configs" / "policy").glob("*.yaml"))
    checkpoints = sorted((ROOT / "checkpoints").glob("**/policy/config.yaml"))
    assert len(policies) >= 10 and len(checkpoints) >= 17
    for path in policies:
        load_policy_config(yaml.safe_load(path.read_text()), str(path), "policy")
    for path in checkpoints:
        read_checkpoint_config(path)


@pytest.fixture
def checkpoint(tmp_path):
    """A flow checkpoint folder and its config document, to be damaged."""
    policy = Policy(load_policy_config({**TINY, "objective": {"kind": "flow", "prediction_type": "velocity",
                                                             "noise_at": 0, "velocity": "action_minus_noise"}}),
                    {"action": Normalizer.identity(2), "state": Normalizer.identity(3)})
    path = save_policy(policy, tmp_path / "ckpt", extra={"trained": {"step": 4, "dataset": "d.zarr", "seed": 0}})
    return path, yaml.safe_load((path / "config.yaml").read_text())


CHECKPOINT_DAMAGE = [
    (lambda d: d.pop("policy"), "policy: missing"),
    (lambda d: d["policy"].pop("objective"), "policy.objective: missing"),
    (lambda d: d["policy"]["objective"].pop("kind"), "policy.objective.kind: missing"),
    (lambda d: d["policy"]["objective"].pop("noise_at"), "policy.objective.noise_at: missing"),
    (lambda d: d["policy"]["objective"].pop("num_train_timesteps"), "policy.objective.num_train_timesteps: missing"),
    (lambda d: d["policy"].pop("normalization"), "policy.normalization: missing"),
    (lambda d: d["policy"]["obs"][0].pop("dataset_dims"), "policy.obs[0].dataset_dims: missing"),
    (lambda d: d["policy"].pop("horizon"), "policy.horizon: missing"),
    (lambda d: d["policy"].update(horizn=4), "policy.horizn: unknown key; did you mean 'horizon'?"),
    (lambda d: d.update(polic={}), "polic: unknown key; did you mean 'policy'?"),
    (lambda d: d["trained"].update(stepz=1), "trained.stepz: unknown key; did you mean 'step'?"),
    (lambda d: d["policy"]["objective"].update(kind="flw"), "policy.objective.kind: need one of"),
]


@pytest.mark.parametrize("damage, field", CHECKPOINT_DAMAGE, ids=[field for _, field in CHECKPOINT_DAMAGE])
def test_a_checkpoint_config_missing_a_section_or_field_or_with_an_unknown_key_is_refused(damage, field, checkpoint):
    path, document = checkpoint
    damage(document)
    (path / "config.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert one_line(err).startswith(f"{path / 'config.yaml'}: {field}")


def test_a_checkpoint_written_before_action_stats_by_existed_still_loads(checkpoint):
    path, document = checkpoint
    document["policy"].pop("action_stats_by")
    document.pop("trained")  # exports carry no training record
    (path / "config.yaml").write_text(yaml.safe_dump(document))
    assert load_policy(path).config.objective.kind == "flow"


def test_a_checkpoint_config_that_is_not_yaml_names_the_file(checkpoint):
    path, _ = checkpoint
    (path / "config.yaml").write_text("policy: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path / 'config.yaml'}: not valid YAML at line 2")):
        load_policy(path)


@pytest.mark.parametrize("change, message", [
    (dict(horizn=8), "policy.horizn: unknown key; did you mean 'horizon'?"),
    (dict(objective={"prediction_type": "velocity"}), "policy.objective.kind: missing"),
    (dict(objective={"kind": "flow"}), "policy.objective.prediction_type: a flow objective predicts 'velocity', "
                                       "got 'epsilon'"),
    (dict(objective={"kind": "diffusion", "prediction_type": "epsilon", "num_inference_step": 5}),
     "policy.objective.num_inference_step: unknown key; did you mean 'num_inference_steps'?"),
    (dict(objective={"kind": "flow", "prediction_type": "velocity", "noise_at": 0.5}),
     "policy.objective.noise_at: need one of 0, 1, got 0.5"),
    (dict(objective={"kind": "diffusion", "beta_schedule": "cosine"}), "policy.objective.beta_schedule: need one of"),
    (dict(n_action_steps=0), "policy.n_action_steps: need an integer >= 1, got 0"),
    (dict(n_obs_steps=0), "policy.n_obs_steps: need an integer >= 1, got 0"),
    (dict(horizon=0), "policy.horizon: need an integer >= 1, got 0"),
    (dict(action_dim=0), "policy.action_dim: need an integer >= 1, got 0"),
    (dict(horizon="16"), "policy.horizon: need an integer >= 1, got '16'"),
    (dict(n_action_steps=4), "policy.horizon: 4 is too short to execute 4 actions after 2 observations: need >= 5"),
    (dict(obs=[{"key": "state", "type": "lowdim", "shape": [3]}]), "policy.obs[0].type: need one of"),
    (dict(obs=[{"key": "state", "type": "low_dim", "shap": [3]}]),
     "policy.obs[0].shap: unknown key; did you mean 'shape'?"),
    (dict(obs=[{"key": "state", "type": "low_dim", "shape": [0]}]), "policy.obs[0].shape[0]: need an integer >= 1, got 0"),
    (dict(obs=[{"key": "image", "type": "rgb", "shape": [96, 96]}]),
     "policy.obs[0].shape: rgb inputs have 3 dims per frame, got [96, 96]"),
    (dict(obs=[]), "policy.obs: need at least one observation input"),
    (dict(obs=[{"key": "state", "shape": [3]}, {"key": "state", "shape": [3]}]), "policy.obs: a key is named twice"),
    (dict(normalization={"acton": "limits"}), "policy.normalization: 'acton' is neither 'action' nor an observation "
                                              "key; did you mean 'action'?"),
    (dict(normalization={"action": "minmax"}), "policy.normalization.action: need one of"),
    (dict(encoders={"rbg": {}}), "policy.encoders: 'rbg' is not an observation type; did you mean 'rgb'?"),
    (dict(denoiser={"type": "mlp"}), "policy.denoiser: type must be one of unet, transformer, got 'mlp'"),
])
def test_a_policy_config_typo_or_bad_value_names_its_field(change, message, clean, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(config_for(clean, tmp_path / "out", **change))
    assert one_line(err).startswith(f"train config: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"training.stepz": 3}, "training.stepz: unknown key; did you mean 'steps'?"),
    ({"training.lr": -1.0}, "training.lr: need a number > 0, got -1.0"),
    ({"training.lr": "fast"}, "training.lr: need a number > 0, got 'fast'"),
    ({"training.batch_size": 0}, "training.batch_size: need an integer >= 1, got 0"),
    ({"training.ema_max_decay": 1.5}, "training.ema_max_decay: need a number >= 0 and <= 1, got 1.5"),
    ({"training.progress": "yes"}, "training.progress: need true or false, got 'yes'"),
    ({"training.sgfd": {"enabled": True, "inner_stepz": 2}}, "training.sgfd.inner_stepz: unknown key; did you mean "
                                                             "'inner_steps'?"),
    ({"dataset": {"pth": "x.zarr"}}, "dataset.pth: unknown key; did you mean 'path'?"),
    ({"outputdir": "x"}, "outputdir: unknown key; did you mean 'output_dir'?"),
])
def test_a_train_config_typo_or_bad_value_names_its_field(change, message, clean, tmp_path):
    config = config_for(clean, tmp_path / "out")
    for key, value in change.items():
        OmegaConf.update(config, key, value, force_add=True)
    with pytest.raises(ConfigError) as err:
        train(config, "configs/train.yaml")
    assert one_line(err) == f"configs/train.yaml: {message}"
    assert not (tmp_path / "out").exists()


def test_the_train_config_keeps_its_keys_and_defaults():
    """configs/train.yaml, resolved as `gpc train` composes it, passes the schema with the values it states;
    a config that leaves a section out gets the same values from the schema."""
    from gpc.app.cli import compose

    composed = compose("train", [])
    settings = load_train_config(composed, "configs/train.yaml")
    assert settings.output_dir == "outputs/train/state_diffusion"
    assert OmegaConf.to_container(composed.training) == {
        **{k: v for k, v in vars(settings.training).items() if k != "sgfd"}, "sgfd": vars(settings.training.sgfd)}
    bare = load_train_config({"policy": OmegaConf.to_container(composed.policy)})
    assert bare.training == settings.training and bare.dataset == settings.dataset
    assert bare.output_dir == settings.output_dir


def test_the_train_config_schema_documents_every_field_including_each_observation_inputs():
    from gpc.app.schema import describe
    from gpc.policies.train import TrainConfig

    rows = {name: doc for name, _, _, doc in describe(TrainConfig)}
    for name in ("output_dir", "dataset.path", "training.lr", "training.sgfd.inner_steps", "policy.horizon",
                 "policy.objective.kind", "policy.obs[].shape", "policy.obs[].dataset_dims"):
        assert rows[name], name
