"""Shared by the benchmark scripts: timing and randomly initialised policies of the shipped shapes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from gpc.core.normalizer import Normalizer
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "policy"


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, baseline: str, warmup: int = 1
                ) -> dict[str, dict[str, float]]:
    """Time configurations interleaved: every round runs each once, in an order rotated round by round (A B C,
    B C A, ...), so that a shared machine's slow spells fall on all of them alike. Returns, per configuration, the
    median seconds and the ratio of its time to the baseline's taken round by round, as median and quartiles:
    identical code then reads about 1.00 with a narrow spread, where back-to-back blocks drift apart."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    summary = {}
    for name in names:
        ratios = [t / b for t, b in zip(seconds[name], seconds[baseline])]
        q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        summary[name] = {"seconds": statistics.median(seconds[name]), "ratio": median, "ratio_q1": q1,
                         "ratio_q3": q3}
    return summary


def ratio_text(row: dict[str, float]) -> str:
    return f"{row['ratio']:.2f}x [{row['ratio_q1']:.2f}, {row['ratio_q3']:.2f}]"


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
