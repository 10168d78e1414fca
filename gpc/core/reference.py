"""Gaussian parents with closed-form predictions: the reference against which composition is checked.

For actions `a ~ N(mu + shift(obs), Sigma)` over the flattened chunk, the noised state
`x = alpha a + sigma e` is Gaussian too, so the exact posterior means E[e | x] and E[a | x] (and hence every
parameterization) are closed form on any path, at any (fractional) noise level.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from gpc.core.contract import ParentSpec
from gpc.core.normalizer import Normalizer
from gpc.core.paths import NoisePath
from gpc.core.predictions import from_noise_and_action


class GaussianParent:
    """A parent whose network is the exact denoiser of a Gaussian action distribution.

    `obs["shift"]` (rows, horizon, action_dim), if given, moves the mean per row, so that different
    observations get different answers.
    """

    def __init__(self, name: str, path: NoisePath, prediction_type: str, mean: np.ndarray, cov: np.ndarray,
                 n_obs_steps: int = 1, n_action_steps: int | None = None, normalizer: Normalizer | None = None):
        mean = np.asarray(mean, dtype=np.float64)
        horizon, action_dim = mean.shape
        self.mean = torch.as_tensor(mean.reshape(-1))
        self.cov = torch.as_tensor(np.asarray(cov, dtype=np.float64))
        self.spec = ParentSpec(name, path, prediction_type, action_dim, horizon, n_obs_steps,
                               n_action_steps or horizon - n_obs_steps + 1,
                               normalizer or Normalizer.identity(action_dim))

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs["shift"]), dtype=torch.float64).flatten(1)

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        level = self.spec.path.level(float(timestep[0]))
        x = sample.reshape(sample.shape[0], -1).to(torch.float64)
        mean = self.mean + encoding
        n = self.cov.shape[0]
        marginal_cov = level.alpha ** 2 * self.cov + level.sigma ** 2 * torch.eye(n, dtype=torch.float64)
        residual = torch.linalg.solve(marginal_cov, (x - level.alpha * mean).T).T  # C^-1 (x - alpha mu)
        e = level.sigma * residual
        a = mean + level.alpha * residual @ self.cov.T
        if self.spec.prediction_type == "velocity":
            out = self.spec.path.velocity_sign * (e - a)
        else:
            out = from_noise_and_action(e, a, self.spec.prediction_type, level)
        return out.reshape(sample.shape).to(sample.dtype)
