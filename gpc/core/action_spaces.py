"""Parents whose action normalizers differ: the map from the working action space into each parent's.

The composer works in the first parent's normalized action space. A parent normalized with other statistics
sees the same env action as `a_i = c * a + d` per dimension (c = s_w / s_i, d = (o_w - o_i) / s_i for
normalizers `(x - o) / s`). On a working state `x = alpha a + sigma e`, the state

    y = c x + alpha d = alpha a_i + (c sigma) e

is the parent's own kind of state when c is one number: its noise level is (alpha, c sigma), whose
signal-to-noise ratio picks the parent's timestep exactly as for any other parent (gpc.core.paths.align), and
its prediction (e_i, a_i) maps back as e = e_i, a = (a_i - d) / c. An offset alone, or a scale equal on every
dimension, is therefore composed exactly. A scale that differs per dimension is not: the network takes one
noise level per call, while dimension j carries c_j sigma. `approximate` queries it at the geometric mean
c_bar, maps its (e_i, a_i) back as above and keeps their difference, the velocity e - a, re-deriving the pair
from it and the working state (the rule that strayed least of four measured); docs/composition.md tabulates the
error against the spread max(c) / min(c) (benchmarks/normalizer_mismatch.py).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

# Scale ratios within this relative spread count as one scale: float32 statistics of the same data agree to
# about 1e-7.
UNIFORM_RTOL = 1e-6


class ActionSpaceError(ValueError):
    """Normalizers that cannot be composed as asked."""


@dataclass(frozen=True)
class ActionMap:
    """a_parent = scale * a_working + shift, per action dimension; `noise_scale` is the one factor on sigma the
    parent is told (exact when `exact`)."""

    scale: torch.Tensor
    shift: torch.Tensor
    noise_scale: float
    exact: bool

    def to_parent(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return x * self.scale.to(x) + alpha * self.shift.to(x)

    def action_to_working(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.shift.to(a)) / self.scale.to(a)


def action_maps(parents: Sequence, mode: str = "exact") -> list[ActionMap | None]:
    """Each parent's map from the first parent's normalized actions (None where they agree). `mode` "exact"
    refuses per-dimension scales; "approximate" allows them with a warning that states their spread."""
    working = parents[0].spec.normalizer
    maps: list[ActionMap | None] = [None]
    for parent in parents[1:]:
        own = parent.spec.normalizer
        if own.allclose(working):
            maps.append(None)
            continue
        o_w, s_w = working.offset.astype(np.float64), working.scale.astype(np.float64)
        o_i, s_i = own.offset.astype(np.float64), own.scale.astype(np.float64)
        scale, shift = s_w / s_i, (o_w - o_i) / s_i
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(shift))):
            raise ActionSpaceError(f"parent {parent.spec.name!r}: its action normalizer is not an invertible map of "
                                   f"{parents[0].spec.name!r}'s (scale ratios {scale.tolist()})")
        spread = float(scale.max() / scale.min())
        exact = spread - 1 <= UNIFORM_RTOL
        if not exact:
            message = (f"parent {parent.spec.name!r} normalizes actions with a per-dimension scale {spread:.3g}x "
                       f"apart from {parents[0].spec.name!r}'s (ratios {np.round(scale, 4).tolist()})")
            if mode != "approximate":
                raise ActionSpaceError(f"{message}: one noise level per network call cannot match every dimension; "
                                       "set `normalizers: approximate` to compose at the geometric-mean level")
            warnings.warn(f"{message}: composed approximately at the geometric-mean noise level", stacklevel=3)
        maps.append(ActionMap(torch.as_tensor(scale), torch.as_tensor(shift),
                              float(math.exp(np.log(scale).mean())), exact))
    return maps
