"""The composed sampler: heterogeneous parents, one shared noise sample, one denoising loop.

At every step of the working sampler, each parent is queried at its own equivalent noise level with the
state rescaled into its own path (gpc.noise.align), its output is converted to the sampler's quantity
through the (noise, action) pair (gpc.predictions), the operator combines all parents, and the
sampler's own step advances the shared state. Rows are laid out as envs x weight candidates, candidate
fastest, so K candidates for B observations cost one batched call per parent per step.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from gpc.acceleration import FastPath, FusedDenoisers, fusion_groups
from gpc.action_spaces import ActionSpaceError, action_maps
from gpc.noise import Level, VPSchedule, align
from gpc.operators import Convex, WeightSchedule, as_schedules
from gpc.parent import Encoding, Parent, concat_rows, repeat_rows
from gpc.predictions import from_noise_and_action, to_noise_and_action
from gpc.samplers import MIN_UNCLIPPED_ALPHA_BAR, SamplerConfig, WorkingSampler
from gpc.superposition import (LogDensityTracker, OperatorConfig, and_weights, or_weights, rademacher,
                               row_dot, score_products, step_integrals)


class CompositionError(ValueError):
    """Parents that cannot be composed, or weights that do not fit them; `field` is the composition config
    field at fault."""

    def __init__(self, message: str, field: str = "parents"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ChunkLayout:
    """Where each parent's chunk sits on the composite chunk, aligned on the current control step."""

    starts: tuple[int, ...]  # composite index of each parent's chunk index 0
    length: int
    action_start: int  # composite index of the current control step
    n_action_steps: int

    @classmethod
    def of(cls, parents: Sequence[Parent], n_action_steps: int | None) -> "ChunkLayout":
        current = max(p.spec.action_start for p in parents)
        starts = tuple(current - p.spec.action_start for p in parents)
        length = max(start + p.spec.horizon for start, p in zip(starts, parents))
        executable = min(start + p.spec.horizon for start, p in zip(starts, parents)) - current
        n = n_action_steps if n_action_steps is not None else min(p.spec.n_action_steps for p in parents)
        if not isinstance(n, numbers.Integral) or not 1 <= n <= executable:
            raise CompositionError(f"n_action_steps={n!r} must be an integer within 1..{executable} "
                                   "(steps every parent predicts from the current one)", "n_action_steps")
        return cls(starts, length, current, n)

    def coverage(self, parents: Sequence[Parent]) -> torch.Tensor:
        cover = torch.zeros(len(parents), self.length, dtype=torch.bool)
        for i, (start, parent) in enumerate(zip(self.starts, parents)):
            cover[i, start:start + parent.spec.horizon] = True
        return cover


def check_composable(parents: Sequence[Parent]) -> None:
    """Raise CompositionError naming the first parent that does not fit the others."""
    if not parents:
        raise CompositionError("no parents to compose")
    first = parents[0].spec
    for parent in parents[1:]:
        spec = parent.spec
        if spec.action_dim != first.action_dim:
            raise CompositionError(f"parent {spec.name!r} has action_dim {spec.action_dim}, "
                                   f"parent {first.name!r} has {first.action_dim}")


def make_generators(seeds: Sequence[int], n_candidates: int, common_noise: bool = True,
                    device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per row (env b, candidate k). With common noise every candidate of an env draws the
    same numbers, so candidates are compared on paired samples."""
    generators = []
    for seed in seeds:
        for k in range(n_candidates):
            g = torch.Generator(device=device)
            g.manual_seed(int(seed) if common_noise else int(seed) * 1_000_003 + k)
            generators.append(g)
    return generators


class Composer:
    """Compose parents under one working sampler, with convex weights or AND / OR superposition."""

    def __init__(self, parents: Sequence[Parent], sampler: SamplerConfig, n_action_steps: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 operator: OperatorConfig = OperatorConfig(), fast: FastPath = FastPath(), normalizers: str = "exact"):
        check_composable(parents)
        try:
            self.maps = action_maps(parents, normalizers)
        except ActionSpaceError as err:
            raise CompositionError(str(err), "normalizers") from None
        self.parents = list(parents)
        self.sampler = sampler
        self.operator = operator
        self.fast = fast
        self.networks = [torch.compile(p.predict, dynamic=False) if fast.compile else p.predict
                         for p in self.parents]
        self.groups = fusion_groups(self.parents) if fast.fuse else [[i] for i in range(len(self.parents))]
        self.fused = {tuple(g): FusedDenoisers([self.parents[i].denoiser for i in g])
                      for g in self.groups if len(g) > 1}
        warn_if_noise_end_amplifies(self.parents, sampler)
        self.layout = ChunkLayout.of(self.parents, n_action_steps)
        self.coverage = self.layout.coverage(self.parents)
        if operator.superposed:
            check_superposable(operator, sampler, self.coverage)
        self.device = torch.device(device)
        self.dtype = dtype
        self.normalizer = self.parents[0].spec.normalizer

    @property
    def action_dim(self) -> int:
        return self.parents[0].spec.action_dim

    @property
    def n_obs_steps(self) -> int:
        """Observation history the caller must keep: the longest any parent needs."""
        return max(p.spec.n_obs_steps for p in self.parents)

    def candidates(self, weights) -> list[WeightSchedule]:
        schedules = as_schedules(weights)
        for k, schedule in enumerate(schedules):
            try:
                schedule.validate(len(self.parents), where=f"weight candidate {k}")
            except ValueError as err:
                raise CompositionError(str(err)) from None
            if self.operator.superposed and len(schedule.knots) > 1:
                raise CompositionError(f"weight candidate {k}: the {self.operator.name!r} operator takes constant "
                                       "weights (mixture weights for OR, participating parents for AND)")
        return schedules

    @torch.no_grad()
    def encode(self, obs: Mapping[str, Any]) -> list[Encoding]:
        """Run every parent's observation encoder once for this control step."""
        return [parent.encode(obs) for parent in self.parents]

    @torch.no_grad()
    def sample(self, encodings: Sequence[Encoding], weights, generators: Sequence[torch.Generator],
               inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
               row_candidates: Sequence[int] | None = None) -> torch.Tensor:
        """Denoise one composite chunk per row; returns (rows, L, D), normalized.

        By default the encodings hold one row per env and rows are envs x candidates, candidate fastest.
        In a rollout, where every (env, candidate) pair has its own observation, the encodings hold one row
        per pair and `row_candidates` names each row's candidate. `generators` has one generator per row
        (see make_generators). `inpaint` = (mask, values) of shape (rows, L, D): masked entries are
        overwritten with the given normalized values before every step and at the end, as Diffusion
        Policy's inpainting conditioning does.
        """
        candidates = self.candidates(weights)
        n_rows = len(generators)
        if row_candidates is None:
            if n_rows % len(candidates):
                raise CompositionError(f"{n_rows} generators is not a multiple of {len(candidates)} candidates")
            encodings = [repeat_rows(e, len(candidates)) for e in encodings]
            row_candidates = list(range(len(candidates))) * (n_rows // len(candidates))
        elif len(row_candidates) != n_rows:
            raise CompositionError(f"{len(row_candidates)} row candidates for {n_rows} rows")
        operator = Convex(candidates, self.coverage, torch.as_tensor(row_candidates, device=self.device))
        shape = (self.layout.length, self.action_dim)
        x = torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=self.dtype)
                         for g in generators])
        sampler = WorkingSampler(self.sampler, self.device)
        if self.operator.superposed:
            return self._sample_superposed(encodings, candidates, row_candidates, generators, x, sampler, inpaint)
        for step in sampler.steps():
            if inpaint is not None:
                x = torch.where(inpaint[0], inpaint[1], x)
            weights_now = operator.weights(step.level.s, self.dtype, self.device)
            used = [self._used(weights_now, i) for i in range(len(self.parents))]
            x = sampler.step(operator.combine(self._predict_all(x, step, encodings, used), weights_now), step, x,
                             generators)
        if inpaint is not None:
            x = torch.where(inpaint[0], inpaint[1], x)
        return x

    def _sample_superposed(self, encodings, candidates, row_candidates, generators, x, sampler, inpaint):
        """The AND / OR loop (gpc.superposition): per-row weights from running log-density estimates."""
        n_rows, n_parents = x.shape[0], len(self.parents)
        prior = torch.as_tensor(np.stack([c.at(1.0) for c in candidates]), dtype=torch.float64,
                                device=self.device)[torch.as_tensor(row_candidates, device=self.device)]
        used = [bool((prior[:, i] > 0).any()) for i in range(n_parents)]
        tracker = LogDensityTracker(n_rows, n_parents, self.device)
        deterministic = self.sampler.name != "ddpm"
        for n, step in enumerate(sampler.steps()):
            if inpaint is not None:
                x = torch.where(inpaint[0], inpaint[1], x)
            level = step.level
            probe = rademacher(x.shape[1:], generators, self.device, self.dtype) if deterministic else None
            outputs, scores, divergences = zip(*(self._score_terms(i, x, step, encodings[i], probe) if used[i]
                                                 else _unused(x) for i in range(n_parents)))
            next_level = sampler.landing_level(n)
            tracked = level.alpha > 0  # at pure noise every parent's score is -x / sigma: no difference
            if tracked:
                F, G = step_integrals(self.sampler.path, level, next_level)
                constants = tracker.step_terms(scores, x, divergences if deterministic else None, F, G)
            else:
                constants = torch.zeros(n_rows, n_parents, dtype=torch.float64, device=self.device)
            if self.operator.name == "or":
                kappa = or_weights(tracker.log_density, prior, self.operator.temperature)
                x_next = sampler.step(_mix(outputs, kappa), step, x, generators)
            else:
                x_each = sampler.step_each(torch.stack(outputs), step, x, generators)
                kappa = and_weights(tracker.log_density, constants, score_products(scores, x_each - x[None]),
                                    prior > 0)
                x_next = _mix(list(x_each), kappa)
            if tracked:
                tracker.update(scores, x, x_next, constants)
            x = x_next
        if inpaint is not None:
            x = torch.where(inpaint[0], inpaint[1], x)
        return x

    def _score_terms(self, i: int, x: torch.Tensor, step, encoding: Encoding, probe: torch.Tensor | None):
        """Parent i's working output, its score -e / sigma, and (given a probe z) the Hutchinson estimate of
        its divergence z . (s(x + h z) - s(x)) / h, from one call on x and x + h z together."""
        level = step.level
        if probe is None:
            q = self._predict_working(i, x, step, encoding)
        else:
            h = self.operator.probe_scale * level.sigma
            both = self._predict_working(i, torch.cat([x, x + h * probe]), step, concat_rows(encoding, encoding))
            q, q_probe = both[:x.shape[0]], both[x.shape[0]:]
        e = to_noise_and_action(q, self.sampler.prediction_type, x, level)[0]
        if probe is None:
            return q, -e / level.sigma, None
        e_probe = to_noise_and_action(q_probe, self.sampler.prediction_type, x + h * probe, level)[0]
        divergence = -row_dot(probe, e_probe - e) / (level.sigma * h)
        return q, -e / level.sigma, divergence

    @staticmethod
    def _used(weights: torch.Tensor, i: int) -> bool:
        return bool((weights[:, i] != 0).any())

    def _predict_all(self, x: torch.Tensor, step, encodings, used: Sequence[bool]) -> list[torch.Tensor | None]:
        """Every used parent's prediction in the working quantity (None for unused ones), fused groups in one
        call each."""
        predictions: list[torch.Tensor | None] = [None] * len(self.parents)
        for group in self.groups:
            members = [i for i in group if used[i]]
            if not members:
                continue
            inputs = [self._network_input(i, x, step) for i in members]
            with self.fast.autocast(self.device):
                if len(members) > 1:
                    outputs = self._fused_for(group, members)(
                        torch.stack([x_own for x_own, *_ in inputs]), torch.stack([t for _, t, *_ in inputs]),
                        torch.stack([encodings[i] for i in members])).unbind(0)
                else:
                    outputs = [self.networks[i](x_own, t, encodings[i]) for i, (x_own, t, *_) in zip(members, inputs)]
            for i, (x_own, _, level, seen), output in zip(members, inputs, outputs):
                predictions[i] = self._to_working(i, output.to(self.dtype), x_own, x, step, level, seen)
        return predictions

    def _fused_for(self, group: list[int], members: list[int]) -> FusedDenoisers:
        if len(members) == len(group):
            return self.fused[tuple(group)]
        key = tuple(members)  # some members unused in this call: fuse just those (cached)
        if key not in self.fused:
            self.fused[key] = FusedDenoisers([self.parents[i].denoiser for i in members])
        return self.fused[key]

    def _predict_working(self, i: int, x: torch.Tensor, step, encoding: Encoding) -> torch.Tensor:
        """Parent i's prediction, in the working sampler's quantity, on the composite chunk."""
        x_own, t, level, seen = self._network_input(i, x, step)
        with self.fast.autocast(self.device):
            output = self.networks[i](x_own, t, encoding)
        return self._to_working(i, output.to(self.dtype), x_own, x, step, level, seen)

    def _network_input(self, i: int, x: torch.Tensor, step):
        """(state in parent i's own frame, its timestep per row, its level, the working level as it sees it) for
        this working step. A parent in another action space sees the state mapped into it (gpc.action_spaces)."""
        spec, action_map = self.parents[i].spec, self.maps[i]
        start = self.layout.starts[i]
        x_own = x[:, start:start + spec.horizon]
        if action_map is None:
            seen = step.level
            timestep, scale, level = align(seen, self.sampler.path, step.timestep, spec.path)
            if scale != 1.0:
                x_own = x_own * scale
        else:  # the offset rides on the parent's own signal level (the working one, rescaled, unless clamped)
            seen = Level(step.level.alpha, action_map.noise_scale * step.level.sigma)
            timestep, scale, level = align(seen, None, None, spec.path)
            x_own = action_map.to_parent(x_own * scale, level.alpha)
        return x_own, torch.full((x.shape[0],), timestep, dtype=self.dtype, device=self.device), level, seen

    def _to_working(self, i: int, output: torch.Tensor, x_own: torch.Tensor, x: torch.Tensor, step, level, seen
                    ) -> torch.Tensor:
        """A parent's raw output turned into the working sampler's quantity on the composite chunk."""
        spec, action_map = self.parents[i].spec, self.maps[i]
        start = self.layout.starts[i]
        if action_map is None and spec.prediction_type == self.sampler.prediction_type \
                and spec.path == self.sampler.path:
            q = output  # same quantity on the same path: no conversion, so weight 1 is bit-exact
        else:
            sign = getattr(spec.path, "velocity_sign", 1.0)
            e, a = to_noise_and_action(output, spec.prediction_type, x_own, level, sign)
            x_sub = x[:, start:start + spec.horizon]
            if action_map is not None:
                a = action_map.action_to_working(a)
            if action_map is not None and not action_map.exact:
                e, a = _through_velocity(e, a, x_sub, step.level)
            else:
                e, a = _consistent_with_state(e, a, x_sub, step.level, level, seen)
            q = from_noise_and_action(e, a, self.sampler.prediction_type, step.level)
        if spec.horizon == self.layout.length:
            return q
        padded = torch.zeros_like(x)
        padded[:, start:start + spec.horizon] = q
        return padded

    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], weights, seeds: Sequence[int], common_noise: bool = True
            ) -> torch.Tensor:
        """Executable actions (envs, K, n_action_steps, action_dim) in the env's units, from one control
        step's observations; one seed per env (its episode seed plus step, say)."""
        candidates = self.candidates(weights)
        generators = make_generators(seeds, len(candidates), common_noise, self.device)
        actions = self.executable(self.sample(self.encode(obs), candidates, generators))
        return actions.reshape(len(seeds), len(candidates), *actions.shape[1:])

    def executable(self, chunk: torch.Tensor) -> torch.Tensor:
        """The actions to execute now, in the env's units, from normalized composite chunks (rows, L, D)."""
        start = self.layout.action_start
        return self.normalizer.unnormalize(chunk[:, start:start + self.layout.n_action_steps])


def warn_if_noise_end_amplifies(parents: Sequence[Parent], sampler: SamplerConfig) -> None:
    """A flow sampler starts at pure noise, where an epsilon parent answers at its noisiest step: its action
    estimate (x - sigma eps) / alpha multiplies its epsilon error by 1 / alpha there (2000x on Diffusion
    Policy's cosine schedule), as an unclipped VP sampler starting there would (see WorkingSampler)."""
    if sampler.name != "flow_euler":
        return
    for p in parents:
        if isinstance(p.spec.path, VPSchedule) and p.spec.prediction_type == "epsilon":
            alpha_bar = float(p.spec.path.alphas_cumprod[-1])
            if alpha_bar < MIN_UNCLIPPED_ALPHA_BAR:
                warnings.warn(f"flow_euler starts at pure noise, where parent {p.spec.name!r} (epsilon) has "
                              f"alpha_bar = {alpha_bar:.1e}: its action estimate amplifies its epsilon error "
                              f"{alpha_bar ** -0.5:.0f}x; compose under a VP sampler (its own, or ddim with "
                              "clip_sample) instead", stacklevel=3)


def check_superposable(operator: OperatorConfig, sampler: SamplerConfig, coverage: torch.Tensor) -> None:
    if not bool(coverage.all()):
        raise CompositionError(f"the {operator.name!r} operator needs parents that predict the same chunk "
                               "(equal horizons and action_start)", "operator")
    if sampler.name == "ddim" and sampler.eta != 0:
        raise CompositionError(f"the {operator.name!r} operator needs DDPM, DDIM with eta=0 or flow Euler; "
                               f"DDIM eta={sampler.eta} is neither the reverse SDE nor its ODE", "sampler.eta")
    if sampler.clip_sample:
        raise CompositionError(f"the {operator.name!r} operator needs clip_sample=False (the step must be affine "
                               "in the model output)", "sampler.clip_sample")


def _unused(x: torch.Tensor):
    """Placeholders for a parent no row uses: zero output and score, zero divergence (its weight is 0)."""
    return torch.zeros_like(x), torch.zeros_like(x), torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)


def _mix(tensors: Sequence[torch.Tensor], kappa: torch.Tensor) -> torch.Tensor:
    """sum_i kappa[:, i] * tensors[i]; kappa (rows, P) in float64, tensors (rows, ...). Zero weights add exact
    zeros, so weight 1 on one parent gives that parent's tensor bit for bit."""
    out = None
    for i, t in enumerate(tensors):
        term = kappa[:, i].to(t.dtype).reshape(-1, *([1] * (t.dim() - 1))) * t
        out = term if out is None else out + term
    return out


def _consistent_with_state(e: torch.Tensor, a: torch.Tensor, x: torch.Tensor, level, parent_level, seen):
    """Make a clamped parent's (e, a) consistent with the working state.

    A parent whose schedule does not reach the level it was asked for (`seen`: the working level, in its
    action space; e.g. a VP schedule's smallest noise above the sampler's last step) was queried at its nearest
    level. Near the clean end its action estimate is the reliable half of the pair, near the noise end its noise
    estimate; the other half is re-derived from `x = alpha a + sigma e` so that every working quantity gives the
    same composite.
    """
    if abs(parent_level.s - seen.s) < 1e-9 or level.alpha == 0.0:  # at pure noise no action is implied
        return e, a
    if parent_level.s > seen.s:
        return (x - level.alpha * a) / level.sigma, a
    return e, (x - level.sigma * e) / level.alpha


def _through_velocity(e: torch.Tensor, a: torch.Tensor, x: torch.Tensor, level):
    """A pair from a parent queried at an approximate level (gpc.action_spaces), made consistent with the working
    state through its velocity e - a: of four rules measured on Gaussian parents (keep e, keep a, keep the half
    reliable at that level, keep e - a), this one strays least (benchmarks/normalizer_mismatch.py)."""
    u = e - a
    total = level.alpha + level.sigma
    return (x + level.alpha * u) / total, (x - level.sigma * u) / total
