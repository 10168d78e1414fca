"""How far the `normalizers: approximate` composition strays, against the spread of per-dimension scales.

Two Gaussian parents (closed-form predictions, gpc.core.reference; diffusion, epsilon, cosine 100 steps) describe
one action distribution in env units: one normalized as the working parent is, one normalized with
per-dimension scales spread^-1/2 and spread^1/2 (and an offset). At weight 1 on the moved parent, the
approximation is compared with the exact parent from the same noise (per sample) and with the true
distribution (mean and standard deviation of 4096 samples), all in units of the action's standard deviation.

    python benchmarks/normalizer_mismatch.py
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from gpc.core.composer import Composer, make_generators
from gpc.core.normalizer import Normalizer
from gpc.core.paths import FlowPath, VPSchedule
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig

H, D = 4, 2
WORKING = Normalizer(np.array([0.125, -0.25], np.float32), np.array([0.5, 0.5], np.float32))
SAMPLERS = {"DDIM 10 (cos 100)": SamplerConfig("ddim", 10, VPSchedule(100, "squaredcos_cap_v2")),
            "flow Euler 10": SamplerConfig("flow_euler", 10)}
MOVED = (VPSchedule(100, "squaredcos_cap_v2"), "epsilon")  # a Diffusion Policy-style parent


def problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(H * D, H * D))
    return rng.normal(size=(H, D)), 0.3 * (m @ m.T / (H * D) + 0.3 * np.eye(H * D))


def moved(mean, cov, scale, shift):
    c = np.tile(np.asarray(scale, np.float64), H)
    normalizer = Normalizer((WORKING.offset - np.asarray(shift) * WORKING.scale / scale).astype(np.float32),
                            (WORKING.scale / np.asarray(scale)).astype(np.float32))
    return GaussianParent("moved", *MOVED, mean * scale + shift, c[:, None] * cov * c[None, :],
                          normalizer=normalizer)


def env_actions(parents, sampler, seeds, normalizers="exact"):
    composer = Composer(parents, sampler, normalizers=normalizers, dtype=torch.float64)
    encodings = composer.encode({"shift": torch.zeros(len(seeds), H, D)})
    return composer.normalizer.unnormalize(composer.sample(encodings, [0.0, 1.0], make_generators(seeds, 1)))


def measure(spread: float, sampler: SamplerConfig, n: int, mean, cov) -> tuple[float, float, float]:
    scale = [spread ** -0.5, spread ** 0.5]
    first = GaussianParent("first", FlowPath(), "velocity", np.zeros((H, D)), np.eye(H * D), normalizer=WORKING)
    exact_parent = GaussianParent("exact", *MOVED, mean, cov, normalizer=WORKING)
    seeds = list(range(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        approx = env_actions([first, moved(mean, cov, scale, [0.2, 0.1])], sampler, seeds, "approximate")
        exact = env_actions([first, exact_parent], sampler, seeds)
    std = torch.as_tensor(np.sqrt(np.diag(cov)).reshape(H, D) * WORKING.scale)
    true_mean = torch.as_tensor(mean * WORKING.scale + WORKING.offset)
    per_sample = float(((approx - exact).abs() / std).mean())
    mean_error = float(((approx.mean(0) - true_mean).abs() / std).mean())
    std_error = float(((approx.std(0) - std).abs() / std).mean())
    return per_sample, mean_error, std_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mean, cov = problem()
    spreads = (1.0, 1.1, 1.25, 1.5, 2.0, 4.0, 10.0)
    print("| working sampler | scale spread max(c)/min(c) | per-sample error | mean error | std error |")
    print("|---|---|---|---|---|")
    for sampler_name, sampler in SAMPLERS.items():
        for spread in spreads:
            per_sample, mean_error, std_error = measure(spread, sampler, args.samples, mean, cov)
            print(f"| {sampler_name} | {spread:g} | {per_sample:.4f} | {mean_error:.4f} | {std_error:.4f} |",
                  flush=True)
    print(f"(errors in units of the action's standard deviation, averaged over the chunk; {args.samples} samples; "
          "the mean and std errors include sampling noise of about 1/sqrt(samples) and the working sampler's own "
          "10-step discretization, which the spread-1 rows show)")


if __name__ == "__main__":
    main()
