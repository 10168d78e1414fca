"""Train a parent policy from a zarr replay buffer (`gpc train`, configured by configs/train.yaml).

AdamW with warm-up and cosine decay, EMA weights (diffusers' EMAModel, Diffusion Policy's settings), and
periodic checkpoints, on a GPU when there is one (`training.device`). Every batch and every noise draw
comes from a generator on that device seeded by (seed, step), and the trainer state (weights, EMA,
optimizer, step) is saved with safetensors, so on the CPU a killed run resumes to the same weights an
uninterrupted run reaches (CUDA draws other random numbers, and cuDNN may pick non-deterministic kernels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from gpc.app.config import first_line
from gpc.app.schema import ConfigError, check, doc
from gpc.core.normalizer import Normalizer
from gpc.policies.checkpoint import NonFiniteError, refuse_non_finite, save_policy
from gpc.policies.configuration import PolicyConfig
from gpc.policies.modeling import Policy
from gpc.policies.sgfd import SGFD, SGFDConfig, weighted_loss
from gpc.runtime.atomic import replace_directory, write_text_whole
from gpc.runtime.outputs import check_output_dir

log = logging.getLogger(__name__)
STATE_DIR = "train_state"


@dataclass
class DatasetConfig:
    path: str = field(default="data/pusht/demos.zarr", metadata=doc(
        "the zarr replay buffer to train on (Diffusion Policy's layout: data/<key>, meta/episode_ends)"))


@dataclass
class TrainingConfig:
    seed: int = field(default=0, metadata=doc("seeds the weights, every batch and every noise draw", minimum=0))
    steps: int = field(default=3000, metadata=doc("optimizer steps in all (a resumed run continues to it)",
                                                  minimum=1))
    batch_size: int = field(default=128, metadata=doc("training windows per step", minimum=1))
    lr: float = field(default=3.0e-4, metadata=doc("peak AdamW learning rate", positive=True))
    weight_decay: float = field(default=1.0e-6, metadata=doc("AdamW weight decay", minimum=0))
    warmup_steps: int = field(default=200, metadata=doc("linear warm-up steps before the cosine decay", minimum=0))
    ema_power: float = field(default=0.75, metadata=doc("EMA warm-up power (Diffusion Policy's)", positive=True))
    ema_max_decay: float = field(default=0.9999, metadata=doc("EMA decay once warmed up", minimum=0, maximum=1))
    log_every: int = field(default=50, metadata=doc("steps between rows of train_log.jsonl", minimum=1))
    checkpoint_every: int = field(default=500, metadata=doc(
        "steps between checkpoints (policy/ and train_state/)", minimum=1))
    progress: bool = field(default=True, metadata=doc("show a progress bar"))
    device: str = field(default="auto", metadata=doc(
        "auto (the current GPU when torch sees one, else cpu), cpu, cuda, cuda:1, ..."))
    sgfd: SGFDConfig = field(default_factory=SGFDConfig, metadata=doc(
        "SGFD sample reweighting (policies/sgfd.py)"))


@dataclass
class TrainConfig:
    """configs/train.yaml: one policy (configs/policy/*.yaml) trained on one zarr dataset."""

    policy: PolicyConfig = field(metadata=doc("the policy to train (configs/policy/*.yaml)"))
    dataset: DatasetConfig = field(default_factory=DatasetConfig, metadata=doc("the training data"))
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata=doc("optimization settings"))
    output_dir: Optional[str] = field(default=None, metadata=doc(
        "where policy/, train_state/ and train_log.jsonl go; default outputs/train/<policy.name>"))

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = f"outputs/train/{self.policy.name}"


def load_train_config(config: Any, source: str = "train config") -> TrainConfig:
    """The train command's config, checked field by field (unknown keys, types, ranges)."""
    return check(TrainConfig, config, source)


def make_dataset(config, policy_config, need_env: bool = False):
    """The sequence dataset, normalizers fit on it, per-window language instructions and environment labels.

    A language feature `k` reads one instruction per episode from the store's `meta/k`; SGFD reads one
    integer environment label per episode from `meta/env`; `action_stats_by` fits action statistics per value
    of its `meta/` key.
    """
    from gpc.policies.data.replay_buffer import ReplayBuffer, read_replay_buffer
    from gpc.policies.data.sequence import SequenceDataset, fit_normalizers

    features = [f for f in policy_config.obs if f.type != "language"]
    stored = read_replay_buffer(config.dataset.path, sorted({f.dataset_key or f.key for f in features} | {"action"}))
    check_data(stored, "action", (policy_config.action_dim,), "policy.action_dim")
    data = {"action": stored["action"]}
    for i, f in enumerate(policy_config.obs):
        if f.type == "language":
            continue
        per_step = {"low_dim": tuple(f.shape), "pointcloud": (None, f.shape[-1])}.get(f.type)  # any count of points
        check_data(stored, f.dataset_key or f.key, per_step, f"policy.obs[{i}].shape", f.dataset_dims)
        array = stored[f.dataset_key or f.key]
        data[f.key] = array[..., slice(*f.dataset_dims)] if f.dataset_dims else array
    normalizers = {}
    if policy_config.action_stats_by:
        data["action"], normalizers = actions_normalized_by_group(stored, policy_config, config.dataset.path)
    buffer = ReplayBuffer(data, stored.episode_ends, stored.meta, source=stored.source)
    array_keys = [f.key for f in features]
    fit_keys = [f.key for f in policy_config.obs if f.type == "low_dim"]
    if "action" not in normalizers:  # otherwise fit per group above
        fit_keys.append("action")
    for key in fit_keys:
        normalizers.update(fit_normalizers(buffer, [key], policy_config.normalization.get(key, "limits")))
    dataset = SequenceDataset(buffer, obs_keys=array_keys, horizon=policy_config.horizon,
                              n_obs_steps=policy_config.n_obs_steps, n_action_steps=policy_config.n_action_steps)
    episode_of_window = np.searchsorted(buffer.episode_ends, dataset.windows[:, 2], side="left")
    if len(dataset) == 0:
        raise ValueError(f"{config.dataset.path}: no episode is long enough for one training window "
                         f"(policy.horizon={policy_config.horizon})")
    languages = {}
    for feature in (f for f in policy_config.obs if f.type == "language"):
        languages[feature.key] = [str(v) for v in per_episode(buffer, feature.key, config.dataset.path,
                                                              "one instruction per episode")[episode_of_window]]
    envs = None
    if need_env:  # labels of any type, numbered 0..K-1
        labels = per_episode(buffer, "env", config.dataset.path, "one environment label per episode; SGFD needs it")
        envs = torch.as_tensor(np.unique(labels, return_inverse=True)[1][episode_of_window])
    return dataset, normalizers, languages, envs


def check_data(stored, key: str, per_step: tuple | None, shape_field: str, dims: list[int] | None = None) -> None:
    """Refuse what would train on garbage or fail mid-way: a per-step shape other than the policy's
    (`per_step`, None for any size; compared after `dims`), or any NaN or inf in the part of `data/<key>`
    that training reads (`dims`: [start, stop) of the last axis), named by index, episode and step."""
    array, where = stored[key], f"{stored.source}: data/{key}"
    if dims is not None and (array.ndim < 2 or dims[1] > array.shape[-1]):
        raise ValueError(f"{where} has shape {list(array.shape)}; dataset_dims {dims} reach past its last axis")
    shape = array.shape[1:-1] + ((dims[1] - dims[0],) if dims is not None else array.shape[-1:])
    if per_step is not None and (array.ndim < 2 or len(shape) != len(per_step)
                                 or any(want not in (None, got) for want, got in zip(per_step, shape))):
        sliced = f" (dims {dims}: {list(shape)} per step)" if dims else ""
        wanted = ", ".join("any" if d is None else str(d) for d in per_step)
        raise ValueError(f"{where} has shape {list(array.shape)}{sliced}, but {shape_field} says [{wanted}] per step")
    if array.dtype.kind not in "fc":  # integers (uint8 images) are always finite
        return
    part = array[..., dims[0]:dims[1]] if dims is not None else array
    rows = max(1, (1 << 24) // max(1, int(np.prod(part.shape[1:]))))  # a bounded mask at a time
    for first in range(0, len(part), rows):
        finite = np.isfinite(part[first:first + rows])
        if finite.all():
            continue
        index = list(np.unravel_index(int(np.argmin(finite)), finite.shape))
        index[0] += first
        value = part[tuple(index)]
        if dims is not None:
            index[-1] += dims[0]  # named in the stored array's coordinates
        episode = int(np.searchsorted(stored.episode_ends, index[0], side="right"))
        step = index[0] - int(stored.episode_starts[episode])
        raise ValueError(f"{where}[{', '.join(map(str, index))}] is {value} (episode {episode}, step {step}); "
                         "training needs finite values: fix or drop that episode")


def per_episode(buffer, key: str, path, what: str) -> np.ndarray:
    """`meta/<key>`, checked to hold one value per episode."""
    if key not in buffer.meta:
        raise ValueError(f"{path}: meta/{key} ({what}) is missing")
    values = np.asarray(buffer.meta[key])
    if len(values) != buffer.n_episodes:
        raise ValueError(f"{path}: meta/{key} has {len(values)} values for {buffer.n_episodes} episodes ({what})")
    return values


def actions_normalized_by_group(stored, policy_config, path) -> tuple[np.ndarray, dict[str, Normalizer]]:
    """Actions normalized with statistics fit per value of `meta/<action_stats_by>`, and the normalizers:
    `action@<value>` for each value, and an identity `action`, since the actions are normalized already."""
    key = policy_config.action_stats_by
    groups = np.array([str(value) for value in per_episode(stored, key, path,
                                                           "one value per episode, to fit action statistics by")])
    step_group = np.repeat(groups, stored.episode_lengths)
    action = np.array(stored["action"], dtype=np.float32)
    normalizers = {"action": Normalizer.identity(action.shape[-1])}
    for group in np.unique(groups):
        rows = step_group == group
        normalizer = Normalizer.fit(action[rows], policy_config.normalization.get("action", "limits"))
        normalizers[f"action@{group}"] = normalizer
        action[rows] = normalizer.normalize(action[rows])
    return action, normalizers


def collate(dataset, indices, languages=None, envs=None):
    items = [dataset[int(i)] for i in indices]
    obs = {key: torch.stack([torch.as_tensor(item["obs"][key]) for item in items]) for key in items[0]["obs"]}
    for key, per_window in (languages or {}).items():
        obs[key] = [per_window[int(i)] for i in indices]
    batch = {"obs": obs, "action": torch.stack([torch.as_tensor(item["action"]) for item in items])}
    if envs is not None:
        batch["env"] = envs[indices]
    return batch


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, as a pure function of the step (so resuming is exact)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Optimizer slots as safetensors tensors, and the param groups (JSON) needed to load them back."""
    opt = optimizer.state_dict()
    return ({f"{pid}.{name}": value.contiguous() for pid, slot in opt["state"].items()
             for name, value in slot.items()}, opt["param_groups"])


RESUME_FREE = ("steps", "progress", "log_every", "checkpoint_every", "device")  # training keys a resume may change


def run_fingerprint(config: DictConfig) -> str:
    """What makes two runs the same run (policy, dataset, training settings) and so lets one resume the other."""
    run = {key: OmegaConf.to_container(config[key], resolve=True) if key in config else {}
           for key in ("policy", "dataset", "training")}
    for key in RESUME_FREE:
        run["training"].pop(key, None)
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainState:
    """train_state/state.json: where a run stands; the tensors lie beside it in safetensors files."""

    step: int = field(metadata=doc("steps done", minimum=0))
    ema_optimization_step: int = field(metadata=doc("the EMA's step count", minimum=0))
    param_groups: list[dict[str, Any]] = field(metadata=doc("the optimizer's param groups"))
    run: Optional[str] = field(default=None, metadata=doc("run_fingerprint; absent in states saved before it"))
    device: str = field(default="cpu", metadata=doc("where it trained; states saved before it trained on the CPU"))
    sgfd_param_groups: Optional[list[dict[str, Any]]] = field(default=None, metadata=doc(
        "the SGFD classifier optimizer's param groups, with SGFD on"))


def _state_files(policy, ema, optimizer, step: int, sgfd=None, run: str = "") -> tuple[dict, dict]:
    """The trainer state as {file: tensors} and its state.json, refused (NonFiniteError) if any tensor is NaN
    or inf: a resumed run would go on from garbage."""
    model = {k: v.detach().clone() for k, v in policy.state_dict().items()}  # the EMA is swapped in to save it
    files = {"model.safetensors": model,
             "ema.safetensors": {f"{i}": p.contiguous() for i, p in enumerate(ema.shadow_params)}}
    files["optimizer.safetensors"], param_groups = _optimizer_tensors(optimizer)
    meta = {"step": step, "run": run, "device": str(next(policy.parameters()).device),
            "ema_optimization_step": ema.optimization_step, "param_groups": param_groups}
    if sgfd is not None:
        files["sgfd_classifier.safetensors"] = {k: v.contiguous() for k, v in sgfd.classifier.state_dict().items()}
        files["sgfd_optimizer.safetensors"], meta["sgfd_param_groups"] = _optimizer_tensors(sgfd.optimizer)
    for name, tensors in files.items():
        refuse_non_finite(tensors, f"{STATE_DIR}/{name}")
    return files, meta


def _save_state(out: Path, files: dict, meta: dict) -> None:
    """Write the state (from `_state_files`) whole: a crash mid-save leaves the previous one in place."""
    state = out / STATE_DIR
    tmp = out / f".{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # a save cut short must not lend its files to this one
    tmp.mkdir(parents=True)
    for name, tensors in files.items():
        save_file(tensors, str(tmp / name))
    (tmp / "state.json").write_text(json.dumps(meta))
    replace_directory(tmp, state)


def _damaged(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}; the trainer state in {path.parent} is damaged and is left as it is: "
                      "delete that folder to train from scratch, or train into a new output_dir")


def _read_file(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A state file's tensors, refused unless readable and finite."""
    if not path.is_file():
        raise _damaged(path, "missing")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _damaged(path, f"not a readable safetensors file ({first_line(err)})") from None
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise _damaged(path, f"{key} holds NaN or inf")
    return tensors


def _read_tensors(path: Path, expected: dict[str, torch.Tensor], what: str, device: str = "cpu"
                  ) -> dict[str, torch.Tensor]:
    """`_read_file`, refused unless it holds exactly `expected`'s keys and shapes."""
    tensors = _read_file(path, device)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _damaged(path, f"does not hold {what}: " + "; ".join(
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys))
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise _damaged(path, f"{key} has shape {list(value.shape)}, {what} has {list(expected[key].shape)}")
    return tensors


def _load_optimizer(optimizer, path: Path, param_groups: list) -> None:
    """Load the slots file `<param index>.<slot>` (a 0-dim `step`, the rest shaped as their parameter) and
    the param groups, refusing what does not fit the optimizer. Read on the CPU: loading moves the slots to
    their parameters' device and leaves `step` where a fresh optimizer keeps it."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    slots: dict[int, dict] = {}
    for key, value in _read_file(path).items():
        pid, _, name = key.partition(".")
        if not pid.isdigit() or int(pid) >= len(params) or not name:
            raise _damaged(path, f"{key!r} names no parameter of the optimizer ({len(params)} parameters)")
        shape = torch.Size([]) if name == "step" else params[int(pid)].shape
        if value.shape != shape:
            raise _damaged(path, f"{key} has shape {list(value.shape)}, its parameter's slot has {list(shape)}")
        slots.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": param_groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise _damaged(path.with_name("state.json"), f"param_groups do not fit the optimizer ({first_line(err)})"
                       ) from None


def _load_state(out: Path, policy, ema, optimizer, sgfd=None, run: str = "", device: str = "cpu") -> int:
    """Resume from `out/train_state`, every file checked (readable, the right keys and shapes, finite) as it is
    read: a damaged state is an error naming the file, never silently replaced by a fresh run."""
    state = out / STATE_DIR
    meta_path = state / "state.json"
    try:
        raw = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise _damaged(meta_path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(meta_path, f"not readable JSON ({err})") from None
    try:
        meta = check(TrainState, raw, str(meta_path))
    except ConfigError as err:
        raise _damaged(meta_path, str(err).removeprefix(f"{meta_path}: ")) from None
    if meta.run is not None and meta.run != run:
        raise ValueError(f"output_dir: {out} holds a run with another policy, dataset or training settings; "
                         "resume it with the same ones, or train into a new output_dir")
    if meta.device != device:
        log.warning("resuming on %s a run saved on %s: the weights will not match an uninterrupted run's",
                    device, meta.device)
    if sgfd is not None and meta.sgfd_param_groups is None:
        raise _damaged(meta_path, "sgfd_param_groups: missing, though SGFD is on")
    params = list(policy.parameters())
    model = _read_tensors(state / "model.safetensors", policy.state_dict(), "the policy's weights")
    shadow = _read_tensors(state / "ema.safetensors", {f"{i}": p for i, p in enumerate(params)},
                           "one EMA tensor per policy parameter", device)
    classifier = (_read_tensors(state / "sgfd_classifier.safetensors", sgfd.classifier.state_dict(),
                                "the SGFD classifier's weights") if sgfd is not None else None)
    _load_optimizer(optimizer, state / "optimizer.safetensors", meta.param_groups)
    if sgfd is not None:
        _load_optimizer(sgfd.optimizer, state / "sgfd_optimizer.safetensors", meta.sgfd_param_groups)
        sgfd.classifier.load_state_dict(classifier)
    policy.load_state_dict(model)
    ema.shadow_params = [shadow[f"{i}"] for i in range(len(params))]
    ema.optimization_step = meta.ema_optimization_step
    return meta.step


def training_device(config: DictConfig, source: str) -> torch.device:
    """`training.device`: `auto` is the current GPU when torch sees one, else the CPU. A GPU comes back with
    its index (`cuda:0`), as the parameters on it name their device, so a resume can tell a device change."""
    name = str(config.training.get("device", "auto"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{source}: training.device: {name!r} is not a torch device "
                         "(auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source}: training.device: {name!r}, but torch sees no CUDA GPU here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{source}: training.device: {name!r}, but torch sees {torch.cuda.device_count()} GPU(s)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def train(config: DictConfig, source: str = "train config", settings: TrainConfig | None = None) -> Path:
    """Train (or resume) and write the EMA policy to `output_dir`. Returns that folder. Every check that can
    refuse the run (config, data, a resumed state) comes before anything is written; a step whose loss or
    gradients are NaN or inf stops the run, with nothing saved for it."""
    from diffusers.training_utils import EMAModel

    settings = settings or load_train_config(config, source)
    training, out = settings.training, check_output_dir(settings.output_dir, source)
    run = run_fingerprint(config)
    device = training_device(config, source)
    torch.manual_seed(training.seed)
    reweighting = training.sgfd
    if not Path(settings.dataset.path).exists():
        raise ConfigError(f"{source}: dataset.path: {settings.dataset.path} does not exist")
    dataset, normalizers, languages, envs = make_dataset(settings, settings.policy, need_env=reweighting.enabled)
    policy = Policy(settings.policy, normalizers).to(device)
    sgfd = None
    if reweighting.enabled:
        encoding_dim = sum(encoder.output_dim for encoder in policy.encoders.values())
        sgfd = SGFD(reweighting, encoding_dim, int(envs.max()) + 1, device)  # labels are 0..K-1: K environments
    optimizer = torch.optim.AdamW(policy.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    ema = EMAModel(policy.parameters(), power=training.ema_power, decay=training.ema_max_decay, use_ema_warmup=True)
    start = 0
    if (out / STATE_DIR).exists():
        start = _load_state(out, policy, ema, optimizer, sgfd, run, str(device))
        log.info("resuming %s from step %d", out, start)
    log_path = out / "train_log.jsonl"
    kept = _log_rows_until(log_path, start) if log_path.exists() else []
    out.mkdir(parents=True, exist_ok=True)
    write_text_whole(log_path, "".join(row + "\n" for row in kept))
    history = log_path.open("a")
    bar = tqdm(range(start, training.steps), initial=start, total=training.steps,
               desc=f"train {settings.policy.name} on {device}", disable=not training.progress)
    began, saved = time.perf_counter(), start

    def stopped(done: int, why: str) -> ValueError:
        last = f"; the last checkpoint, of step {saved}, is in {out / 'policy'}" if saved else ""
        return ValueError(f"{source}: training stopped at step {done}: {why}; nothing was saved for this step"
                          f"{last} (a lower training.lr may help, or check the data)")

    for step in bar:
        done = step + 1
        policy.train()
        g = torch.Generator(device=device).manual_seed(training.seed * 1_000_003 + step)
        windows = torch.randint(len(dataset), (training.batch_size,), generator=g, device=device).cpu()
        batch = collate(dataset, windows, languages, envs)
        if sgfd is None:
            weights, stats = None, {}
            per_sample = policy.compute_loss(batch, generator=g)
        else:
            per_sample, encoding = policy.loss_and_encoding(batch, generator=g)
            weights, stats = sgfd.weights(encoding, batch["env"])
        loss = weighted_loss(per_sample, weights)
        lr = training.lr * lr_at(step, training.steps, training.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        bad = non_finite_step(loss, policy)
        if bad:
            history.close()
            raise stopped(done, bad)
        optimizer.step()
        ema.step(policy.parameters())
        if done % training.log_every == 0 or done == training.steps:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            history.write(json.dumps({"step": done, "loss": loss.item(), "lr": lr,
                                      "seconds": time.perf_counter() - began, **stats}) + "\n")
            history.flush()
        if done % training.checkpoint_every == 0 or done == training.steps:
            try:  # every tensor is checked before anything of this step is written
                files, meta = _state_files(policy, ema, optimizer, done, sgfd, run)
                # the policy first: a state at step N then always means the policy of step N was written
                _save_ema_policy(policy, ema, out, settings, done)
            except NonFiniteError as err:
                history.close()
                raise stopped(done, str(err)) from None
            _save_state(out, files, meta)
            saved = done
    history.close()
    return out


def non_finite_step(loss: torch.Tensor, policy: torch.nn.Module) -> str | None:
    """What of this step is NaN or inf (the loss, or a parameter's gradient), if anything, with one device
    sync: an optimizer step on it would make every weight NaN."""
    grads = [(name, p.grad) for name, p in policy.named_parameters() if p.grad is not None]
    finite = torch.stack([torch.isfinite(loss).all(), *(torch.isfinite(grad).all() for _, grad in grads)])
    if bool(finite.all()):
        return None
    if not bool(finite[0]):
        return f"the loss is {loss.item()}"
    return f"the gradient of {grads[int(torch.argmin(finite[1:].int()))][0]} holds NaN or inf"


def _log_rows_until(log_path: Path, start: int) -> list[str]:
    """The log's rows up to the resumed step (those past it are about to be logged again). A torn last row, from
    a run killed mid-write, goes with them; any other unreadable row is an error naming the file."""
    try:
        rows = log_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{log_path}: cannot read this training log ({err})") from None
    kept = []
    for number, row in enumerate(rows, 1):
        try:
            step = json.loads(row)["step"]
            if not isinstance(step, int):
                raise TypeError(step)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if number == len(rows):
                break
            raise ValueError(f"{log_path}: line {number} is not a log row with an integer step ({err}); the log "
                             "is left as it is: delete or fix it to resume") from None
        if step <= start:
            kept.append(row)
    return kept


def _save_ema_policy(policy, ema, out: Path, settings: TrainConfig, step: int) -> None:
    ema.store(policy.parameters())
    ema.copy_to(policy.parameters())
    try:
        save_policy(policy.eval(), out / "policy", extra={
            "trained": {"step": step, "dataset": str(settings.dataset.path), "seed": settings.training.seed}})
    finally:
        ema.restore(policy.parameters())


def main(config: DictConfig, source: str = "train config") -> None:
    settings = load_train_config(config, source)  # the whole config, checked before anything runs
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = train(config, source, settings)
    print(f"policy written to {out / 'policy'} (trained on {training_device(config, source)})")
    print(OmegaConf.to_yaml(config.training))
