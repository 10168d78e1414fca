"""Replace a folder as one step, so a crash mid-write never leaves a half-written checkpoint or dataset."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def replace_directory(complete: Path, target: Path) -> None:
    """Move the fully written folder `complete` to `target`, replacing what is there."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(complete, target)
        shutil.rmtree(old)
    else:
        os.replace(complete, target)
