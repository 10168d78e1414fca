"""Composition operators: how the parents' predictions at one denoising step become the next state.

Every operator answers two questions per step: which parents any row needs (`used`), and, given their predictions
in the working sampler's quantity (and, if it asks for them, their scores and divergences), what the next state
is (`advance`). The composer's loop calls nothing else, so a new operator is a new class here.

- `Convex` (GPC): `q = sum_i w_i q_i` per row, weights constant or scheduled over the noise level, then the
  sampler's own step (docs/composition.md, "Operators").
- `Or`, `And`: superposition (Skreta et al., ICLR 2025), weights recomputed every step from running estimates of
  each parent's log-density (gpc.core.superposition holds the math).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from gpc.core.superposition import LogDensityTracker, and_weights, or_weights, score_products, step_integrals

OPERATORS = ("convex", "or", "and")


@dataclass(frozen=True)
class OperatorConfig:
    """How the composer combines parents. `temperature` is OR's T; `probe_scale` is the Hutchinson step h
    relative to the noise level sigma (deterministic samplers only)."""

    name: str = field(default="convex", metadata={"doc": "convex, or, and"})
    temperature: float = field(default=1.0, metadata={"doc": "OR's temperature T"})
    probe_scale: float = field(default=1e-2, metadata={"doc": "AND/OR: divergence probe step, relative to sigma"})

    def __post_init__(self):
        if self.name not in OPERATORS:
            raise ValueError(f"name: unknown operator {self.name!r}; choose from {', '.join(OPERATORS)}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.probe_scale < 1:
            raise ValueError(f"probe_scale: must be within (0, 1), got {self.probe_scale}")

    @property
    def superposed(self) -> bool:
        return self.name != "convex"


def _check_simplex(weights: np.ndarray, n_parents: int, where: str) -> None:
    if weights.shape[-1] != n_parents:
        raise ValueError(f"{where}: {weights.shape[-1]} weights for {n_parents} parents")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"{where}: weights must be finite and >= 0, got {weights.tolist()}")
    if not np.allclose(weights.sum(-1), 1.0, atol=1e-6):
        raise ValueError(f"{where}: weights must sum to 1, got {weights.tolist()}")


@dataclass(frozen=True)
class WeightSchedule:
    """Convex weights as a piecewise-linear function of flow time s (0 = clean, 1 = noise).

    A constant weight vector is a schedule with one knot. `key` names it exactly (episode stores key episodes by
    it); `label` is its short display name.
    """

    knots: tuple[float, ...]
    weights: tuple[tuple[float, ...], ...]

    @classmethod
    def constant(cls, weights: Sequence[float]) -> "WeightSchedule":
        return cls((0.0,), (tuple(float(w) for w in weights),))

    def validate(self, n_parents: int, where: str = "weights") -> None:
        knots = np.asarray(self.knots, dtype=np.float64)
        if len(knots) != len(self.weights) or len(knots) == 0:
            raise ValueError(f"{where}: need one weight vector per knot")
        if np.any(np.diff(knots) <= 0) or knots.min() < 0 or knots.max() > 1:
            raise ValueError(f"{where}: knots must increase strictly within [0, 1], got {knots.tolist()}")
        _check_simplex(np.asarray(self.weights, dtype=np.float64), n_parents, where)

    def at(self, s: float) -> np.ndarray:
        weights = np.asarray(self.weights, dtype=np.float64)
        if len(self.knots) == 1:
            return weights[0]
        return np.array([np.interp(s, self.knots, weights[:, i]) for i in range(weights.shape[1])])

    @property
    def label(self) -> str:
        if len(self.knots) == 1:
            return "w=" + ",".join(f"{w:.3g}" for w in self.weights[0])
        return "schedule=" + ",".join(f"{k:g}:" + "/".join(f"{w:.3g}" for w in ws)
                                      for k, ws in zip(self.knots, self.weights))

    @property
    def key(self) -> str:
        """Exact: every float at full precision (repr), so no two distinct schedules share it."""
        if len(self.knots) == 1:
            return "w=" + ",".join(map(repr, self.weights[0]))
        return "schedule=" + ";".join(f"{k!r}:" + ",".join(map(repr, ws)) for k, ws in zip(self.knots, self.weights))


def as_schedules(candidates) -> list[WeightSchedule]:
    """Accept one weight vector, a list of vectors, or schedules; return K schedules."""
    if isinstance(candidates, WeightSchedule):
        return [candidates]
    candidates = list(candidates)
    if candidates and not isinstance(candidates[0], (WeightSchedule, Sequence, np.ndarray, torch.Tensor)):
        return [WeightSchedule.constant(candidates)]
    return [c if isinstance(c, WeightSchedule) else WeightSchedule.constant(list(map(float, c)))
            for c in candidates]


@dataclass
class Scores:
    """What superposition needs besides the predictions: each parent's score -e / sigma on the working path, and
    (deterministic samplers) its divergence estimate; zeros for parents no row uses."""

    scores: list[torch.Tensor]
    divergences: list[torch.Tensor] | None


class Convex:
    """`q = sum_i w_i q_i` per row; at chunk positions a parent does not cover, its weight is dropped and the
    covering parents' weights renormalized (the paper's rule for different horizons)."""

    needs_scores = False

    def __init__(self, candidates: Sequence[WeightSchedule], coverage: torch.Tensor, row_candidates: torch.Tensor,
                 dtype: torch.dtype):
        self.candidates = list(candidates)
        self.coverage = coverage  # (P, L) bool: which parent predicts which composite chunk position
        self.full_coverage = bool(coverage.all())
        self.row_candidates = row_candidates  # (rows,) candidate index of each row
        self.dtype = dtype
        self._weights: tuple[float, torch.Tensor] | None = None

    def weights(self, s: float) -> torch.Tensor:
        """Effective weights per row, (rows, P), or (rows, P, L) when parents cover different positions."""
        if self._weights is not None and self._weights[0] == s:
            return self._weights[1]
        device = self.row_candidates.device
        w = torch.as_tensor(np.stack([c.at(s) for c in self.candidates]), dtype=self.dtype, device=device)
        w = w[self.row_candidates]
        if not self.full_coverage:
            cover = self.coverage.to(device=device, dtype=self.dtype)
            w = w[:, :, None] * cover[None]
            total = w.sum(1, keepdim=True)
            fallback = cover[None] / cover.sum(0).clamp(min=1)[None, None]
            w = torch.where(total > 0, w / total.clamp(min=torch.finfo(self.dtype).tiny), fallback)
        self._weights = (s, w)
        return w

    def used(self, step) -> list[bool]:
        w = self.weights(step.level.s)
        return [bool((w[:, i] != 0).any()) for i in range(w.shape[1])]

    def advance(self, sampler, step, n: int, x, outputs, scores, generators) -> torch.Tensor:
        return sampler.step(self.combine(outputs, self.weights(step.level.s)), step, x, generators)

    @staticmethod
    def combine(predictions: Sequence[torch.Tensor | None], weights: torch.Tensor) -> torch.Tensor:
        """predictions[i]: (rows, L, D) on the composite chunk (zeros where uncovered) or None if unused."""
        out = None
        for i, q in enumerate(predictions):
            if q is None:
                continue
            w = weights[:, i]
            w = w[:, None, None] if w.dim() == 1 else w[:, :, None]
            term = w * q
            out = term if out is None else out + term
        return out


class Superposed:
    """Shared by OR and AND: the prior (each row's candidate weights), the log-density tracker, and the bookkeeping
    of one step; subclasses choose the per-row weights kappa."""

    needs_scores = True

    def __init__(self, config: OperatorConfig, candidates: Sequence[WeightSchedule], row_candidates: torch.Tensor,
                 n_parents: int, path):
        device = row_candidates.device
        self.config, self.path = config, path
        self.prior = torch.as_tensor(np.stack([c.at(1.0) for c in candidates]), dtype=torch.float64,
                                     device=device)[row_candidates]
        self.participating = [bool((self.prior[:, i] > 0).any()) for i in range(n_parents)]
        self.tracker = LogDensityTracker(len(row_candidates), n_parents, device)

    def used(self, step) -> list[bool]:
        return self.participating

    def advance(self, sampler, step, n: int, x, outputs, scores: Scores, generators) -> torch.Tensor:
        level, next_level = step.level, sampler.landing_level(n)
        tracked = level.alpha > 0  # at pure noise every parent's score is -x / sigma: no difference
        if tracked:
            F, G = step_integrals(self.path, level, next_level)
            constants = self.tracker.step_terms(scores.scores, x, scores.divergences, F, G)
        else:
            constants = torch.zeros_like(self.tracker.log_density)
        x_next = self.step(sampler, step, x, outputs, scores, constants, generators)
        if tracked:
            self.tracker.update(scores.scores, x, x_next, constants)
        return x_next


class Or(Superposed):
    """The mixture of the parents: kappa = softmax(T l + log w), then the sampler's step on the mixed output."""

    def step(self, sampler, step, x, outputs, scores, constants, generators):
        kappa = or_weights(self.tracker.log_density, self.prior, self.config.temperature)
        return sampler.step(mix(outputs, kappa), step, x, generators)


class And(Superposed):
    """kappa makes every participating parent's log-density change by the same amount over the step; the steps
    each parent would take alone are mixed (every step is affine in the model output)."""

    def step(self, sampler, step, x, outputs, scores, constants, generators):
        x_each = sampler.step_each(torch.stack(outputs), step, x, generators)
        kappa = and_weights(self.tracker.log_density, constants, score_products(scores.scores, x_each - x[None]),
                            self.prior > 0)
        return mix(list(x_each), kappa)


def make_operator(config: OperatorConfig, candidates: Sequence[WeightSchedule], coverage: torch.Tensor,
                  row_candidates: torch.Tensor, path, dtype: torch.dtype):
    """The operator for one sampling run (superposition keeps per-run state)."""
    if config.name == "convex":
        return Convex(candidates, coverage, row_candidates, dtype)
    return (Or if config.name == "or" else And)(config, candidates, row_candidates, coverage.shape[0], path)


def mix(tensors: Sequence[torch.Tensor], kappa: torch.Tensor) -> torch.Tensor:
    """sum_i kappa[:, i] * tensors[i]; kappa (rows, P) in float64, tensors (rows, ...). Zero weights add exact
    zeros, so weight 1 on one parent gives that parent's tensor bit for bit."""
    out = None
    for i, t in enumerate(tensors):
        term = kappa[:, i].to(t.dtype).reshape(-1, *([1] * (t.dim() - 1))) * t
        out = term if out is None else out + term
    return out
