"""Episode videos: the env's rendered frames of chosen (candidate, seed) episodes, one mp4 each.

A video is named by its candidate, seed and outcome (`w=0.1,0.9_seed100000_success.mp4`) and written whole
when its episode ends (imageio's ffmpeg writer), so a rerun sees which videos exist and records only the
missing ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Collection

import numpy as np

from gpc.atomic import whole_file


def video_stem(label: str, seed: int) -> str:
    """A file-name-safe stem for one episode (schedule labels hold JSON)."""
    return re.sub(r"[^A-Za-z0-9=.,_-]+", "_", label) + f"_seed{seed}"


def missing_videos(directory: Path, pairs: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (candidate label, seed) pairs in `pairs` without a video in `directory`."""
    return {(label, seed) for label, seed in pairs
            if not any(Path(directory).glob(f"{glob_escape(video_stem(label, seed))}_*.mp4"))}


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


class EpisodeVideos:
    """Collects frames per env slot and writes each recorded episode's video when it ends."""

    def __init__(self, directory: Path, fps: float):
        self.directory, self.fps = Path(directory), fps
        self.frames: dict[int, list[np.ndarray]] = {}

    def start(self, slot: int, frame) -> None:
        self.frames[slot] = []
        self.add(slot, frame)

    def add(self, slot: int, frame) -> None:
        if slot in self.frames:
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                raise ValueError("videos: the env renders no RGB frames; give its factory render_mode: rgb_array")
            self.frames[slot].append(frame)

    def finish(self, slot: int, label: str, seed: int, success: bool) -> Path | None:
        frames = self.frames.pop(slot, None)
        if frames is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{video_stem(label, seed)}_{'success' if success else 'failure'}.mp4"
        import imageio

        with whole_file(path) as partial:  # sizes rounded up to even ones, as yuv420p needs
            imageio.mimwrite(partial, frames, fps=self.fps, macro_block_size=2)
        return path
