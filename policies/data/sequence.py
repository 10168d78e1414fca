"""Fixed-length training windows over episodes, as Diffusion Policy samples them.

A window of `horizon` steps may start up to `n_obs_steps - 1` steps before an episode and end up to
`n_action_steps - 1` steps after it; the missing steps repeat the episode's first / last frame. So
the very first step of an episode is seen with a full observation history, and the last steps still
yield full action chunks (the robot holding still). Windows never cross episodes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gpc.core.normalizer import Normalizer

from .replay_buffer import ReplayBuffer


def sequence_windows(episode_ends: np.ndarray, horizon: int, pad_before: int = 0,
                     pad_after: int = 0, episode_mask: np.ndarray | None = None) -> np.ndarray:
    """Every window as a row `(first_step, episode_start, episode_end)` of an (M, 3) int64 array.

    `first_step` may lie before `episode_start` (padding); the window's buffer indices are
    `clip(first_step + arange(horizon), episode_start, episode_end - 1)`. An episode of length L
    gives `max(0, L - horizon + pad_before + pad_after + 1)` windows.
    """
    if horizon < 1 or pad_before < 0 or pad_after < 0:
        raise ValueError(f"need horizon >= 1 and non-negative padding, got horizon={horizon}, "
                         f"pad_before={pad_before}, pad_after={pad_after}")
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    if episode_mask is None:
        episode_mask = np.ones(len(ends), dtype=bool)
    episode_mask = np.asarray(episode_mask, dtype=bool)
    if episode_mask.shape != ends.shape:
        raise ValueError(f"episode_mask has shape {episode_mask.shape}, expected ({len(ends)},)")
    rows = []
    for start, end in zip(starts[episode_mask], ends[episode_mask]):
        first = np.arange(start - pad_before, end - horizon + pad_after + 1, dtype=np.int64)
        rows.append(np.stack([first, np.full_like(first, start), np.full_like(first, end)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


def split_episodes(n_episodes: int, val_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (train_mask, val_mask) over episodes. Splitting by episode, not by window, keeps
    near-duplicate neighbouring windows out of the validation set. With val_ratio > 0 and at least
    two episodes, each side gets at least one episode."""
    if not 0 <= val_ratio < 1:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    n_val = 0 if val_ratio == 0 or n_episodes < 2 else min(max(1, round(n_episodes * val_ratio)),
                                                           n_episodes - 1)
    val = np.zeros(n_episodes, dtype=bool)
    val[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    return ~val, val


def is_image(array: np.ndarray) -> bool:
    """The storage convention for camera frames: uint8 (n_steps, H, W, C)."""
    return array.dtype == np.uint8 and array.ndim == 4


class SequenceDataset(Dataset):
    """Training samples `{"obs": {key: (n_obs_steps, ...)}, "action": (horizon, action_dim)}`.

    Observations are the first `n_obs_steps` frames of the window, so `action[n_obs_steps - 1]` is
    the action taken at the latest observed step. Everything comes back as float32 tensors, not
    normalized (the policy owns its normalizers, see `fit_normalizers`); image keys (`is_image`)
    come back channel-first in [0, 1]: (n_obs_steps, C, H, W).
    """

    def __init__(self, buffer: ReplayBuffer, obs_keys: Sequence[str], horizon: int,
                 n_obs_steps: int, n_action_steps: int, action_key: str = "action",
                 episode_mask: np.ndarray | None = None):
        if not 1 <= n_obs_steps <= horizon or n_action_steps < 1:
            raise ValueError(f"need 1 <= n_obs_steps <= horizon and n_action_steps >= 1, got "
                             f"n_obs_steps={n_obs_steps}, horizon={horizon}, "
                             f"n_action_steps={n_action_steps}")
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(f"horizon={horizon} is too short to execute {n_action_steps} actions "
                             f"after {n_obs_steps} observations: need horizon >= "
                             f"{n_obs_steps - 1 + n_action_steps}")
        self.obs = {key: buffer[key] for key in obs_keys}
        self.action = buffer[action_key]
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.windows = sequence_windows(buffer.episode_ends, horizon, pad_before=n_obs_steps - 1,
                                        pad_after=n_action_steps - 1, episode_mask=episode_mask)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        first, start, end = self.windows[index]
        steps = np.clip(first + np.arange(self.horizon), start, end - 1)  # edge frames repeat
        obs_steps = steps[:self.n_obs_steps]
        obs = {key: _to_tensor(array[obs_steps]) for key, array in self.obs.items()}
        return {"obs": obs, "action": _to_tensor(self.action[steps])}


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    if is_image(frames):
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
    return torch.from_numpy(np.asarray(frames, dtype=np.float32))


def fit_normalizers(buffer: ReplayBuffer, keys: Sequence[str],
                    mode: str | Mapping[str, str] = "limits") -> dict[str, Normalizer]:
    """One `Normalizer` per key, fit on every step of the buffer, per feature (last axis).

    `mode` is one mode for all keys or a {key: mode} mapping ("limits" maps the data range to
    [-1, 1], Diffusion Policy's choice for actions). Image keys are left out of the result: images
    are only scaled to [0, 1] by the dataset.
    """
    normalizers = {}
    for key in keys:
        array = buffer[key]
        if is_image(array):
            continue
        if array.ndim < 2:
            raise ValueError(f"{buffer.source}: data/{key} has shape {array.shape}; store per-step "
                             f"features as (n_steps, dim), a scalar as (n_steps, 1)")
        key_mode = mode if isinstance(mode, str) else mode[key]
        normalizers[key] = Normalizer.fit(array, mode=key_mode)
    return normalizers
