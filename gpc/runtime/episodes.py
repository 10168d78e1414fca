"""Finished episodes in a SQLite database, one row each, committed as the episode ends.

A crash (even SIGKILL) loses at most the episodes still running: WAL mode with `synchronous=FULL` makes
every committed row durable. Rows are keyed by (setup, candidate, seed); `setup` is a hash of everything
that decides an episode's outcome (parents' files and settings, sampler, env) so a rerun reuses only
comparable episodes: a parent trained again into the same folder starts a new setup.
A row, once written, is never changed: recording the same key again is ignored.

A file that is not such a store (not SQLite, empty, damaged, without the `episodes` table or with other
columns, locked, unreadable) is refused with a StoreError naming it, before anything is written to it: gpc
never repairs, replaces or deletes it. A store written before episodes recorded why they ended (no `reason`
column) is read as it is; opened for writing, it gains the column (its rows' reasons stay unknown).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from gpc.errors import ConfigError

NON_FINITE_ACTION = "non_finite_action"


@dataclass
class Episode:
    """One finished episode. `candidate` is its weights' exact key (WeightSchedule.key); `display_name` shows it."""

    candidate: str
    seed: int
    success: bool
    length: int
    maxima: dict[str, float] = field(default_factory=dict)
    wall_s: float = field(default=0.0, compare=False)  # from its wave's start to its end
    # Why it ended: success, terminated (by the env, without success), truncated (by the env), time_limit
    # (env.max_steps) or non_finite_action; None where unknown (stored before reasons were recorded).
    reason: str | None = None


def display_name(candidate: str) -> str:
    """A candidate key as a short label ("w=0.5,0.5"); labels of stores written before exact keys pass as they are."""
    if candidate.startswith("w=") and "," in candidate:
        try:
            return "w=" + ",".join(f"{float(w):.3g}" for w in candidate[2:].split(","))
        except ValueError:
            return candidate
    return candidate

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    setup TEXT NOT NULL,
    candidate TEXT NOT NULL,
    seed INTEGER NOT NULL,
    success INTEGER NOT NULL,
    length INTEGER NOT NULL,
    maxima TEXT NOT NULL,
    wall_s REAL NOT NULL,
    reason TEXT,
    PRIMARY KEY (setup, candidate, seed)
)
"""
COLUMNS = ("setup", "candidate", "seed", "success", "length", "maxima", "wall_s", "reason")
FIRST_COLUMNS = COLUMNS[:-1]  # the schema before `reason`
KEY = ("setup", "candidate", "seed")
LOCK_WAIT_S = 30.0  # how long to wait for another process's write lock before refusing the store
SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(ConfigError):
    """A file where an episode store should be that gpc cannot use; the message names it (and the config field
    that named its folder, where given)."""


def check_store(path: str | Path, where: str = "") -> None:
    """Refuse (StoreError, starting with `where`) an existing file at `path` that is no usable episode store,
    by reading it only; a missing one is fine (a new store). For a check before a run creates any output."""
    if not os.path.lexists(path):
        return
    try:
        db, _ = _open_checked(Path(path), read_only=False)  # a writer's connection removes SQLite's -wal on close
    except StoreError as err:
        raise StoreError(f"{where}: {err}" if where else str(err)) from None
    db.close()


class EpisodeStore:
    def __init__(self, path: str | Path, read_only: bool = False, where: str = ""):
        """`read_only` opens an existing store without touching the file (a shipped or another run's store).
        Otherwise a missing store is created whole (a kill never leaves an empty or half-made one) and an
        existing one is checked, then migrated to the current schema. A refusal starts with `where` (the
        config field that named the store's folder)."""
        self.path = Path(path)
        if read_only and not os.path.lexists(self.path):
            raise FileNotFoundError(f"{self.path}: no episode store")
        try:
            self.db, self.columns = self._open(read_only)
        except StoreError as err:
            raise StoreError(f"{where}: {err}" if where else str(err)) from None

    def _open(self, read_only: bool) -> tuple[sqlite3.Connection, tuple[str, ...]]:
        if not os.path.lexists(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create(self.path)
        db, columns = _open_checked(self.path, read_only)
        if read_only:
            return db, columns
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if columns == FIRST_COLUMNS:  # one statement: the column is added whole or not at all
                db.execute("ALTER TABLE episodes ADD COLUMN reason TEXT")
        except sqlite3.Error as err:
            db.close()
            raise _refusal(self.path, err) from None
        return db, COLUMNS

    def record(self, setup: str, episode: Episode) -> None:
        with self.db:
            self.db.execute(f"INSERT OR IGNORE INTO episodes ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (setup, episode.candidate, episode.seed, int(episode.success), episode.length,
                             json.dumps(episode.maxima), episode.wall_s, episode.reason))

    def done(self, setup: str) -> set[tuple[str, int]]:
        rows = self.db.execute("SELECT candidate, seed FROM episodes WHERE setup = ?", (setup,))
        return {(candidate, seed) for candidate, seed in rows}

    def setups(self) -> list[str]:
        return [setup for (setup,) in self.db.execute("SELECT DISTINCT setup FROM episodes ORDER BY setup")]

    def episodes(self, setup: str, pairs: Iterable[tuple[str, int]] | None = None) -> list[Episode]:
        """Stored episodes of a setup, all of them or those of the given (candidate, seed) pairs."""
        reason = "reason" if "reason" in self.columns else "NULL"  # a store of the first schema, read only
        rows = self.db.execute(f"SELECT candidate, seed, success, length, maxima, wall_s, {reason} FROM episodes "
                               "WHERE setup = ? ORDER BY rowid", (setup,))
        episodes = [Episode(c, s, bool(ok), n, json.loads(m), w, r) for c, s, ok, n, m, w, r in rows]
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


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates the file unless `mode` is rwc (a URI: `?` or `#` in a path stay literal)."""
    return sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode={mode}", uri=True, timeout=LOCK_WAIT_S)


def _create(path: Path) -> None:
    """A new, empty store at `path`, made beside it and linked into place once complete; if another process
    created one there meanwhile, that one stands."""
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        db = _connect(partial, "rwc")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.commit()
        finally:
            db.close()  # the last connection folds the WAL into the file and removes it
        try:
            os.link(partial, path)  # fails where a file exists: never replaces one
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not os.path.lexists(path):
                os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _open_checked(path: Path, read_only: bool) -> tuple[sqlite3.Connection, tuple[str, ...]]:
    """A connection to the store at `path`, checked by reading only, and its table's columns."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
    except IsADirectoryError:
        raise StoreError(f"{path}: is a folder, not an episode store") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot be read ({err.strerror or err}); gpc left it as it is") from None
    if not header:
        raise StoreError(f"{path}: is empty (0 bytes), not an episode store; gpc left it as it is: move it away "
                         "or use another folder")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: is not an SQLite database, so not an episode store; gpc left it as it is: move "
                         "it away or use another folder")
    # SQLite opens a WAL-mode file with -wal and -shm files beside it; a refusal removes those it made.
    made = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm") if not os.path.lexists(f"{path}{suffix}")]
    db = None
    try:
        db = _connect(path, "ro" if read_only else "rw")
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(f"{path}: is damaged ({problems[0]}); gpc left it as it is: move it away or use "
                             "another folder")
        return db, _checked_columns(db, path)
    except (sqlite3.Error, StoreError) as err:
        if db is not None:
            db.close()
        for sibling in made:
            sibling.unlink(missing_ok=True)
        raise err if isinstance(err, StoreError) else _refusal(path, err) from None


def _checked_columns(db: sqlite3.Connection, path: Path) -> tuple[str, ...]:
    info = db.execute("PRAGMA table_info(episodes)").fetchall()  # (cid, name, type, notnull, default, pk)
    if not info:
        raise StoreError(f"{path}: has no episodes table, so it is no episode store; gpc left it as it is: move it "
                         "away or use another folder")
    columns = tuple(row[1] for row in info)
    key = tuple(row[1] for row in sorted(info, key=lambda row: row[5]) if row[5])
    if columns not in (COLUMNS, FIRST_COLUMNS) or key != KEY:
        raise StoreError(f"{path}: its episodes table has columns ({', '.join(columns)}), not an episode store's "
                         f"({', '.join(COLUMNS)}; key {', '.join(KEY)}); gpc left it as it is: move it away or use "
                         "another folder")
    return columns


def _refusal(path: Path, err: sqlite3.Error) -> StoreError:
    """SQLite's own error at `path` as a refusal that names the file."""
    message = str(err)
    if "locked" in message or "busy" in message:
        return StoreError(f"{path}: is locked by another process ({message}); wait for it or use another folder")
    if "readonly" in message or "read-only" in message:
        return StoreError(f"{path}: cannot be written ({message}); gpc left it as it is")
    return StoreError(f"{path}: is not a usable episode store ({message}); gpc left it as it is: move it away or "
                      "use another folder")
