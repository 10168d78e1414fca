"""Reading a Diffusion Policy workspace checkpoint without running its pickle.

`latest.ckpt` is `torch.save({cfg, state_dicts: {model, ema_model, optimizer}, pickles}, pickle_module=dill)`.
Unpickling can run any code the file names, so gpc reads it with `torch.load(weights_only=True)` and an
allowlist of exactly the globals such a checkpoint holds: omegaconf's config containers and nodes, `typing.Any`,
builtin container and scalar types (a checkpoint saved again without dill names them), and harmless stand-ins
for the two that would otherwise need dill and run a callable: `dill._dill._load_type`
(dill's way of pickling builtin types, asked only for container and scalar types here) and
`collections.defaultdict` (omegaconf's resolver cache, built empty as a plain dict). A checkpoint naming any other
global is refused, naming it, unless its composition entry says `trust: true`, which unpickles it in full
(the file's code then runs).

The policy is `ema_model` when the config says EMA was used (as Diffusion Policy's own eval loads it), else
`model`. Low-dim U-Net policies with global conditioning are supported; other policies and conditionings are
refused by name.
"""

from __future__ import annotations

import pickle
import types
import typing
from pathlib import Path
from typing import Any

import torch

from gpc.core.paths import BETA_SCHEDULES, VPSchedule
from gpc.core.samplers import SamplerConfig
from gpc.policies.diffusion_policy.modeling import DiffusionPolicyLowdim, LowdimSettings, linear_normalizer
from gpc.policies.tensor_files import load_matching

LOWDIM_UNET = "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy"
SCHEDULERS = {"diffusers.schedulers.scheduling_ddpm.DDPMScheduler": "ddpm",
              "diffusers.schedulers.scheduling_ddim.DDIMScheduler": "ddim",
              "diffusers.DDPMScheduler": "ddpm", "diffusers.DDIMScheduler": "ddim"}
BUILTIN_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set, "int": int, "float": float, "str": str,
                 "bool": bool, "bytes": bytes, "NoneType": type(None)}


def _load_type(name: str) -> type:
    """Stand-in for `dill._dill._load_type`: builtin types only."""
    if name not in BUILTIN_TYPES:
        raise pickle.UnpicklingError(f"dill._dill._load_type({name!r}) is not a builtin type gpc allows")
    return BUILTIN_TYPES[name]


def _empty_cache(default_factory: Any = None, *args) -> dict:
    """Stand-in for `collections.defaultdict`: omegaconf pickles its (empty) resolver cache as one."""
    return dict(*args)


def _allowlist() -> list:
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, *BUILTIN_TYPES.values(),
            (_load_type, "dill._dill._load_type"), (_empty_cache, "collections.defaultdict")]


def read_checkpoint(path: Path, trust: bool = False) -> dict:
    """The checkpoint's payload; a global outside the allowlist is refused unless `trust`."""
    try:
        with torch.serialization.safe_globals(_allowlist()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust:
            names = _unlisted_globals(path) or [str(err).strip().splitlines()[-1]]
            raise ValueError(f"{path}: this checkpoint is a pickle, and it names {', '.join(names)}, outside the "
                             "globals gpc reads without running code; if you trust the file, set `trust: true` on its "
                             "parent entry (its pickled code then runs)") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TRUSTING)


def _unlisted_globals(path: Path) -> list[str]:
    """The globals the file names beyond torch's own and gpc's allowlist, read without unpickling."""
    allowed = {g[1] if isinstance(g, tuple) else "typing.Any" if g is typing.Any else f"{g.__module__}.{g.__qualname__}"
               for g in _allowlist()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only a better message is lost
        return []
    return [name for name in found if name not in allowed]


class _TrustingUnpickler(pickle.Unpickler):
    """`trust: true`: every global is imported as the file names it (its code runs), except dill's builtin-type
    helper, answered by the stand-in so that dill need not be installed."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("dill._dill", "_load_type"):
            return _load_type
        return super().find_class(module, name)


_TRUSTING = types.SimpleNamespace(__name__="gpc_trusting_pickle", Unpickler=_TrustingUnpickler, load=pickle.load)


def _cfg(payload: Any, path: Path) -> dict:
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(payload, dict) or not isinstance(payload.get("cfg"), DictConfig) \
            or not isinstance(payload.get("state_dicts"), dict):
        raise ValueError(f"{path}: not a Diffusion Policy workspace checkpoint (need cfg and state_dicts)")
    try:
        return OmegaConf.to_container(payload["cfg"], resolve=True)
    except OmegaConfBaseException as err:  # e.g. an unresolved ${eval:...}: never evaluated
        raise ValueError(f"{path}: cfg: {str(err).splitlines()[0]}; gpc reads only resolved configs, as "
                         "Diffusion Policy's train.py saves them") from None


def _get(cfg: dict, dotted: str, kind: type, path: Path) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{path}: cfg.{dotted}: missing")
        value = value[part]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)) or \
            kind is bool and not isinstance(value, bool) or kind is str and not isinstance(value, str):
        raise ValueError(f"{path}: cfg.{dotted}: need {kind.__name__}, got {value!r}")
    return value


def settings_from(cfg: dict, state: dict, path: Path) -> LowdimSettings:
    """The inference settings of a low-dim U-Net policy, refusing what gpc does not reproduce."""
    target = _get(cfg, "policy._target_", str, path)
    if target != LOWDIM_UNET:
        raise ValueError(f"{path}: cfg.policy._target_: {target} is not supported; gpc loads {LOWDIM_UNET} with "
                         "global conditioning (image/hybrid and transformer policies have no golden test here)")
    policy = cfg["policy"]
    if _get(cfg, "policy.obs_as_local_cond", bool, path) or not _get(cfg, "policy.obs_as_global_cond", bool, path):
        raise ValueError(f"{path}: cfg.policy.obs_as_global_cond: only global conditioning is supported; this "
                         "checkpoint conditions by "
                         f"{'local features' if policy['obs_as_local_cond'] else 'inpainting the observation'}")
    model = policy.get("model", {})
    scheduler = policy.get("noise_scheduler", {})
    name = SCHEDULERS.get(scheduler.get("_target_"))
    if name is None:
        raise ValueError(f"{path}: cfg.policy.noise_scheduler._target_: {scheduler.get('_target_')!r} is not "
                         f"supported; expected one of {sorted(SCHEDULERS)}")
    for key, allowed in (("variance_type", ("fixed_small", None)), ("beta_schedule", BETA_SCHEDULES)):
        if scheduler.get(key) not in allowed:
            raise ValueError(f"{path}: cfg.policy.noise_scheduler.{key}: {scheduler.get(key)!r} is not supported")
    schedule = VPSchedule(int(scheduler.get("num_train_timesteps", 1000)), scheduler.get("beta_schedule", "linear"),
                          float(scheduler.get("beta_start", 0.0001)), float(scheduler.get("beta_end", 0.02)))
    horizon, n_obs_steps = _get(cfg, "policy.horizon", int, path), _get(cfg, "policy.n_obs_steps", int, path)
    n_action_steps = _get(cfg, "policy.n_action_steps", int, path)
    steps_only = bool(policy.get("pred_action_steps_only", False))
    start = 0 if steps_only else n_obs_steps - 1 if policy.get("oa_step_convention", False) else n_obs_steps
    sampler = SamplerConfig(name, int(policy.get("num_inference_steps") or schedule.num_train_timesteps), schedule,
                            str(scheduler.get("prediction_type", "epsilon")),
                            clip_sample=bool(scheduler.get("clip_sample", True)),
                            clip_sample_range=float(scheduler.get("clip_sample_range", 1.0)),
                            # Diffusion Policy pins diffusers 0.11, whose DDPM steps take their coefficients from betas
                            step_coefficients="betas" if name == "ddpm" else "cumprod")
    final = state.get("model.final_conv.1.weight")
    if final is None:
        raise ValueError(f"{path}: state_dicts: no model.final_conv.1.weight; not a ConditionalUnet1D")
    return LowdimSettings(
        horizon=n_action_steps if steps_only else horizon, n_obs_steps=n_obs_steps, n_action_steps=n_action_steps,
        action_start=start, obs_dim=_get(cfg, "policy.obs_dim", int, path),
        action_dim=_get(cfg, "policy.action_dim", int, path),
        diffusion_step_embed_dim=int(model.get("diffusion_step_embed_dim", 256)),
        down_dims=tuple(int(d) for d in model.get("down_dims", (256, 512, 1024))),
        kernel_size=int(model.get("kernel_size", 3)), n_groups=int(model.get("n_groups", 8)),
        cond_predict_scale=bool(model.get("cond_predict_scale", False)), sampler=sampler)


def load_diffusion_policy(path: str | Path, device: str | torch.device = "cpu", trust: bool = False
                          ) -> DiffusionPolicyLowdim:
    """A Diffusion Policy `.ckpt` as a parent in eval mode; errors name the file and the field."""
    path = Path(path)
    payload = read_checkpoint(path, trust)
    cfg = _cfg(payload, path)
    use_ema = bool(cfg.get("training", {}).get("use_ema", False))
    key = "ema_model" if use_ema else "model"
    state = payload["state_dicts"].get(key)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: state_dicts.{key}: missing (cfg.training.use_ema is {use_ema})")
    settings = settings_from(cfg, state, path)
    stats = {}
    for name in ("obs", "action"):
        for stat in ("scale", "offset"):
            tensor = state.get(f"normalizer.params_dict.{name}.{stat}")
            if tensor is None:
                raise ValueError(f"{path}: state_dicts.{key}: normalizer.params_dict.{name}.{stat} is missing; a "
                                 "policy without its normalizer would act blind")
            stats[name, stat] = tensor.double().numpy()
    policy = DiffusionPolicyLowdim(settings, linear_normalizer(stats["obs", "scale"], stats["obs", "offset"]),
                                   linear_normalizer(stats["action", "scale"], stats["action", "offset"]),
                                   path.stem if path.stem not in ("latest", "last") else path.parent.name)
    weights = {k: v for k, v in state.items() if k.startswith("model.")}
    load_matching(policy, weights, f"{path}: state_dicts.{key}", "the config's ConditionalUnet1D")
    return policy.to(device).eval()
