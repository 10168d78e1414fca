"""Inputs the bad-input cases share: tiny checkpoints and the command lines that point at them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def tiny_checkpoint(path: Path, name: str, action_dim: int = 2, kind: str = "diffusion", scale: float = 512.0):
    from gpc.core.normalizer import Normalizer
    from gpc.policies.checkpoint import save_policy
    from gpc.policies.configuration import load_policy_config
    from gpc.policies.modeling import Policy

    config = load_policy_config({
        "name": name, "obs": [{"key": "keypoint", "type": "low_dim", "shape": [20]}], "action_dim": action_dim,
        "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4,
        "denoiser": {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16},
        "objective": {"kind": kind, "prediction_type": "epsilon" if kind == "diffusion" else "velocity"}})
    low = np.zeros(action_dim)
    high = np.full(action_dim, scale) * (np.arange(action_dim) + 1 if scale != 512.0 else 1)
    normalizers = {"action": Normalizer.fit(np.stack([low, high]).astype(np.float32)),
                   "keypoint": Normalizer.fit(np.array([[0.0] * 20, [512.0] * 20]))}
    return save_policy(Policy(config, normalizers), path)


def compose_arg(*paths, extra: str = "") -> str:
    """`compose.parents=[{path: ...}, ...]` on the command line."""
    entries = ",".join("{path: '%s'%s}" % (p, extra) for p in paths)
    return f"compose.parents=[{entries}]"


def small_eval(*args: str) -> list[str]:
    return ["eval", "episodes=1", "env.max_steps=8", "env.n_envs=1", "progress=false", *args]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path
