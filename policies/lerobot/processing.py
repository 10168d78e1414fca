"""A LeRobot checkpoint's normalization, as the checkpoint actually applies it.

Since LeRobot 0.4 the statistics live beside the weights, in the processor pipelines' files:
`policy_preprocessor.json` names a `normalizer_processor` step (its `norm_map` by feature type, `eps`, and the
safetensors file holding `<feature>.<stat>`), `policy_postprocessor.json` an `unnormalizer_processor` step for the
action. Older folders keep them as buffers in `model.safetensors` (`normalize_inputs.buffer_observation_state.min`,
...) and take the modes from the config's `normalization_mapping`.

Every mode is an affine map per dimension, returned as (offset, scale) with `normalized = (x - offset) / scale`,
computed in float64 from the stored float32 statistics:

- MEAN_STD: (x - mean) / (std + eps) forward; x * std + mean back (LeRobot adds eps one way only).
- MIN_MAX: 2 (x - min) / (max - min) - 1, with eps standing in for a zero range (0.4+); before 0.4 the forward
  range was max - min + 1e-8 everywhere. QUANTILES and QUANTILE10 are MIN_MAX on q01/q99 and q10/q90.
- IDENTITY, or a feature type missing from the map (LeRobot's default map has no ENV entry): raw.

A feature LeRobot would normalize but whose statistics are absent is refused: LeRobot itself passes it through
raw, and the policy then acts blind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpc.policies.lerobot.configuration import ACTION, DiffusionConfig, Feature
from gpc.policies.tensor_files import load_tensors

PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"
LEGACY_EPS = 1e-8
RANGES = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}
Affine = tuple[np.ndarray, np.ndarray]


def read_normalization(folder: Path, config: DiffusionConfig, weights: dict[str, np.ndarray]
                       ) -> dict[str, Affine | None]:
    """(offset, scale) per input feature key and for 'action' (None where the checkpoint feeds it raw)."""
    if (folder / PREPROCESSOR).is_file() or (folder / POSTPROCESSOR).is_file():
        return _from_processors(folder, config)
    if any(key.startswith("normalize_inputs.") for key in weights):
        return _from_legacy_buffers(folder, config, weights)
    raise ValueError(f"{folder}: no normalization statistics: neither {PREPROCESSOR} / {POSTPROCESSOR} (LeRobot 0.4+) "
                     "nor normalize_inputs.* buffers in model.safetensors (older LeRobot); a policy without them "
                     "would act blind")


def _from_processors(folder: Path, config: DiffusionConfig) -> dict[str, Affine | None]:
    pre = _step(folder / PREPROCESSOR, "normalizer_processor")
    post = _step(folder / POSTPROCESSOR, "unnormalizer_processor")
    result = {}
    for feature in config.inputs:
        keys = pre["config"].get("normalize_observation_keys")
        if keys is not None and feature.key not in keys:
            result[feature.key] = None
        else:
            result[feature.key] = _affine(pre, feature, inverse=False, legacy=False)
    result[ACTION] = _affine(post, config.action, inverse=True, legacy=False)
    return result


def _step(file: Path, registry_name: str) -> dict:
    """The processor step named `registry_name`, with its statistics loaded under `stats`."""
    if not file.is_file():
        raise ValueError(f"{file}: missing: a LeRobot 0.4+ folder keeps its normalization in {PREPROCESSOR} and "
                         f"{POSTPROCESSOR}")
    try:
        pipeline = json.loads(file.read_text())
        steps = [s for s in pipeline["steps"] if s.get("registry_name") == registry_name]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{file}: not a LeRobot processor pipeline ({type(err).__name__}: {err})") from None
    if len(steps) != 1:
        raise ValueError(f"{file}: steps: need one '{registry_name}' step, found {len(steps)}")
    step = steps[0]
    config = step.get("config") or {}
    if not isinstance(config.get("norm_map"), dict):
        raise ValueError(f"{file}: steps.{registry_name}.config.norm_map: missing")
    state_file = step.get("state_file")
    stats_path = file.parent / str(state_file)
    if not state_file or not stats_path.is_file():
        raise ValueError(f"{file}: steps.{registry_name}.state_file: the normalization statistics "
                         f"{state_file or '(none named)'} are missing from {file.parent}")
    tensors = load_tensors(str(stats_path), "numpy")
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        feature, _, stat = key.rpartition(".")
        stats.setdefault(feature, {})[stat] = value
    return {"config": config, "stats": stats, "where": str(stats_path), "eps": float(config.get("eps", 1e-8))}


def _affine(step: dict, feature: Feature, inverse: bool, legacy: bool) -> Affine | None:
    mode = step["config"]["norm_map"].get(feature.type, "IDENTITY")
    if mode == "IDENTITY":
        return None
    stats = step["stats"].get(feature.key)
    where = f"{step['where']}: {feature.key}"
    needed = ("mean", "std") if mode == "MEAN_STD" else RANGES.get(mode)
    if needed is None:
        raise ValueError(f"{where}: normalization mode {mode!r} is not supported; expected IDENTITY, MEAN_STD, "
                         f"{', '.join(RANGES)}")
    if stats is None or any(name not in stats for name in needed):
        raise ValueError(f"{where}: {mode} statistics {needed} are missing; LeRobot would pass this feature through "
                         "raw and the policy would act blind")
    a, b = (np.asarray(stats[name], dtype=np.float64) for name in needed)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"{where}: {mode} statistics are not finite")
    eps = step["eps"]
    if mode == "MEAN_STD":
        return a, b if inverse else b + eps
    span = b - a
    if legacy:
        span = span if inverse else span + LEGACY_EPS
    else:
        span = np.where(span == 0, eps, span)
    return a + span / 2, span / 2


def _from_legacy_buffers(folder: Path, config: DiffusionConfig, weights: dict[str, np.ndarray]
                         ) -> dict[str, Affine | None]:
    """Pre-0.4 folders: `normalize_inputs.buffer_<key with dots as underscores>.<stat>`; the action's inverse
    from `unnormalize_outputs.buffer_action.<stat>`."""
    norm_map = config.normalization_mapping

    def step(prefix: str) -> dict:
        stats: dict[str, dict[str, np.ndarray]] = {}
        for feature in (*config.inputs, config.action):
            name = f"{prefix}.buffer_{feature.key.replace('.', '_')}."
            found = {k[len(name):]: v for k, v in weights.items() if k.startswith(name)}
            if found:
                stats[feature.key] = found
        return {"config": {"norm_map": norm_map}, "stats": stats, "where": f"{folder}/model.safetensors",
                "eps": LEGACY_EPS}

    inputs, outputs = step("normalize_inputs"), step("unnormalize_outputs")
    result = {f.key: _affine(inputs, f, inverse=False, legacy=True) for f in config.inputs}
    result[ACTION] = _affine(outputs, config.action, inverse=True, legacy=True)
    return result
