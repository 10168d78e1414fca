"""Checkpoints: a folder with `config.yaml` (the resolved policy config) and `model.safetensors` (weights
and normalizer statistics). Loading never unpickles anything."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch
import yaml
from safetensors.torch import save_file

from gpc.app.schema import check, doc
from gpc.app.yaml_file import load_yaml
from gpc.core.normalizer import Normalizer
from gpc.policies.configuration import PolicyConfig
from gpc.policies.modeling import Policy
from gpc.policies.tensor_files import load_matching, open_tensors
from gpc.runtime.atomic import replace_directory

CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.safetensors"
NORMALIZER_PREFIX = "normalizer."


@dataclass
class TrainedInfo:
    step: int = field(metadata=doc("the training step the weights are from", minimum=0))
    dataset: str = field(metadata=doc("the training store"))
    seed: int = field(metadata=doc("training.seed"))


@dataclass
class CheckpointConfig:
    """A checkpoint's config.yaml, read with every field required (`require_all`): a checkpoint is never
    completed from defaults, so a flow parent that lost its `objective:` is an error, not a DDPM parent."""

    policy: PolicyConfig = field(metadata=doc("the resolved policy config"))
    trained: Optional[TrainedInfo] = field(default=None, metadata=doc(
        "how `gpc train` made it (absent in exports)", optional=True))


def read_checkpoint_config(path: Path) -> PolicyConfig:
    """The policy config of a checkpoint's config.yaml; errors name the file and the field."""
    return check(CheckpointConfig, load_yaml(path, "checkpoint config"), str(path), require_all=True).policy


class NonFiniteError(ValueError):
    """Weights or statistics that are NaN or inf, refused before anything is written."""


def refuse_non_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Nothing NaN or infinite is ever written: such weights act as garbage while looking like a policy."""
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise NonFiniteError(f"{where}: refusing to save non-finite values: {key} has {bad} NaN or inf of "
                                 f"{value.numel()}")


def save_policy(policy: Policy, directory: str | Path, extra: dict | None = None) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint in place. `extra`: more sections of
    config.yaml (`trained`), checked as the loader will read them."""
    directory = Path(directory)
    config = dataclasses.asdict(policy.config)
    config["normalization"] = {key: n.mode for key, n in policy.normalizers.items()}
    document = {"policy": config, **(extra or {})}
    check(CheckpointConfig, document, str(directory / CONFIG_FILE), require_all=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    for key, normalizer in policy.normalizers.items():
        tensors.update(normalizer.state_dict(f"{NORMALIZER_PREFIX}{key}."))
    refuse_non_finite(tensors, str(directory / WEIGHTS_FILE))
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
    save_file(tensors, str(tmp / WEIGHTS_FILE))
    replace_directory(tmp, directory)
    return directory


def select_action_stats(normalizers: dict[str, Normalizer], config, action_stats: str | None, where: str) -> None:
    """Make `action@<action_stats>` the action normalizer of a policy trained with per-group action
    statistics (`action_stats_by`); a policy with one set refuses a name it cannot honour."""
    groups = sorted(key.split("@", 1)[1] for key in normalizers if key.startswith("action@"))
    if not config.action_stats_by:
        if action_stats is not None:
            raise ValueError(f"{where}: action_stats: {action_stats!r} given, but the policy has one set of "
                             "action statistics")
        return
    if action_stats not in groups:
        raise ValueError(f"{where}: action_stats: the policy normalizes actions per {config.action_stats_by} "
                         f"({', '.join(groups)}); name one, got {action_stats!r}")
    normalizers["action"] = normalizers[f"action@{action_stats}"]


def read_checkpoint(directory: str | Path, action_stats: str | None = None, weights: bool = True,
                    also_needs: tuple[str, ...] = ()) -> tuple[PolicyConfig, dict[str, Normalizer], dict]:
    """A checkpoint folder's config, normalizers (the action's chosen by `action_stats` for a policy trained with
    `action_stats_by`) and, with `weights`, the network's tensors; whatever runs the network (torch or ONNX
    Runtime) reads it here. Errors name the file and what is wrong."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path, *(directory / name for name in also_needs)):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint file not found")
    config = read_checkpoint_config(config_path)
    normalizers, tensors = {}, {}
    with open_tensors(weights_path) as stored:
        names = set(stored.keys())
        for key, mode in config.normalization.items():
            prefix = f"{NORMALIZER_PREFIX}{key}."
            if f"{prefix}offset" not in names:
                raise ValueError(f"{weights_path}: normalizer for {key!r} is missing")
            stats = {f"{prefix}{name}": stored.get_tensor(f"{prefix}{name}") for name in ("offset", "scale")}
            normalizers[key] = Normalizer.from_state_dict(stats, prefix, mode)
        if weights:
            tensors = {name: stored.get_tensor(name) for name in names if not name.startswith(NORMALIZER_PREFIX)}
    select_action_stats(normalizers, config, action_stats, str(config_path))
    return config, normalizers, tensors


def load_policy(directory: str | Path, device: str | torch.device = "cpu", action_stats: str | None = None) -> Policy:
    """A policy in eval mode, ready to be a parent."""
    config, normalizers, tensors = read_checkpoint(directory, action_stats)
    policy = Policy(config, normalizers)
    load_matching(policy, tensors, str(Path(directory) / WEIGHTS_FILE), f"{CONFIG_FILE}'s network")
    return policy.to(device).eval()
