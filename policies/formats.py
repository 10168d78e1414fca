"""Checkpoint formats a composition may name, each a loader `(path, device, **options) -> parent`.

A parent entry's `format:` picks one by name; without it the format is recognized from the files. Installed
packages add formats through the `gpc.loaders` entry point group (an entry point naming a `Format`), so a new
parent kind plugs in without touching gpc. Loading never runs code a checkpoint names: pickles are read only
through an allowlist (Diffusion Policy's `.ckpt`), and anything beyond it needs the entry's `trust: true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "gpc.loaders"


@dataclass(frozen=True)
class Format:
    """`loader` is a dotted `module:function`, imported only when the format is used; `options` are the parent
    entry's keys the loader takes besides the path and the device."""

    name: str
    loader: str
    describe: str
    recognize: Callable[[Path], bool]
    options: tuple[str, ...] = ()

    def load(self, path: Path, device: str, **options):
        module, function = self.loader.split(":")
        return getattr(import_module(module), function)(path, device=device, **options)


def _gpc_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / "denoiser.onnx").is_file()


def _onnx_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "denoiser.onnx").is_file()


def _lerobot_folder(path: Path) -> bool:
    from gpc.policies.lerobot.configuration import is_lerobot_folder

    return path.is_dir() and is_lerobot_folder(path)


def _pickle_file(path: Path) -> bool:
    return path.is_file() and path.suffix in (".ckpt", ".pt", ".pth")


BUILTIN = (
    Format("gpc", "gpc.policies.checkpoint:load_policy", "gpc checkpoint folder (config.yaml + model.safetensors)",
           _gpc_folder, ("action_stats",)),
    Format("gpc_onnx", "gpc.policies.onnx:load_onnx_policy", "gpc ONNX export (config.yaml + encoder/denoiser.onnx)",
           _onnx_folder, ("action_stats",)),
    Format("lerobot", "gpc.policies.lerobot.modeling:load_lerobot",
           "LeRobot save_pretrained folder (config.json + model.safetensors + processor files)", _lerobot_folder),
    Format("diffusion_policy", "gpc.policies.diffusion_policy.checkpoint:load_diffusion_policy",
           "Diffusion Policy workspace checkpoint (.ckpt)", _pickle_file, ("trust",)),
)


def registered() -> dict[str, Format]:
    """Built-in formats, then those installed packages register (a built-in name cannot be taken over)."""
    formats = {f.name: f for f in BUILTIN}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in formats:
            formats[entry.name] = _EntryPointFormat(entry)
    return formats


class _EntryPointFormat:
    """A format from another package, imported only when a composition names it."""

    def __init__(self, entry):
        self.entry, self.name, self.options = entry, entry.name, ("*",)
        self.describe = f"registered by {entry.value}"

    def recognize(self, path: Path) -> bool:
        return False

    def load(self, path: Path, device: str, **options):
        target = self.entry.load()
        loader = target.load if isinstance(target, Format) else target
        return loader(path, device=device, **options)


def recognize(path: Path) -> Format | None:
    """The built-in format whose files are at `path`, if any."""
    return next((f for f in BUILTIN if f.recognize(path)), None)
