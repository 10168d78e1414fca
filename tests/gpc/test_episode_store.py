"""The setup hash that keys stored episodes: what decides an episode's outcome, and nothing else."""

import os

from omegaconf import OmegaConf

from gpc.episode_store import setup_hash


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
