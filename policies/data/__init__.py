"""Demonstration data: zarr replay buffers, training windows and normalizer fitting."""

from .replay_buffer import ReplayBuffer, read_replay_buffer, write_replay_buffer
from .sequence import SequenceDataset, fit_normalizers, is_image, sequence_windows, split_episodes

__all__ = ["ReplayBuffer", "SequenceDataset", "fit_normalizers", "is_image", "read_replay_buffer",
           "sequence_windows", "split_episodes", "write_replay_buffer"]
