"""Shared by the benchmark scripts: timing and randomly initialised policies of the shipped shapes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gpc.normalizer import Normalizer
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "policy"


def median_seconds(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()`; medians resist the noise of a shared 2-core machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_policy(config: str | dict, name: str | None = None) -> Policy:
    """A policy of a shipped (or given) config with random weights and unit-range normalizers."""
    raw = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text()) if isinstance(config, str) else dict(config)
    if name:
        raw["name"] = name
    policy_config = load_policy_config(raw)
    normalizers = {"action": Normalizer.fit(np.array([[0.0] * policy_config.action_dim,
                                                      [512.0] * policy_config.action_dim]))}
    for feature in policy_config.obs:
        if feature.type == "low_dim":
            normalizers[feature.key] = Normalizer.fit(np.array([[0.0] * feature.shape[0], [512.0] * feature.shape[0]]))
    torch.manual_seed(0)
    return Policy(policy_config, normalizers).eval()


def pusht_obs(rows: int, n_obs_steps: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"keypoint": rng.uniform(0, 512, (rows, n_obs_steps, 20)).astype(np.float32),
            "agent_pos": rng.uniform(0, 512, (rows, n_obs_steps, 2)).astype(np.float32),
            "image": rng.integers(0, 255, (rows, n_obs_steps, 96, 96, 3), dtype=np.uint8)}
