"""Working samplers: the one loop that advances the shared state, built on diffusers' schedulers.

The composer hands each step a single (composite) model output in the sampler's own quantity, exactly as
a single policy would, so DDPM, DDIM and flow Euler behave as their diffusers implementations do.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from gpc.core.paths import FlowPath, Level, NoisePath, VPSchedule

SAMPLERS = ("ddpm", "ddim", "flow_euler")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")  # what diffusers' DDPM and DDIM schedulers accept
# How a DDPM step gets its coefficients: from ratios of alphas_cumprod (diffusers >= 0.13, LeRobot's), or from the
# schedule's betas (diffusers 0.11, which Diffusion Policy pins). Equal in exact arithmetic, they differ by float32
# rounding of 1 - abar_t / abar_{t-1}, up to 1e-3 relative near t = 0: enough to move a 100-step chunk by 2e-5.
STEP_COEFFICIENTS = ("cumprod", "betas")
# An epsilon step recovers the clean sample as (x - sqrt(1 - abar) eps) / sqrt(abar): below this abar an
# unclipped sampler multiplies the parent's epsilon error by more than 300.
MIN_UNCLIPPED_ALPHA_BAR = 1e-5


@dataclass(frozen=True)
class SamplerConfig:
    """Which loop to run, on which path, for how many steps.

    `prediction_type` is what the scheduler's `step` consumes: a diffusion prediction for DDPM/DDIM,
    `velocity` (e - a, canonical flow time with noise at 1) for flow Euler.
    """

    name: str = "ddim"
    num_inference_steps: int = 10
    schedule: VPSchedule = field(default_factory=VPSchedule)
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    timestep_spacing: str = "leading"
    eta: float = 0.0
    step_coefficients: str = "cumprod"

    def __post_init__(self):
        """Messages start with the field, so a config error can name `sampler.<field>`."""
        if self.name not in SAMPLERS:
            raise ValueError(f"name: must be one of {SAMPLERS}, got {self.name!r}")
        if not isinstance(self.num_inference_steps, numbers.Integral) or self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: must be an integer >= 1, got {self.num_inference_steps!r}")
        if not self.eta >= 0:
            raise ValueError(f"eta: must be >= 0, got {self.eta}")
        if self.step_coefficients not in STEP_COEFFICIENTS or (self.step_coefficients == "betas"
                                                                and self.name != "ddpm"):
            raise ValueError(f"step_coefficients: 'cumprod', or 'betas' for ddpm, got {self.step_coefficients!r}")
        if not (isinstance(self.clip_sample_range, numbers.Real) and 0 < self.clip_sample_range < float("inf")):
            raise ValueError(f"clip_sample_range: must be a number > 0, got {self.clip_sample_range!r}")
        if self.name == "flow_euler":
            object.__setattr__(self, "prediction_type", "velocity")
            return
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction_type: {self.name} sampler needs epsilon, sample or v_prediction, "
                             f"got {self.prediction_type!r}")
        if self.step_coefficients == "betas" and self.num_inference_steps != self.schedule.num_train_timesteps:
            raise ValueError(f"num_inference_steps: step_coefficients 'betas' steps t -> t - 1, so it needs "
                             f"{self.schedule.num_train_timesteps} steps, got {self.num_inference_steps}")
        if self.num_inference_steps > self.schedule.num_train_timesteps:
            raise ValueError(f"num_inference_steps: {self.num_inference_steps} exceeds the schedule's "
                             f"num_train_timesteps ({self.schedule.num_train_timesteps})")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing: must be one of {TIMESTEP_SPACINGS}, got {self.timestep_spacing!r}")

    @property
    def path(self) -> NoisePath:
        return FlowPath() if self.name == "flow_euler" else self.schedule

    @classmethod
    def native(cls, path: NoisePath, prediction_type: str, num_inference_steps: int, **kwargs
               ) -> "SamplerConfig":
        """The sampler a parent on `path` runs alone: DDIM on its own schedule, or flow Euler."""
        if isinstance(path, FlowPath):
            return cls("flow_euler", num_inference_steps)
        return cls("ddim", num_inference_steps, path, prediction_type, **kwargs)


@dataclass(frozen=True)
class Step:
    scheduler_timestep: torch.Tensor  # what the diffusers scheduler's step() expects
    timestep: float  # the same time in the sampler path's native units, for parents on that path
    level: Level


class WorkingSampler:
    """One sampling run of a `SamplerConfig` (diffusers schedulers are stateful: one per run)."""

    def __init__(self, config: SamplerConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.path = config.path
        if config.name == "flow_euler":
            from diffusers import FlowMatchEulerDiscreteScheduler

            self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
            # Uniform steps from pure noise (s = 1) down to s = 1/N, as pi0 / LeRobot integrate.
            grid = np.linspace(1.0, 0.0, config.num_inference_steps + 1)[:-1]
            self.scheduler.set_timesteps(sigmas=grid, device=device)
        else:
            from diffusers import DDIMScheduler, DDPMScheduler

            cls = DDIMScheduler if config.name == "ddim" else (
                DDPMScheduler if config.step_coefficients == "cumprod" else _beta_coefficient_ddpm())
            self.scheduler = cls(**config.schedule.scheduler_config(), prediction_type=config.prediction_type,
                                 clip_sample=config.clip_sample, clip_sample_range=config.clip_sample_range,
                                 timestep_spacing=config.timestep_spacing)
            self.scheduler.set_timesteps(config.num_inference_steps, device=device)
            self._warn_if_endpoint_amplifies()

    def _warn_if_endpoint_amplifies(self) -> None:
        """squaredcos_cap_v2 ends at abar = 2.4e-7 (100 steps): DDPM, DDIM with many steps or "trailing"
        spacing start there, and without clipping one bad epsilon wrecks the action (measured on Square)."""
        first = int(self.scheduler.timesteps[0])
        alpha_bar = float(self.scheduler.alphas_cumprod[first])
        unclipped_epsilon = self.config.prediction_type == "epsilon" and not self.config.clip_sample
        if unclipped_epsilon and alpha_bar < MIN_UNCLIPPED_ALPHA_BAR:
            warnings.warn(f"{self.config.name} sampler starts at timestep {first}, where alpha_bar = {alpha_bar:.1e}: "
                          f"without clip_sample an epsilon parent's error is amplified {alpha_bar ** -0.5:.0f}x "
                          f"there; use fewer DDIM steps with 'leading' spacing, or clip_sample=true", stacklevel=3)

    def steps(self) -> Iterator[Step]:
        if self.config.name == "flow_euler":
            for t, s in zip(self.scheduler.timesteps, self.scheduler.sigmas[:-1]):
                yield Step(t, float(s), Level(1.0 - float(s), float(s)))
        else:
            for t in self.scheduler.timesteps:
                yield Step(t, float(t), self.path.level(int(t)))

    def landing_level(self, n: int) -> Level:
        """Where step n lands. diffusers' DDIM steps to t - T // N whatever the next timestep is (the two differ
        under 'linspace' and 'trailing' spacing); DDPM and flow Euler land on the next step's level. The last
        step lands on the clean end (DDIM with set_alpha_to_one, DDPM, flow Euler)."""
        if self.config.name == "flow_euler":
            s = float(self.scheduler.sigmas[n + 1])
            return Level(1.0 - s, s)
        timesteps = self.scheduler.timesteps
        if self.config.name == "ddim":
            landing = int(timesteps[n]) - self.scheduler.config.num_train_timesteps // self.config.num_inference_steps
        else:
            landing = int(timesteps[n + 1]) if n + 1 < len(timesteps) else -1
        return self.path.level(landing) if landing >= 0 else Level(1.0, 0.0)

    def step_each(self, model_outputs: torch.Tensor, step: Step, sample: torch.Tensor,
                  generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        """The step each of P model outputs (P, rows, ...) would take alone, all with the same noise, in one
        scheduler call; the generators advance as one `step` would advance them."""
        P = model_outputs.shape[0]
        clones = None
        if generators is not None:
            clones = [_clone(g) for _ in range(P) for g in generators]
        out = self.step(model_outputs.flatten(0, 1), step, sample.repeat(P, *([1] * (sample.dim() - 1))), clones)
        if generators is not None:
            for g, c in zip(generators, clones):
                g.set_state(c.get_state())
        return out.reshape(model_outputs.shape)

    def step(self, model_output: torch.Tensor, step: Step, sample: torch.Tensor,
             generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        if self.config.name == "ddpm":
            out = self.scheduler.step(model_output, step.scheduler_timestep, sample, generator=list(generators))
        elif self.config.name == "ddim":
            if self.config.eta > 0:
                out = self.scheduler.step(model_output, step.scheduler_timestep, sample, eta=self.config.eta,
                                          generator=list(generators))
            else:
                out = self.scheduler.step(model_output, step.scheduler_timestep, sample)
        else:
            out = self.scheduler.step(model_output, step.scheduler_timestep, sample)
        return out.prev_sample


def _clone(generator: torch.Generator) -> torch.Generator:
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return clone


def _beta_coefficient_ddpm():
    """diffusers' DDPMScheduler stepping as diffusers 0.11 did: coefficients and variance from the schedule's betas
    (`betas[t]`, `alphas[t]`), the previous timestep t - 1. Only for one inference step per train step, where that
    is exact."""
    from diffusers import DDPMScheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
    from diffusers.utils.torch_utils import randn_tensor

    class BetaCoefficientDDPMScheduler(DDPMScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            t = int(timestep)
            abar_t = self.alphas_cumprod[t]
            abar_prev = self.alphas_cumprod[t - 1] if t > 0 else self.one
            beta_prod_t, beta_prod_prev = 1 - abar_t, 1 - abar_prev
            if self.config.prediction_type == "epsilon":
                x0 = (sample - beta_prod_t ** 0.5 * model_output) / abar_t ** 0.5
            elif self.config.prediction_type == "sample":
                x0 = model_output
            else:
                x0 = abar_t ** 0.5 * sample - beta_prod_t ** 0.5 * model_output
            if self.config.clip_sample:
                x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
            prev = ((abar_prev ** 0.5 * self.betas[t]) / beta_prod_t) * x0 \
                + (self.alphas[t] ** 0.5 * beta_prod_prev / beta_prod_t) * sample
            if t > 0:
                noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                     dtype=model_output.dtype)
                variance = torch.clamp((1 - abar_prev) / (1 - abar_t) * self.betas[t], min=1e-20)
                prev = prev + variance ** 0.5 * noise
            return DDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    return BetaCoefficientDDPMScheduler
