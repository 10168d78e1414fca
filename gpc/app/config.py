"""Composition from YAML: parents by checkpoint path and format, weights, working sampler, device.

The composition file's schema is `gpc.app.schemas.Composition` (gpc.app.schema checks it: unknown keys are
refused, each error names the file and the field), so `gpc` can print any error on one line and exit non-zero
before any output is written.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Callable, Union

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpc.app.schema import ConfigError, check
from gpc.app.schemas import Composition, ParentEntry
from gpc.core.composer import Composer, CompositionError
from gpc.core.contract import ParentView, first_non_finite
from gpc.core.operators import OperatorConfig, WeightSchedule
from gpc.core.samplers import SamplerConfig

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # gpc/: an installed copy ships the main job's checkpoints here
PROJECT_ROOT = PACKAGE_ROOT.parent  # a source checkout: checkpoints/, data/ and configs/ beside gpc/
__all__ = ["ConfigError", "Composition", "ParentEntry", "load_composer", "load_composition"]


def resolve_path(path: str, base: Path | None = None) -> Path:
    """Relative paths are tried from the working directory, then from `base` (a composition file's folder),
    then where gpc's shipped checkpoints and data are: inside an installed package, or in a source checkout."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for root in ([base] if base is not None else []) + [PACKAGE_ROOT]:
        if (root / candidate).exists():
            return root / candidate
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
    one-line error naming the field before any output exists, as is an `env.max_steps` beyond the env's own
    step limit. The probe's observation space is kept on the factory (`make.observation_space`) so parents'
    inputs can be checked against it."""

    def make():
        return instantiate(env.factory)

    try:
        probe = make()
    except Exception as err:  # noqa: BLE001 - simulators raise anything; each is a config error here
        raise ConfigError(f"{source}: env.factory: {first_line(err.__cause__ or err)}") from None  # hydra wraps it
    try:
        make.observation_space = probe.observation_space
        limit = getattr(probe, "_max_episode_steps", None)  # the env's own TimeLimit, if it has one
        max_steps = env.get("max_steps")
        if limit is not None and isinstance(max_steps, int) and limit < max_steps:
            raise ConfigError(f"{source}: env.max_steps: {max_steps} is beyond the env's own step limit of {limit}, "
                              f"which would end episodes first; give the factory max_episode_steps: {max_steps} too")
        track = list(env.get("track_max") or [])
        if track or need_frames:
            _, info = probe.reset(seed=0)
            unknown = [key for key in track if not isinstance(info.get(key), numbers.Real)]
            if unknown:
                numeric = sorted(k for k, v in info.items() if isinstance(v, numbers.Real) and not isinstance(v, bool))
                raise ConfigError(f"{source}: env.track_max: {unknown} not among the numbers the env's info gives "
                                  f"at reset: {numeric}")
        if need_frames:
            from gpc.runtime.video import NO_FRAMES, check_video_writer

            try:
                check_video_writer()
            except ValueError as err:
                raise ConfigError(f"{source}: {err}") from None
            try:
                frame = probe.render()
            except Exception as err:  # noqa: BLE001 - an env without a render mode may raise, not return None
                raise ConfigError(f"{source}: {NO_FRAMES} ({first_line(err)})") from None
            if getattr(frame, "ndim", 0) != 3:
                raise ConfigError(f"{source}: {NO_FRAMES}")
    finally:
        probe.close()
    return make


def check_inputs(parents, observation_space, source: str) -> None:
    """Every parent's inputs must be observations the env gives, of the shape the parent reads: refused here,
    before any output, rather than mid-rollout."""
    spaces = getattr(observation_space, "spaces", None)
    if spaces is None:
        raise ConfigError(f"{source}: env.factory: the env's observations are not a dict of named arrays")
    for i, parent in enumerate(parents):
        own = {env: key for key, env in getattr(parent, "observations", {}).items()}  # a ParentView's mapping
        for inp in parent.spec.inputs:
            read = f"{inp.key!r} (its {own[inp.key]!r})" if inp.key in own else repr(inp.key)
            if inp.key not in spaces:
                raise ConfigError(f"{source}: compose.parents[{i}].observations: parent {parent.spec.name!r} reads "
                                  f"{read}, which the env does not give (it gives {sorted(spaces)}); map it: "
                                  f"observations: {{{own.get(inp.key, inp.key)}: <env key>}}")
            shape = tuple(spaces[inp.key].shape or ())
            if not inp.accepts(shape):
                raise ConfigError(f"{source}: compose.parents[{i}]: parent {parent.spec.name!r} reads {read} as "
                                  f"{inp.kind} of shape {inp.shape}; the env gives shape {shape}")


def load_parents(entries: list[ParentEntry], source: str, device: str, base: Path | None = None) -> list:
    from gpc.policies.formats import recognize, registered

    formats = registered()
    parents = []
    for i, entry in enumerate(entries):
        where = f"{source}: parents[{i}]"
        path = resolve_path(entry.path, base)
        if not path.exists():
            raise ConfigError(f"{where}.path: not found: {entry.path}")
        if entry.loader is not None:
            if not entry.trust_code:
                raise ConfigError(f"{where}.loader: {entry.loader!r} runs code named by this file; set trust_code: "
                                  "true on the entry if you trust it, or use a registered format (format:)")
            try:
                load = get_method(entry.loader)
            except Exception as err:  # noqa: BLE001 - any import failure is this field's fault
                raise ConfigError(f"{where}.loader: {first_line(err.__cause__ or err)}") from None
            options = {}
        else:
            fmt = formats.get(entry.format) if entry.format else recognize(path)
            if fmt is None:
                known = ", ".join(f"{f.name} ({f.describe})" for f in formats.values())
                if entry.format:
                    raise ConfigError(f"{where}.format: unknown format {entry.format!r}; known: {known}")
                raise ConfigError(f"{where}.path: {entry.path} is no checkpoint gpc recognizes; known formats: {known}")
            options = {key: getattr(entry, key) for key in ("action_stats", "trust")
                       if getattr(entry, key) not in (None, False)}
            for key in options:
                if key not in fmt.options and "*" not in fmt.options:
                    raise ConfigError(f"{where}.{key}: the {fmt.name} format takes no {key!r}")
            load = fmt.load
        try:
            parent = load(path, device=device, **options)
        except ConfigError:
            raise
        except (ValueError, FileNotFoundError, KeyError, TypeError, RuntimeError) as err:
            raise ConfigError(f"{where}: cannot load {entry.path}: {first_line(err)}") from None
        if not all(hasattr(parent, name) for name in ("spec", "encode", "predict")):
            raise ConfigError(f"{where}: loading {entry.path} gave a {type(parent).__name__}, which is not a gpc "
                              "parent (it needs spec, encode and predict)")
        bad = first_non_finite(parent)
        if bad is not None:
            raise ConfigError(f"{where}: {entry.path}: its {bad} holds NaN or inf; such a parent cannot act")
        if entry.name is not None or entry.observations:
            try:
                parent = ParentView(parent, entry.name, entry.observations)
            except ValueError as err:
                raise ConfigError(f"{where}.{err}") from None
        parents.append(parent)
    return parents


def sampler_config(value: Union[str, SamplerConfig], parents: list) -> SamplerConfig:
    """`native`: the first parent's own sampler; or the given one."""
    return parents[0].spec.sampler if value == "native" else value


def weight_candidates(value: Any, n_parents: int, source: str, field: str = "weights") -> list[WeightSchedule]:
    """A vector, a list of vectors, or schedules {knots: [...], weights: [[...], ...]}."""
    if value is None:
        raise ConfigError(f"{source}: {field}: missing")
    raw = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
    if isinstance(raw, dict) or isinstance(raw, list) and raw and not isinstance(raw[0], (list, dict)):
        raw = [raw]  # a single candidate
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: {field}: need a weight vector, a list of them, or schedules "
                          f"{{knots: [...], weights: [[...], ...]}}, got {raw!r}")
    try:
        schedules = [_weight_schedule(c, n_parents, f"{field}[{k}]" if len(raw) > 1 else field)
                     for k, c in enumerate(raw)]
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    first = {}
    for k, schedule in enumerate(schedules):
        if schedule.key in first:
            raise ConfigError(f"{source}: {field}[{k}]: the same weights as {field}[{first[schedule.key]}]")
        first[schedule.key] = k
    return schedules


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
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def operator_config(value: Any, source: str) -> OperatorConfig:
    """`convex` (default), `or`, `and`, or a mapping {name, temperature, probe_scale}."""
    value = "convex" if value is None else value
    if isinstance(value, OperatorConfig):
        return value
    return check(OperatorConfig, {"name": value} if isinstance(value, str) else value, source, "operator")


def read_composition(config: Any, source: str) -> Composition:
    composition = check(Composition, config, source)
    if not composition.parents:
        raise ConfigError(f"{source}: parents: need a list of parents, each with a 'path'")
    return composition


def check_device(device: str, source: str) -> None:
    """A device torch knows and this machine has, refused before any checkpoint is read (so that a missing GPU
    is not blamed on the checkpoint)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"{source}: device: {device!r} is not a torch device ({first_line(err)})") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise ConfigError(f"{source}: device: {device} is not available here (torch sees {count} CUDA GPUs)")
    elif parsed.type != "cpu":
        raise ConfigError(f"{source}: device: {device}: gpc runs on cpu or cuda")


def load_composer(config: Any, source: str, base: Path | None = None) -> Composer:
    """Build the composer (parents, sampler, operator, fast path, device) from a composition config."""
    composition = read_composition(config, source)
    check_device(composition.device, source)
    operator = operator_config(composition.operator, source)
    parents = load_parents(composition.parents, source, composition.device, base)
    sampler = sampler_config(composition.sampler, parents)
    try:
        return Composer(parents, sampler, composition.n_action_steps, device=composition.device, operator=operator,
                        fast=composition.fast, normalizers=composition.normalizers)
    except CompositionError as err:
        raise ConfigError(f"{source}: {err.field}: {err}") from None


def chosen_weights(weights: Any, compose: DictConfig, source: str) -> list[WeightSchedule]:
    """A command's `weights` if given, else the composition's, checked against its parent count before any parent
    loads (so that a bad weight is the one line, ahead of what loading may warn)."""
    n_parents = len(read_composition(compose, f"{source}: compose").parents)
    if weights is not None:
        return weight_candidates(weights, n_parents, source)
    return weight_candidates(compose.get("weights"), n_parents, source, "compose.weights")


def load_composition(config: Any, source: str) -> tuple[Composer, list[WeightSchedule]]:
    """The composer and the weight candidates a composition config names."""
    composer = load_composer(config, source)
    return composer, weight_candidates(OmegaConf.select(config, "weights") if isinstance(config, DictConfig)
                                       else config.get("weights"), len(composer.parents), source)
