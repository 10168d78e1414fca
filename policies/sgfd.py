"""SGFD-style sample reweighting: decorrelate the features that tell training environments apart.

Saliency-Guided Features Decorrelation (Huang et al., NeurIPS 2023), applied to a parent's denoising loss:

1. Random Fourier features lift each dimension of the (detached) observation encoding: u_j = sqrt(2) cos(w z_j + b),
   k draws per dimension, so that zero covariance of the lifted features approaches independence.
2. A small classifier learns, alongside the policy, which training environment a sample comes from. Its
   saliency over encoding dimensions (mean |d log p(env | z) / d z_j|, plain input gradients) marks the
   dimensions that change across environments.
3. Per-sample weights w = B softmax(theta), theta learned from zero in a few Adam steps each update, minimize
   the saliency-weighted squared weighted cross-covariance between the lifted features of every pair of
   dimensions, sum_{i<j} (s_i + s_j) / 2 ||Cov_w(u_i, u_j)||_F^2, plus `concentration` times the KL divergence
   of w / B from uniform (a penalty against putting all weight on a few samples).
4. The policy's per-sample loss is averaged with those weights (detached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from gpc.app.schema import doc


@dataclass
class SGFDConfig:
    """`training.sgfd` of `gpc train`."""

    enabled: bool = field(default=False, metadata=doc("reweight samples (needs meta/env labels in the dataset)"))
    rff_per_dim: int = field(default=5, metadata=doc("Fourier features per encoding dimension", minimum=1))
    inner_steps: int = field(default=20, metadata=doc("Adam steps on the sample weights per update", minimum=0))
    inner_lr: float = field(default=0.05, metadata=doc("learning rate of those steps", positive=True))
    concentration: float = field(default=1.0, metadata=doc("weight of the KL divergence of w / B from uniform",
                                                           minimum=0))
    classifier_lr: float = field(default=1e-3, metadata=doc("learning rate of the environment classifier",
                                                            positive=True))
    classifier_hidden: int = field(default=64, metadata=doc("hidden width of that classifier", minimum=1))
    seed: int = field(default=0, metadata=doc("seeds the Fourier draws and the classifier", minimum=0))


def random_fourier_features(z: torch.Tensor, frequencies: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C, k): sqrt(2) cos(w z_j + b), with k draws of (w, b) for each dimension j."""
    return math.sqrt(2.0) * torch.cos(z[:, :, None] * frequencies + phases)


def weighted_cross_covariance(features: torch.Tensor, weights: torch.Tensor, pair_weights: torch.Tensor
                              ) -> torch.Tensor:
    """sum_{i<j} pair_weights[i, j] ||Cov_w(u_i, u_j)||_F^2 for features (B, C, k) and sample weights (B,)
    (normalized here to sum 1)."""
    B, C, k = features.shape
    p = weights / weights.sum()
    flat = features.reshape(B, C * k)
    centered = flat - p @ flat
    cov = (centered * p[:, None]).T @ centered  # (Ck, Ck)
    per_pair = (cov ** 2).reshape(C, k, C, k).sum(dim=(1, 3))  # (C, C): squared Frobenius norm of each block
    off_diagonal = ~torch.eye(C, dtype=torch.bool, device=features.device)
    return 0.5 * (pair_weights * per_pair)[off_diagonal].sum()


def saliency(classifier: nn.Module, z: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Mean |d log p(env | z) / d z_j| over the batch, normalized to mean 1: (C,)."""
    z = z.detach().requires_grad_(True)
    log_p = torch.log_softmax(classifier(z), dim=-1).gather(1, env[:, None]).sum()
    (grad,) = torch.autograd.grad(log_p, z)
    s = grad.abs().mean(0)
    return s / s.mean().clamp(min=1e-12)


class SGFD:
    """Holds the environment classifier and the Fourier draws; gives per-sample weights for each batch.
    `modules()` is what a resumed run must restore (the classifier and its optimizer)."""

    def __init__(self, config: SGFDConfig, encoding_dim: int, n_envs: int, device: torch.device | str = "cpu"):
        if n_envs < 2:
            raise ValueError(f"sgfd: needs episodes from at least 2 environments (meta/env), got {n_envs}")
        self.config = config
        g = torch.Generator().manual_seed(config.seed)
        self.frequencies = torch.randn(encoding_dim, config.rff_per_dim, generator=g).to(device)
        self.phases = (2 * math.pi * torch.rand(encoding_dim, config.rff_per_dim, generator=g)).to(device)
        torch.manual_seed(config.seed)
        self.classifier = nn.Sequential(nn.Linear(encoding_dim, config.classifier_hidden), nn.ReLU(),
                                        nn.Linear(config.classifier_hidden, n_envs)).to(device)
        self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=config.classifier_lr)

    def weights(self, encoding: torch.Tensor, env: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Sample weights (B,) with mean 1 for this batch, and what to log."""
        z, env = encoding.detach(), env.to(encoding.device)
        logits = self.classifier(z)
        classifier_loss = nn.functional.cross_entropy(logits, env)
        self.optimizer.zero_grad(set_to_none=True)
        classifier_loss.backward()
        self.optimizer.step()
        s = saliency(self.classifier, z, env)
        pair_weights = 0.5 * (s[:, None] + s[None, :])
        features = random_fourier_features(z, self.frequencies, self.phases)
        B = z.shape[0]
        theta = torch.zeros(B, device=z.device, requires_grad=True)
        inner = torch.optim.Adam([theta], lr=self.config.inner_lr)
        with torch.no_grad():
            before = weighted_cross_covariance(features, torch.ones(B, device=z.device), pair_weights).item()
        for _ in range(self.config.inner_steps):
            p = torch.softmax(theta, 0)
            kl_to_uniform = (p * (p * B).clamp(min=1e-12).log()).sum()
            loss = weighted_cross_covariance(features, p, pair_weights) + self.config.concentration * kl_to_uniform
            inner.zero_grad(set_to_none=True)
            loss.backward()
            inner.step()
        with torch.no_grad():
            p = torch.softmax(theta, 0)
            after = weighted_cross_covariance(features, p, pair_weights).item()
            entropy = -(p * p.clamp(min=1e-12).log()).sum().item() / math.log(B)
            accuracy = (logits.argmax(-1) == env).float().mean().item()
        stats = {"decorrelation_before": before, "decorrelation_after": after, "weight_entropy": entropy,
                 "env_classifier_loss": classifier_loss.item(), "env_classifier_accuracy": accuracy}
        return (p * B).detach(), stats


def weighted_loss(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The batch loss: the plain mean without SGFD, the weighted mean with it."""
    return per_sample.mean() if weights is None else (weights * per_sample).mean()
