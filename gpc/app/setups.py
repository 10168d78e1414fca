"""Which episodes are comparable: a hash of everything that decides an episode's outcome."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gpc.app.config import resolve_path


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
    setup["candidates"] = "exact keys"  # episodes were once keyed by 3-digit labels: such episodes are another setup
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
