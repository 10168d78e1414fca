"""The output folder of a command that writes (eval, search, train), checked before anything is created.

A run refused for its output folder must leave nothing behind, and should fail before its slow work, so each
command calls `check_output_dir` as soon as it has read its config.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpc.errors import ConfigError


def check_output_dir(path, source: str, field: str = "output_dir") -> Path:
    """`path` as a Path if a folder can be there: it is a writable folder, or the nearest thing that exists
    above it is one. Else ConfigError naming `field` and the path; nothing is created either way."""
    if isinstance(path, bool) or not isinstance(path, (str, int, os.PathLike)) or not str(path):
        raise ConfigError(f"{source}: {field}: need a folder path, got {path!r}")
    out = Path(path).expanduser()
    existing = out
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    where = f"{out}" if existing == out else f"{out} lies below {existing}, which"
    if os.path.islink(existing) and not existing.exists():
        raise ConfigError(f"{source}: {field}: {where} is a broken link")
    if not existing.is_dir():
        raise ConfigError(f"{source}: {field}: {where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == out:
            raise ConfigError(f"{source}: {field}: {out} is a folder this user cannot write to")
        raise ConfigError(f"{source}: {field}: {out} cannot be created: {existing} is a folder this user cannot "
                          "write to")
    return out
