"""Per-dimension affine normalizers that travel with a policy.

Composition happens in one normalized action space, so a normalizer is part of a parent's contract:
two parents compose exactly only when their action normalizers agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MODES = ("limits", "gaussian")


@dataclass(frozen=True)
class Normalizer:
    """`normalized = (x - offset) / scale`, per feature dimension (the last axis).

    `limits` maps the data range to [-1, 1] (Diffusion Policy's default); `gaussian` to zero mean, unit
    variance.
    """

    offset: np.ndarray
    scale: np.ndarray
    mode: str = "limits"

    @classmethod
    def fit(cls, data: np.ndarray, mode: str = "limits", eps: float = 1e-4) -> "Normalizer":
        if mode not in MODES:
            raise ValueError(f"normalizer mode must be one of {MODES}, got {mode!r}")
        flat = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        if mode == "limits":
            lo, hi = flat.min(axis=0), flat.max(axis=0)
            offset, scale = (hi + lo) / 2, (hi - lo) / 2
        else:
            offset, scale = flat.mean(axis=0), flat.std(axis=0)
        # Constant dimensions are passed through unscaled rather than blown up.
        scale = np.where(scale < eps, 1.0, scale)
        return cls(offset.astype(np.float32), scale.astype(np.float32), mode)

    @classmethod
    def identity(cls, dim: int) -> "Normalizer":
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32), "limits")

    @property
    def dim(self) -> int:
        return int(self.offset.shape[-1])

    def normalize(self, x):
        offset, scale = self._like(x)
        return (x - offset) / scale

    def unnormalize(self, x):
        offset, scale = self._like(x)
        return x * scale + offset

    def _like(self, x):
        if isinstance(x, torch.Tensor):
            return (torch.as_tensor(self.offset, dtype=x.dtype, device=x.device),
                    torch.as_tensor(self.scale, dtype=x.dtype, device=x.device))
        return self.offset, self.scale

    def allclose(self, other: "Normalizer", rtol: float = 1e-4, atol: float = 1e-6) -> bool:
        return (self.offset.shape == other.offset.shape
                and np.allclose(self.offset, other.offset, rtol=rtol, atol=atol)
                and np.allclose(self.scale, other.scale, rtol=rtol, atol=atol))

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Tensors for a safetensors file; the mode goes into the checkpoint's config."""
        return {f"{prefix}offset": torch.from_numpy(self.offset.copy()),
                f"{prefix}scale": torch.from_numpy(self.scale.copy())}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], prefix: str = "",
                        mode: str = "limits") -> "Normalizer":
        return cls(tensors[f"{prefix}offset"].numpy().astype(np.float32),
                   tensors[f"{prefix}scale"].numpy().astype(np.float32), mode)
