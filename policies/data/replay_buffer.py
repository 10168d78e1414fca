"""Episodes on disk in Diffusion Policy's zarr replay-buffer layout, and in memory as numpy.

Layout: `data/<key>` arrays whose first axis is time (all steps of all episodes back to back), and
`meta/episode_ends`, the cumulative step count at the end of each episode. Other `meta/<key>` arrays
(e.g. one instruction per episode) ride along. Stores written by diffusion_policy (zarr format 2)
read as they are.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import zarr

from gpc.runtime.atomic import replace_directory


class ReplayBuffer:
    """All steps of all episodes, in memory: `buffer[key]` is a (n_steps, ...) array."""

    def __init__(self, data: Mapping[str, np.ndarray], episode_ends: np.ndarray,
                 meta: Mapping[str, np.ndarray] | None = None, source: str = "<memory>"):
        self.source = source
        self.episode_ends = _check_episode_ends(episode_ends, source)
        self.data = dict(data)
        for key, array in self.data.items():
            if np.shape(array)[:1] != (self.n_steps,):
                raise ValueError(f"{source}: data/{key} has {np.shape(array)[:1]} steps, but "
                                 f"episode_ends says {self.n_steps}")
        self.meta = dict(meta or {})

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0)

    @property
    def keys(self) -> list[str]:
        return list(self.data)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.data:
            raise KeyError(f"{self.source}: no data key {key!r}; available: {sorted(self.data)}")
        return self.data[key]

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """The steps of one episode, for every key (views, not copies)."""
        start, end = self.episode_starts[index], self.episode_ends[index]
        return {key: array[start:end] for key, array in self.data.items()}


def read_replay_buffer(path: str | os.PathLike, keys: Sequence[str] | None = None) -> ReplayBuffer:
    """Load `keys` (default: every `data/` array) and all of `meta/` from a zarr store into memory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"replay buffer {path} does not exist")
    try:
        root = zarr.open_group(path, mode="r")
    except (zarr.errors.BaseZarrError, FileNotFoundError, ValueError) as err:
        raise ValueError(f"{path} is not a zarr store ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if "data" not in root or "meta" not in root or "episode_ends" not in root["meta"]:
        raise ValueError(f"{path} is not a replay buffer: it needs data/ and meta/episode_ends")
    available = sorted(root["data"].array_keys())
    keys = available if keys is None else list(keys)
    missing = [key for key in keys if key not in available]
    if missing:
        raise ValueError(f"{path}: no data key(s) {missing}; available: {available}")
    data = {key: root["data"][key][:] for key in keys}
    meta = {key: root["meta"][key][:] for key in root["meta"].array_keys() if key != "episode_ends"}
    return ReplayBuffer(data, root["meta"]["episode_ends"][:], meta, source=str(path))


def write_replay_buffer(path: str | os.PathLike, data: Mapping[str, np.ndarray],
                        episode_ends: Sequence[int] | np.ndarray,
                        extra_meta: Mapping[str, np.ndarray] | None = None, *,
                        overwrite: bool = False) -> Path:
    """Write a zarr store at `path` (zarr format 3) and return the path.

    The store is built under a hidden temporary name beside `path` and renamed into place only when
    complete, so a crash never leaves a partial buffer that a later run would read. An existing
    `path` raises FileExistsError unless `overwrite`. `extra_meta` arrays go to `meta/<key>`; string
    arrays are stored as variable-length UTF-8.
    """
    path = Path(path)
    ReplayBuffer(data, np.asarray(episode_ends), source=str(path))  # validates before any write
    extra_meta = dict(extra_meta or {})
    if "episode_ends" in extra_meta:
        raise ValueError("extra_meta may not contain 'episode_ends'; pass it as episode_ends")
    for key in (*data, *extra_meta):
        if not key or "/" in key:
            raise ValueError(f"invalid array name {key!r}: it must be non-empty and contain no '/'")
    if path.exists() and not overwrite:
        raise FileExistsError(f"replay buffer {path} already exists (pass overwrite=True)")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        root = zarr.open_group(tmp, mode="w-")
        data_group = root.create_group("data")
        for key, array in data.items():
            data_group.create_array(key, data=np.ascontiguousarray(array))
        meta_group = root.create_group("meta")
        meta_group.create_array("episode_ends", data=np.asarray(episode_ends, dtype=np.int64))
        for key, array in extra_meta.items():
            array = np.asarray(array)
            if array.dtype.kind in "US":
                array = array.astype(np.dtypes.StringDType())
            meta_group.create_array(key, data=array)
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check_episode_ends(episode_ends, source: str) -> np.ndarray:
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or (ends.size and ends.dtype.kind not in "iu"):
        raise ValueError(f"{source}: episode_ends must be a 1-D integer array, got dtype "
                         f"{ends.dtype} and shape {ends.shape}")
    ends = ends.astype(np.int64)
    if ends.size and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        raise ValueError(f"{source}: episode_ends must be strictly increasing and positive "
                         f"(every episode has at least one step), got {ends}")
    return ends
