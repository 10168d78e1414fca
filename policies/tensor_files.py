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


def load_matching(module, tensors: dict, where: str, network: str, optional: tuple[str, ...] = ()) -> None:
    """Load `tensors` into `module` only if they are its tensors by name and shape (names starting with `optional`
    may be absent): a checkpoint written for another network is one ValueError naming the file, never a partial
    load or torch's multi-line report."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in tensors and not k.startswith(optional))
    unexpected = sorted(k for k in tensors if k not in own)
    if missing or unexpected:
        raise ValueError(f"{where}: tensors do not match {network}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"{where}: {name}: shape {tuple(tensor.shape)}, {network} needs {tuple(own[name].shape)}")
    module.load_state_dict(tensors, strict=not optional)
