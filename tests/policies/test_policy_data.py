"""Replay buffers on disk, training windows and normalizer fitting, on hand-built tiny data."""

import numpy as np
import pytest
import torch
import zarr

from gpc.policies.data import (
    ReplayBuffer,
    SequenceDataset,
    fit_normalizers,
    read_replay_buffer,
    sequence_windows,
    split_episodes,
    write_replay_buffer,
)


def tiny_episodes() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two episodes of 3 and 5 steps; every value encodes its global step index."""
    steps = np.arange(8)
    data = {
        "state": np.stack([steps, -steps], axis=1).astype(np.float32),   # (8, 2)
        "action": (100 + steps)[:, None].astype(np.float64),            # (8, 1)
        "image": (steps[:, None, None, None] * np.ones((8, 4, 5, 3))).astype(np.uint8),
    }
    return data, np.array([3, 8])


# --- replay buffer ------------------------------------------------------------------------------

def test_write_read_round_trip(tmp_path):
    data, ends = tiny_episodes()
    instructions = np.array(["push the block", "open the drawer"])
    path = write_replay_buffer(tmp_path / "demo.zarr", data, ends,
                               extra_meta={"instruction": instructions})
    buffer = read_replay_buffer(path)
    assert sorted(buffer.keys) == sorted(data)
    for key, array in data.items():
        assert buffer[key].dtype == array.dtype and np.array_equal(buffer[key], array)
    assert np.array_equal(buffer.episode_ends, ends) and buffer.n_episodes == 2
    assert buffer.n_steps == 8 and buffer.episode_lengths.tolist() == [3, 5]
    assert list(buffer.meta["instruction"]) == list(instructions)
    assert np.array_equal(buffer.episode(1)["action"], data["action"][3:])
    assert [p.name for p in tmp_path.iterdir()] == ["demo.zarr"]  # no temporary left behind


def test_read_subset_and_missing_key_names_file_and_key(tmp_path):
    data, ends = tiny_episodes()
    path = write_replay_buffer(tmp_path / "demo.zarr", data, ends)
    assert read_replay_buffer(path, keys=["action"]).keys == ["action"]
    with pytest.raises(ValueError, match=r"demo\.zarr.*'point_cloud'"):
        read_replay_buffer(path, keys=["action", "point_cloud"])
    with pytest.raises(FileNotFoundError, match=r"nowhere\.zarr"):
        read_replay_buffer(tmp_path / "nowhere.zarr")


def test_reads_diffusion_policy_zarr_v2_store(tmp_path):
    data, ends = tiny_episodes()
    root = zarr.open_group(tmp_path / "dp.zarr", mode="w", zarr_format=2)
    root.create_group("data").create_array("action", data=data["action"])
    root.create_group("meta").create_array("episode_ends", data=ends)
    buffer = read_replay_buffer(tmp_path / "dp.zarr")
    assert np.array_equal(buffer["action"], data["action"])


def test_write_refuses_bad_data_and_existing_store(tmp_path):
    data, ends = tiny_episodes()
    with pytest.raises(ValueError, match="data/state"):
        write_replay_buffer(tmp_path / "bad.zarr", {**data, "state": data["state"][:5]}, ends)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_replay_buffer(tmp_path / "bad.zarr", data, [3, 3, 8])
    assert not list(tmp_path.iterdir())
    path = write_replay_buffer(tmp_path / "demo.zarr", data, ends)
    with pytest.raises(FileExistsError):
        write_replay_buffer(path, data, ends)
    write_replay_buffer(path, {"action": data["action"][:3]}, [3], overwrite=True)
    assert read_replay_buffer(path).n_steps == 3


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    data, ends = tiny_episodes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(zarr.Group, "create_array", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_replay_buffer(tmp_path / "demo.zarr", data, ends)
    assert not list(tmp_path.iterdir())


# --- windows --------------------------------------------------------------------------------------

def test_window_count_per_episode():
    # L - horizon + pad_before + pad_after + 1 windows per episode, none if that is negative.
    windows = sequence_windows(np.array([3, 8, 20]), horizon=4, pad_before=1, pad_after=2)
    assert len(windows) == (3 - 4 + 4) + (5 - 4 + 4) + (12 - 4 + 4)
    assert len(sequence_windows(np.array([2]), horizon=6, pad_before=1, pad_after=1)) == 0


def test_dataset_windows_match_hand_built_padding():
    data, ends = tiny_episodes()
    dataset = SequenceDataset(ReplayBuffer(data, ends), obs_keys=["state"], horizon=4,
                              n_obs_steps=2, n_action_steps=2)
    # pad_before = 1, pad_after = 1: each window's global steps, edge frames repeated.
    expected_steps = [[0, 0, 1, 2], [0, 1, 2, 2],
                      [3, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7], [5, 6, 7, 7]]
    assert len(dataset) == len(expected_steps)
    for sample, steps in zip(dataset, expected_steps):
        assert sample["action"].shape == (4, 1) and sample["action"].dtype == torch.float32
        assert sample["action"][:, 0].tolist() == [100 + s for s in steps]
        # obs are the first n_obs_steps frames of the same window: action[1] is taken at obs[1].
        assert sample["obs"]["state"].shape == (2, 2)
        assert sample["obs"]["state"][:, 0].tolist() == steps[:2]


def test_image_keys_come_back_channel_first_in_unit_range():
    data, ends = tiny_episodes()
    dataset = SequenceDataset(ReplayBuffer(data, ends), obs_keys=["image", "state"], horizon=4,
                              n_obs_steps=2, n_action_steps=2)
    image = dataset[3]["obs"]["image"]  # window steps [3, 4, 5, 6] -> obs frames 3, 4
    assert image.shape == (2, 3, 4, 5) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0, 0], torch.tensor([3, 4]) / 255)


def test_episode_mask_restricts_windows_and_split_is_a_partition():
    data, ends = tiny_episodes()
    buffer = ReplayBuffer(data, ends)
    only_second = SequenceDataset(buffer, ["state"], 4, 2, 2, episode_mask=np.array([False, True]))
    assert len(only_second) == 4 and only_second[0]["obs"]["state"][0, 0] == 3
    train, val = split_episodes(10, val_ratio=0.2, seed=1)
    assert val.sum() == 2 and not (train & val).any() and (train | val).all()
    assert split_episodes(1, val_ratio=0.5)[1].sum() == 0  # never the only episode


def test_dataset_rejects_too_short_horizon():
    data, ends = tiny_episodes()
    with pytest.raises(ValueError, match="horizon >= 5"):
        SequenceDataset(ReplayBuffer(data, ends), ["state"], horizon=4, n_obs_steps=2,
                        n_action_steps=4)


# --- normalizers ---------------------------------------------------------------------------------

def test_fit_normalizers_maps_data_to_unit_range_and_skips_images():
    data, ends = tiny_episodes()
    buffer = ReplayBuffer(data, ends)
    normalizers = fit_normalizers(buffer, ["action", "state", "image"])
    assert sorted(normalizers) == ["action", "state"]
    for key in ("action", "state"):
        normalized = normalizers[key].normalize(buffer[key])
        assert np.allclose(normalized.min(axis=0), -1) and np.allclose(normalized.max(axis=0), 1)
    gaussian = fit_normalizers(buffer, ["state"], mode={"state": "gaussian"})["state"]
    assert gaussian.mode == "gaussian"
    assert np.allclose(gaussian.normalize(buffer["state"]).std(axis=0), 1, atol=1e-5)
