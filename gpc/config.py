"""Composition from YAML: parents by checkpoint path, weights, working sampler, device.

Every error names the config source and the field, so `gpc` can print it on one line and exit non-zero
before any output is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpc.acceleration import FastPath
from gpc.composer import Composer, CompositionError
from gpc.noise import VPSchedule
from gpc.operators import WeightSchedule
from gpc.samplers import SamplerConfig
from gpc.superposition import OperatorConfig

DEFAULT_LOADER = "gpc.policies.checkpoint.load_policy"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with `source: field:`."""


def integer_setting(config: DictConfig, key: str, source: str, minimum: int = 1) -> int:
    """An integer setting (dotted `key`), refused below `minimum` or when not an integer."""
    value = OmegaConf.select(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: {key}: need an integer >= {minimum}, got {value!r}")
    return value


def resolve_path(path: str) -> Path:
    """Relative paths are tried from the working directory, then from the project root."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return PROJECT_ROOT / candidate


def first_line(err: BaseException) -> str:
    """The error's first line, joined with the next ones while a line ends in a colon (`Error loading 'x':`
    says nothing without the reason under it)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    end = 0
    while lines[end].endswith(":") and end + 1 < len(lines):
        end += 1
    return " ".join(lines[:end + 1])


def env_factory(env: DictConfig, source: str, need_frames: bool = False) -> Callable[[], Any]:
    """`env.factory` as a factory of envs, tried once here: a factory that cannot make an env (a misspelt
    task, a missing dataset), or one whose envs render no frames when videos are asked for, is then a
    one-line error naming the field before any output exists."""

    def make():
        return instantiate(env.factory)

    try:
        probe = make()
    except Exception as err:  # noqa: BLE001 - simulators raise anything; each is a config error here
        raise ConfigError(f"{source}: env.factory: {first_line(err.__cause__ or err)}") from None  # hydra wraps it
    try:
        if need_frames:
            from gpc.video import NO_FRAMES, check_video_writer

            try:
                check_video_writer()
            except ValueError as err:
                raise ConfigError(f"{source}: {err}") from None
            probe.reset(seed=0)
            try:
                frame = probe.render()
            except Exception as err:  # noqa: BLE001 - an env without a render mode may raise, not return None
                raise ConfigError(f"{source}: {NO_FRAMES} ({first_line(err)})") from None
            if getattr(frame, "ndim", 0) != 3:
                raise ConfigError(f"{source}: {NO_FRAMES}")
    finally:
        probe.close()
    return make


def load_parents(config: DictConfig, source: str, device: str) -> list:
    entries = config.get("parents")
    if not isinstance(entries, (list, ListConfig)) or not entries:
        raise ConfigError(f"{source}: parents: need a list of parents, each with a 'path'")
    parents = []
    for i, entry in enumerate(entries):
        field = f"parents[{i}]"
        if not isinstance(entry, (dict, DictConfig)):
            raise ConfigError(f"{source}: {field}: need a mapping {{path: ...}}, got {entry!r}")
        if "path" not in entry:
            raise ConfigError(f"{source}: {field}.path: missing")
        path = resolve_path(str(entry.path))
        if not path.exists():
            raise ConfigError(f"{source}: {field}.path: checkpoint not found: {entry.path}")
        try:
            loader = get_method(entry.get("loader", DEFAULT_LOADER))
            options = {"action_stats": str(entry.action_stats)} if entry.get("action_stats") is not None else {}
            parents.append(loader(path, device=device, **options))
        except Exception as err:
            raise ConfigError(f"{source}: {field}: cannot load {entry.path}: {err}") from None
    return parents


def sampler_config(value: Any, parents: list, source: str) -> SamplerConfig:
    """`native` (default): the first parent's own sampler; or an explicit mapping."""
    reference = parents[0].spec
    steps = getattr(getattr(parents[0], "config", None), "objective", None)
    native_steps = steps.num_inference_steps if steps is not None else 10
    if value is None or value == "native":
        return SamplerConfig.native(reference.path, reference.prediction_type, native_steps)
    if not isinstance(value, (dict, DictConfig)):
        raise ConfigError(f"{source}: sampler: need 'native' or a mapping {{name, num_inference_steps, ...}}, "
                          f"got {value!r}")
    raw = OmegaConf.to_container(value) if isinstance(value, DictConfig) else dict(value)
    if "schedule" in raw:
        raw["schedule"] = _options(VPSchedule, raw["schedule"], "sampler.schedule", source)
    return _options(SamplerConfig, raw, "sampler", source)


def weight_candidates(value: Any, n_parents: int, source: str, field: str = "weights") -> list[WeightSchedule]:
    """A vector, a list of vectors, or schedules {knots: [...], weights: [[...], ...]}."""
    if value is None:
        raise ConfigError(f"{source}: {field}: missing")
    raw = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
    if isinstance(raw, dict) or isinstance(raw, list) and raw and not isinstance(raw[0], (list, dict)):
        raw = [raw]  # a single candidate
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: {field}: need a weight vector, a list of them, or schedules "
                          f"{{knots: [...], weights: [[...], ...]}}, got {raw!r}")
    try:
        return [_weight_schedule(c, n_parents, f"{field}[{k}]" if len(raw) > 1 else field) for k, c in enumerate(raw)]
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None


def _weight_schedule(raw: Any, n_parents: int, where: str) -> WeightSchedule:
    """One weight candidate, checked; errors start with `where`."""
    if isinstance(raw, dict):
        if set(raw) != {"knots", "weights"}:
            raise ValueError(f"{where}: a schedule needs exactly 'knots' and 'weights', got {sorted(raw)}")
        if not _numbers(raw["knots"]) or not isinstance(raw["weights"], list) or not all(map(_numbers, raw["weights"])):
            raise ValueError(f"{where}: knots and weights must be lists of numbers, got {raw}")
        schedule = WeightSchedule(tuple(raw["knots"]), tuple(tuple(w) for w in raw["weights"]))
    elif _numbers(raw):
        schedule = WeightSchedule.constant(raw)
    else:
        raise ValueError(f"{where}: need a list of numbers, got {raw!r}")
    schedule.validate(n_parents, where=where)
    return schedule


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)


def _options(cls, value: Any, field: str, source: str):
    """A dataclass of options from a YAML mapping; errors name the field (`source: field.key: ...`)."""
    try:
        raw = OmegaConf.to_container(value) if isinstance(value, DictConfig) else dict(value)
        return cls(**raw)
    except TypeError as err:
        raise ConfigError(f"{source}: {field}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{source}: {field}.{err}") from None


def operator_config(value: Any, source: str) -> OperatorConfig:
    """`convex` (default), `or`, `and`, or a mapping {name, temperature, probe_scale}."""
    if value is None or isinstance(value, str):
        value = {"name": value or "convex"}
    return _options(OperatorConfig, value, "operator", source)


def fast_path_config(value: Any, source: str) -> FastPath:
    """`fast: {fuse, compile, precision}`; absent means the measured defaults."""
    return _options(FastPath, value or {}, "fast", source)


def load_composer(config: DictConfig, source: str) -> Composer:
    """Build the composer (parents, sampler, operator, fast path, device) from a composition config."""
    device = str(config.get("device", "cpu"))
    operator = operator_config(config.get("operator"), source)
    fast = fast_path_config(config.get("fast"), source)
    parents = load_parents(config, source, device)
    sampler = sampler_config(config.get("sampler"), parents, source)
    try:
        return Composer(parents, sampler, config.get("n_action_steps"), device=device, operator=operator,
                        fast=fast)
    except CompositionError as err:
        raise ConfigError(f"{source}: {err.field}: {err}") from None


def load_composition(config: DictConfig, source: str) -> tuple[Composer, list[WeightSchedule]]:
    """The composer and the weight candidates a composition config names."""
    composer = load_composer(config, source)
    return composer, weight_candidates(config.get("weights"), len(composer.parents), source)
