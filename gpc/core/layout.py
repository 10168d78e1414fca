"""Where each parent's action chunk sits on the composite chunk, aligned on the current control step."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import torch


class CompositionError(ValueError):
    """Parents that cannot be composed, or weights that do not fit them; `field` is the composition config
    field at fault."""

    def __init__(self, message: str, field: str = "parents"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ChunkLayout:
    """Parent i's chunk index 0 is composite index `starts[i]`; the current control step is composite index
    `action_start`, and `n_action_steps` actions from there are executed."""

    starts: tuple[int, ...]
    length: int
    action_start: int
    n_action_steps: int

    @classmethod
    def of(cls, specs: Sequence, n_action_steps: int | None) -> "ChunkLayout":
        current = max(s.action_start for s in specs)
        starts = tuple(current - s.action_start for s in specs)
        length = max(start + s.horizon for start, s in zip(starts, specs))
        executable = min(start + s.horizon for start, s in zip(starts, specs)) - current
        n = n_action_steps if n_action_steps is not None else min(s.n_action_steps for s in specs)
        if not isinstance(n, numbers.Integral) or not 1 <= n <= executable:
            raise CompositionError(f"n_action_steps={n!r} must be an integer within 1..{executable} "
                                   "(steps every parent predicts from the current one)", "n_action_steps")
        return cls(starts, length, current, n)

    def coverage(self, specs: Sequence) -> torch.Tensor:
        """(P, length) bool: which parent predicts which composite position."""
        cover = torch.zeros(len(specs), self.length, dtype=torch.bool)
        for i, (start, spec) in enumerate(zip(self.starts, specs)):
            cover[i, start:start + spec.horizon] = True
        return cover
