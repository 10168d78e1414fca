"""Finished episodes in a SQLite database, one row each, committed as the episode ends.

A crash (even SIGKILL) loses at most the episodes still running: WAL mode with `synchronous=FULL` makes
every committed row durable. Rows are keyed by (setup, candidate, seed); `setup` is a hash of everything
that decides an episode's outcome (parents' files and settings, sampler, env) so a rerun reuses only
comparable episodes: a parent trained again into the same folder starts a new setup.
A row, once written, is never changed: recording the same key again is ignored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from gpc.config import resolve_path
from gpc.evaluate import Episode

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    setup TEXT NOT NULL,
    candidate TEXT NOT NULL,
    seed INTEGER NOT NULL,
    success INTEGER NOT NULL,
    length INTEGER NOT NULL,
    maxima TEXT NOT NULL,
    wall_s REAL NOT NULL,
    PRIMARY KEY (setup, candidate, seed)
)
"""


def setup_hash(config: DictConfig) -> str:
    """Hash of the composition (without its weights), the contents of its parents' checkpoints, and the env
    (without its slot count and render mode; with the contents of a file it is built from, `factory.path`)."""
    setup = {key: OmegaConf.to_container(config[key], resolve=True) for key in ("compose", "env")}
    setup["compose"].pop("weights", None)
    setup["env"].pop("n_envs", None)
    factory = setup["env"].get("factory", {})
    factory.pop("render_mode", None)  # frames for videos change no outcome
    setup["checkpoints"] = [content_digest(resolve_path(str(p["path"]))) for p in setup["compose"]["parents"]]
    if factory.get("path") is not None:  # env=robomimic_dataset: another dataset recorded there is another env
        setup["env_source"] = content_digest(resolve_path(str(factory["path"])))
    setup["maxima"] = "steps only"  # tracked maxima once counted the reset frame: such episodes are another setup
    return hashlib.sha256(repr(sorted(setup.items())).encode()).hexdigest()[:10]


def content_digest(path: Path) -> str:
    """SHA-256 over a file, or over a folder's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class EpisodeStore:
    def __init__(self, path: str | Path, read_only: bool = False):
        """`read_only` opens an existing store without touching the file (a shipped or another run's store)."""
        self.path = Path(path)
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no episode store")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)
        self.db.commit()

    def record(self, setup: str, episode: Episode) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (setup, episode.candidate, episode.seed, int(episode.success), episode.length,
                             json.dumps(episode.maxima), episode.wall_s))

    def done(self, setup: str) -> set[tuple[str, int]]:
        rows = self.db.execute("SELECT candidate, seed FROM episodes WHERE setup = ?", (setup,))
        return {(candidate, seed) for candidate, seed in rows}

    def setups(self) -> list[str]:
        return [setup for (setup,) in self.db.execute("SELECT DISTINCT setup FROM episodes ORDER BY setup")]

    def episodes(self, setup: str, pairs: Iterable[tuple[str, int]] | None = None) -> list[Episode]:
        """Stored episodes of a setup, all of them or those of the given (candidate, seed) pairs."""
        rows = self.db.execute("SELECT candidate, seed, success, length, maxima, wall_s FROM episodes "
                               "WHERE setup = ? ORDER BY rowid", (setup,))
        episodes = [Episode(c, s, bool(ok), n, json.loads(m), w) for c, s, ok, n, m, w in rows]
        if pairs is None:
            return episodes
        wanted = set(pairs)
        return [e for e in episodes if (e.candidate, e.seed) in wanted]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
