"""Composition operators: how parents' predictions become one (COMPOSITION.md section 4).

The convex operator takes K weight candidates, each a point on the simplex or a schedule of such points
over the noise level, and combines all parents' predictions for every (row, candidate) in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


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

    A constant weight vector is a schedule with one knot.
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


def as_schedules(candidates) -> list[WeightSchedule]:
    """Accept one weight vector, a list of vectors, or schedules; return K schedules."""
    if isinstance(candidates, WeightSchedule):
        return [candidates]
    candidates = list(candidates)
    if candidates and not isinstance(candidates[0], (WeightSchedule, Sequence, np.ndarray, torch.Tensor)):
        return [WeightSchedule.constant(candidates)]
    return [c if isinstance(c, WeightSchedule) else WeightSchedule.constant(list(map(float, c)))
            for c in candidates]


class Convex:
    """`q = sum_i w_i q_i` per row; at chunk positions a parent does not cover, its weight is dropped and the
    covering parents' weights renormalized (the paper's rule for different horizons)."""

    def __init__(self, candidates: Sequence[WeightSchedule], coverage: torch.Tensor, row_candidates: torch.Tensor):
        self.candidates = list(candidates)
        self.coverage = coverage  # (P, L) bool: which parent predicts which composite chunk position
        self.full_coverage = bool(coverage.all())
        self.row_candidates = row_candidates  # (rows,) candidate index of each row

    def weights(self, s: float, dtype, device) -> torch.Tensor:
        """Effective weights per row, (rows, P), or (rows, P, L) when parents cover different positions."""
        w = torch.as_tensor(np.stack([c.at(s) for c in self.candidates]), dtype=dtype, device=device)
        w = w[self.row_candidates]
        if self.full_coverage:
            return w
        cover = self.coverage.to(device=device, dtype=dtype)
        w = w[:, :, None] * cover[None]
        total = w.sum(1, keepdim=True)
        fallback = cover[None] / cover.sum(0).clamp(min=1)[None, None]
        return torch.where(total > 0, w / total.clamp(min=torch.finfo(dtype).tiny), fallback)

    def combine(self, predictions: Sequence[torch.Tensor | None], weights: torch.Tensor) -> torch.Tensor:
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
