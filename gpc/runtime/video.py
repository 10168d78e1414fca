"""Episode videos: the env's rendered frames of chosen (candidate, seed) episodes, one mp4 each.

A video is named by its candidate, seed and outcome (`w=0.1,0.9_seed100000_success.mp4`). Frames stream to
ffmpeg (imageio-ffmpeg) as the episode runs, into a hidden partial file that is renamed when the episode
ends, so a rerun sees which videos exist and films only the missing ones, and clears the partial files that
killed runs left.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Collection

import numpy as np

NO_FRAMES = "videos: the env renders no RGB frames; give env.factory render_mode: rgb_array where it takes one"


def video_stem(label: str, seed: int) -> str:
    """A file-name-safe stem for one episode; long labels (schedules) keep a prefix and a hash."""
    safe = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", label)
    if len(safe) > 80:
        safe = f"{safe[:60]}_{hashlib.sha256(label.encode()).hexdigest()[:10]}"
    return f"{safe}_seed{seed}"


def missing_videos(directory: Path, pairs: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (candidate label, seed) pairs in `pairs` without a video in `directory` (named `<stem>_<outcome>.mp4`),
    from one listing of the folder."""
    filmed = {path.stem.rsplit("_", 1)[0] for path in Path(directory).glob("*.mp4")}
    return {(label, seed) for label, seed in pairs if video_stem(label, seed) not in filmed}


def clear_abandoned_partials(directory: Path) -> None:
    """Delete the partial videos in `directory` whose writing process (the pid in their name) no longer runs;
    those of a run still filming into the same folder stay."""
    for partial in Path(directory).glob(".*.partial-*.mp4"):
        pid = partial.stem.rsplit("-", 1)[1]
        if pid.isdigit() and not _running(int(pid)):
            partial.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_video_writer() -> None:
    if any(importlib.util.find_spec(module) is None for module in ("imageio", "imageio_ffmpeg")):
        raise ValueError("videos: need imageio and imageio-ffmpeg (pip install 'gpc[sims]')")


class EpisodeVideos:
    """Films the episodes in `pairs` (the caller starts a slot for each): one ffmpeg writer per filmed env slot,
    finished when its episode ends."""

    def __init__(self, directory: Path, pairs: Collection[tuple[str, int]], fps: float):
        self.directory, self.pairs, self.fps = Path(directory), set(pairs), fps
        self.writers: dict[int, tuple[object, Path]] = {}

    def start(self, slot: int, label: str, seed: int, frame) -> None:
        """Open the video of the episode (label, seed) that `slot` runs, with its reset frame."""
        import imageio

        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{video_stem(label, seed)}.partial-{os.getpid()}.mp4"
        # sizes are rounded up to even ones, as ffmpeg's yuv420p needs
        self.writers[slot] = (imageio.get_writer(partial, fps=self.fps, macro_block_size=2), partial)
        self.add(slot, frame)

    def add(self, slot: int, frame) -> None:
        if slot in self.writers:
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                raise ValueError(NO_FRAMES)
            self.writers[slot][0].append_data(frame)

    def finish(self, slot: int, label: str, seed: int, success: bool) -> None:
        writer, partial = self.writers.pop(slot)
        try:
            writer.close()
            os.replace(partial, self.directory / f"{video_stem(label, seed)}_{'success' if success else 'failure'}.mp4")
        finally:
            partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Drop the videos of episodes that did not end (an interrupted run)."""
        writers, self.writers = list(self.writers.values()), {}
        for writer, partial in writers:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the run is already failing; only the partial file matters
                pass
            finally:
                partial.unlink(missing_ok=True)
