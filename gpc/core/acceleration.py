"""Fast paths for the parents' networks: fusion of identical architectures, torch.compile, lower precision.

Each is an option of the composition (`fast:` in its YAML) and changes only how the parents' networks run,
never what the composer computes around them. Defaults come from `benchmarks/fast_path.py` on a 2-core CPU:
fusion did not pay and bfloat16 was 2x slower; compile was 1.4-1.9x faster at batch 1 but compiles for tens of
seconds, again for every new batch size (an evaluation's last wave), so it is opt-in (`fast.compile=true`
for a deployment at a fixed batch). GPU defaults are still to be measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class FastPath:
    """`fuse`: parents whose denoisers have one architecture run as one vmapped call on stacked weights.
    `compile`: each parent network through torch.compile. `precision`: autocast dtype of parent calls (the
    composer's state and arithmetic stay float32)."""

    fuse: bool = field(default=False, metadata={"doc": "run parents of one architecture as one vmapped call"})
    compile: bool = field(default=False, metadata={"doc": "torch.compile each parent's network (compiles per batch "
                                                          "size: for deployments at a fixed batch)"})
    precision: str = field(default="float32", metadata={"doc": "float32, bfloat16 or float16 autocast of the "
                                                               "parents' calls"})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def autocast(self, device: torch.device):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def architecture(parent) -> tuple | None:
    """What must match for two parents' denoisers to share one call (network, time embedding, chunk length);
    None if the parent has no torch denoiser."""
    denoiser, config = getattr(parent, "denoiser", None), getattr(parent, "config", None)
    if not isinstance(denoiser, torch.nn.Module) or config is None:
        return None
    shapes = tuple((name, tuple(t.shape), t.dtype) for name, t in
                   list(denoiser.named_parameters()) + list(denoiser.named_buffers()))
    return (type(denoiser), repr(sorted(dict(config.denoiser).items())), config.objective.kind,
            parent.spec.horizon, shapes)


def fusion_groups(parents: Sequence) -> list[list[int]]:
    """Parents grouped by denoiser architecture, in first-appearance order; parents without one stay alone."""
    groups: dict = {}
    for i, parent in enumerate(parents):
        key = architecture(parent)
        groups.setdefault(key if key is not None else ("alone", i), []).append(i)
    return list(groups.values())


class FusedDenoisers:
    """Several denoisers of one architecture as one call: weights stacked (torch.func.stack_module_state) and
    the forward vmapped over parents. Equal to separate calls up to summation order (vmapped convolutions run
    as grouped ones): within 1e-6 in float32, not bit for bit."""

    def __init__(self, denoisers: Sequence[torch.nn.Module]):
        from torch.func import stack_module_state

        self.params, self.buffers = stack_module_state(list(denoisers))
        self.base = copy.deepcopy(denoisers[0]).to("meta")

    def __call__(self, samples: torch.Tensor, timesteps: torch.Tensor, encodings: torch.Tensor) -> torch.Tensor:
        """samples (P, rows, H, D), timesteps (P, rows), encodings (P, rows, C) -> (P, rows, H, D)."""
        from torch.func import functional_call, vmap

        def one(params, buffers, sample, timestep, encoding):
            return functional_call(self.base, (params, buffers), (sample, timestep, encoding))

        return vmap(one)(self.params, self.buffers, samples, timesteps, encodings)

