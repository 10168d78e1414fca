"""Replace a file or a folder as one step, so a crash mid-write never leaves a half-written report, checkpoint
or dataset."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def replace_directory(complete: Path, target: Path) -> None:
    """Move the fully written folder `complete` to `target`, replacing what is there."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(complete, target)
        shutil.rmtree(old)
    else:
        os.replace(complete, target)


@contextmanager
def whole_file(path: Path) -> Iterator[Path]:
    """A sibling path to write, renamed over `path` when the block ends without error (and removed if it
    fails): readers see the old file or the new one. The sibling keeps `path`'s suffix for writers that
    read the format from it (matplotlib)."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_whole(path: Path, text: str) -> None:
    with whole_file(path) as partial:
        partial.write_text(text)
