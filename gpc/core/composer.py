"""The composed sampler: heterogeneous parents, one shared noise sample, one denoising loop.

At every step of the working sampler, each parent the operator needs is queried at its own equivalent noise
level with the state in its own frame (gpc.core.alignment), its output comes back in the sampler's quantity, and the
operator (gpc.core.operators: convex, OR, AND) turns the predictions into the next state. Rows are laid out as envs x
weight candidates, candidate fastest, so K candidates for B observations cost one batched call per parent per
step. The whole algorithm is `Composer.sample`.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch

from gpc.core.acceleration import FastPath, FusedDenoisers, fusion_groups
from gpc.core.action_spaces import ActionSpaceError, action_maps
from gpc.core.alignment import Alignment
from gpc.core.contract import Encoding, Parent, concat_rows, repeat_rows
from gpc.core.layout import ChunkLayout, CompositionError
from gpc.core.operators import OperatorConfig, Scores, WeightSchedule, as_schedules, make_operator
from gpc.core.paths import VPSchedule
from gpc.core.predictions import to_noise_and_action
from gpc.core.samplers import MIN_UNCLIPPED_ALPHA_BAR, SamplerConfig, WorkingSampler
from gpc.core.superposition import rademacher, row_dot

__all__ = ["Composer", "CompositionError", "make_generators"]


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
            maps = action_maps(parents, normalizers)
        except ActionSpaceError as err:
            raise CompositionError(str(err), "normalizers") from None
        self.parents = list(parents)
        self.sampler, self.operator, self.fast = sampler, operator, fast
        self.device, self.dtype = torch.device(device), dtype
        specs = [p.spec for p in self.parents]
        self.layout = ChunkLayout.of(specs, n_action_steps)
        self.coverage = self.layout.coverage(specs)
        self.alignments = [Alignment(spec, start, self.layout.length, m, sampler)
                           for spec, start, m in zip(specs, self.layout.starts, maps)]
        self.networks = [torch.compile(p.predict, dynamic=False) if fast.compile else p.predict
                         for p in self.parents]
        self.groups = fusion_groups(self.parents) if fast.fuse else [[i] for i in range(len(self.parents))]
        self.fused = {tuple(g): FusedDenoisers([self.parents[i].denoiser for i in g])
                      for g in self.groups if len(g) > 1}
        warn_if_noise_end_amplifies(self.parents, sampler)
        if operator.superposed:
            check_superposable(operator, sampler, self.coverage)
        self.normalizer = specs[0].normalizer

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
        operator = make_operator(self.operator, candidates, self.coverage,
                                 torch.as_tensor(row_candidates, device=self.device), self.sampler.path, self.dtype)
        sampler = WorkingSampler(self.sampler, self.device)
        x = torch.stack([torch.randn((self.layout.length, self.action_dim), generator=g, device=self.device,
                                     dtype=self.dtype) for g in generators])
        for n, step in enumerate(sampler.steps()):
            x = _inpainted(x, inpaint)
            used = operator.used(step)
            if operator.needs_scores:
                outputs, scores = self._scores(x, step, encodings, used, generators)
            else:
                outputs, scores = self._predict(x, step, encodings, used), None
            x = operator.advance(sampler, step, n, x, outputs, scores, generators)
        return _inpainted(x, inpaint)

    def _predict(self, x: torch.Tensor, step, encodings, used: Sequence[bool]) -> list[torch.Tensor | None]:
        """Every used parent's prediction in the working quantity on the composite chunk (None for unused
        ones), parents of one fused group in one call."""
        predictions: list[torch.Tensor | None] = [None] * len(self.parents)
        for group in self.groups:
            members = [i for i in group if used[i]]
            if not members:
                continue
            inputs = [self.alignments[i].network_input(x, step) for i in members]
            with self.fast.autocast(self.device):
                if len(members) > 1:
                    outputs = self._fused_for(group, members)(
                        torch.stack([x_own for x_own, *_ in inputs]), torch.stack([t for _, t, *_ in inputs]),
                        torch.stack([encodings[i] for i in members])).unbind(0)
                else:
                    outputs = [self.networks[i](x_own, t, encodings[i]) for i, (x_own, t, *_) in zip(members, inputs)]
            for i, (x_own, _, level, seen), output in zip(members, inputs, outputs):
                predictions[i] = self.alignments[i].to_working(output.to(self.dtype), x_own, x, step, level, seen)
        return predictions

    def _scores(self, x: torch.Tensor, step, encodings, used: Sequence[bool], generators):
        """Predictions plus superposition's terms: each parent's score -e / sigma and, under deterministic
        samplers, the Hutchinson estimate z . (s(x + h z) - s(x)) / h of its divergence, from one call on x and
        x + h z together (twice the rows); zeros for unused parents (their weight is 0)."""
        level, quantity = step.level, self.sampler.prediction_type
        if self.sampler.name == "ddpm":  # stochastic: the Ito estimator needs no divergence
            outputs = self._predict(x, step, encodings, used)
            scores = [-to_noise_and_action(q, quantity, x, level)[0] / level.sigma if q is not None
                      else torch.zeros_like(x) for q in outputs]
            return [q if q is not None else torch.zeros_like(x) for q in outputs], Scores(scores, None)
        probe = rademacher(x.shape[1:], generators, self.device, self.dtype)
        h = self.operator.probe_scale * level.sigma
        doubled = self._predict(torch.cat([x, x + h * probe]), step, [concat_rows(e, e) for e in encodings], used)
        outputs, scores, divergences = [], [], []
        for q in doubled:
            if q is None:
                outputs.append(torch.zeros_like(x))
                scores.append(torch.zeros_like(x))
                divergences.append(torch.zeros(x.shape[0], dtype=torch.float64, device=x.device))
                continue
            q, q_probe = q[:x.shape[0]], q[x.shape[0]:]
            e = to_noise_and_action(q, quantity, x, level)[0]
            e_probe = to_noise_and_action(q_probe, quantity, x + h * probe, level)[0]
            outputs.append(q)
            scores.append(-e / level.sigma)
            divergences.append(-row_dot(probe, e_probe - e) / (level.sigma * h))
        return outputs, Scores(scores, divergences)

    def _fused_for(self, group: list[int], members: list[int]) -> FusedDenoisers:
        if len(members) == len(group):
            return self.fused[tuple(group)]
        key = tuple(members)  # some members unused in this call: fuse just those (cached)
        if key not in self.fused:
            self.fused[key] = FusedDenoisers([self.parents[i].denoiser for i in members])
        return self.fused[key]

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


def _inpainted(x: torch.Tensor, inpaint: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    return x if inpaint is None else torch.where(inpaint[0], inpaint[1], x)


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
