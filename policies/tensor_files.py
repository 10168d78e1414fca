"""Reading safetensors files a checkpoint holds, with one error naming the file when one is damaged."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError, safe_open


@contextmanager
def open_tensors(path: str | Path, framework: str = "pt") -> Iterator:
    """safetensors' `safe_open`; a truncated or foreign file is a ValueError naming it, not safetensors' own."""
    try:
        with safe_open(str(path), framework) as stored:
            yield stored
    except SafetensorError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a readable safetensors file ({reason})") from None


def load_tensors(path: str | Path, framework: str = "pt") -> dict:
    """Every tensor of the file, as `framework` arrays ("pt" or "numpy")."""
    with open_tensors(path, framework) as stored:
        return {name: stored.get_tensor(name) for name in stored.keys()}
