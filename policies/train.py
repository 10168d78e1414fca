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
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from gpc.atomic import replace_directory, write_text_whole
from gpc.config import integer_setting
from gpc.normalizer import Normalizer
from gpc.policies.checkpoint import save_policy
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy
from gpc.policies.sgfd import SGFD, SGFDConfig, weighted_loss

log = logging.getLogger(__name__)
STATE_DIR = "train_state"


def make_dataset(config, policy_config, need_env: bool = False):
    """The sequence dataset, normalizers fit on it, per-window language instructions and environment labels.

    A language feature `k` reads one instruction per episode from the store's `meta/k`; SGFD reads one
    integer environment label per episode from `meta/env`; `action_stats_by` fits action statistics per value
    of its `meta/` key.
    """
    from gpc.policies.data.sequence import SequenceDataset, fit_normalizers
    from gpc.policies.data.replay_buffer import ReplayBuffer, read_replay_buffer

    features = [f for f in policy_config.obs if f.type != "language"]
    stored = read_replay_buffer(config.dataset.path, sorted({f.dataset_key or f.key for f in features} | {"action"}))
    data = {"action": stored["action"]}
    for f in features:
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


def _save_optimizer(optimizer, path: Path) -> list:
    """Optimizer slots to safetensors; returns the param groups (JSON) needed to load them back."""
    opt = optimizer.state_dict()
    save_file({f"{pid}.{name}": value.contiguous() for pid, slot in opt["state"].items()
               for name, value in slot.items()}, str(path))
    return opt["param_groups"]


def _load_optimizer(optimizer, path: Path, param_groups: list) -> None:
    slots: dict[int, dict] = {}
    for key, value in load_file(str(path)).items():
        pid, name = key.split(".", 1)
        slots.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": param_groups})


RESUME_FREE = ("steps", "progress", "log_every", "checkpoint_every", "device")  # training keys a resume may change


def run_fingerprint(config: DictConfig) -> str:
    """What makes two runs the same run (policy, dataset, training settings) and so lets one resume the other."""
    run = {key: OmegaConf.to_container(config[key], resolve=True) for key in ("policy", "dataset", "training")}
    for key in RESUME_FREE:
        run["training"].pop(key, None)
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_state(out: Path, policy, ema, optimizer, step: int, sgfd=None, run: str = "") -> None:
    state = out / STATE_DIR
    tmp = out / f".{STATE_DIR}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({f"{i}": p.contiguous() for i, p in enumerate(ema.shadow_params)}, str(tmp / "ema.safetensors"))
    meta = {"step": step, "run": run, "device": str(next(policy.parameters()).device),
            "ema_optimization_step": ema.optimization_step,
            "param_groups": _save_optimizer(optimizer, tmp / "optimizer.safetensors")}
    if sgfd is not None:
        save_file({k: v.contiguous() for k, v in sgfd.classifier.state_dict().items()},
                  str(tmp / "sgfd_classifier.safetensors"))
        meta["sgfd_param_groups"] = _save_optimizer(sgfd.optimizer, tmp / "sgfd_optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta))
    replace_directory(tmp, state)


def _load_state(out: Path, policy, ema, optimizer, sgfd=None, run: str = "", device: str = "cpu") -> int:
    state = out / STATE_DIR
    meta = json.loads((state / "state.json").read_text())
    if meta.get("run", run) != run:
        raise ValueError(f"output_dir: {out} holds a run with another policy, dataset or training settings; "
                         "resume it with the same ones, or train into a new output_dir")
    saved_on = meta.get("device", "cpu")  # runs saved before devices were recorded trained on the CPU
    if saved_on != device:
        log.warning("resuming on %s a run saved on %s: the weights will not match an uninterrupted run's",
                    device, saved_on)
    policy.load_state_dict(load_file(str(state / "model.safetensors")))
    shadow = load_file(str(state / "ema.safetensors"), device=device)
    ema.shadow_params = [shadow[f"{i}"] for i in range(len(shadow))]
    ema.optimization_step = meta["ema_optimization_step"]
    _load_optimizer(optimizer, state / "optimizer.safetensors", meta["param_groups"])
    if sgfd is not None:
        sgfd.classifier.load_state_dict(load_file(str(state / "sgfd_classifier.safetensors")))
        _load_optimizer(sgfd.optimizer, state / "sgfd_optimizer.safetensors", meta["sgfd_param_groups"])
    return int(meta["step"])


def sgfd_config(config: DictConfig) -> SGFDConfig:
    """`training.sgfd`, validated (absent: SGFD off)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SGFDConfig), config.training.get("sgfd") or {}))
    except Exception as err:  # OmegaConf's errors name the key
        raise ValueError(f"training.sgfd: {err}".splitlines()[0]) from None


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


def train(config: DictConfig, source: str = "train config") -> Path:
    """Train (or resume) and write the EMA policy to `config.output_dir`. Returns that folder."""
    from diffusers.training_utils import EMAModel

    out = Path(config.output_dir)
    for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
        integer_setting(config, f"training.{key}", source)
    run = run_fingerprint(config)
    device = training_device(config, source)
    policy_config = load_policy_config(config.policy, where="policy")
    torch.manual_seed(config.training.seed)
    reweighting = sgfd_config(config)
    dataset, normalizers, languages, envs = make_dataset(config, policy_config, need_env=reweighting.enabled)
    policy = Policy(policy_config, normalizers).to(device)
    sgfd = None
    if reweighting.enabled:
        encoding_dim = sum(encoder.output_dim for encoder in policy.encoders.values())
        sgfd = SGFD(reweighting, encoding_dim, int(envs.max()) + 1, device)  # labels are 0..K-1: K environments
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.training.lr,
                                  weight_decay=config.training.weight_decay)
    ema = EMAModel(policy.parameters(), power=config.training.ema_power, decay=config.training.ema_max_decay,
                   use_ema_warmup=True)
    start = 0
    if (out / STATE_DIR / "state.json").exists():
        start = _load_state(out, policy, ema, optimizer, sgfd, run, str(device))
        log.info("resuming %s from step %d", out, start)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"
    if log_path.exists():  # rows past the resumed step are about to be logged again
        kept = [row for row in log_path.read_text().splitlines() if json.loads(row)["step"] <= start]
        write_text_whole(log_path, "".join(row + "\n" for row in kept))
    history = log_path.open("a")
    bar = tqdm(range(start, config.training.steps), initial=start, total=config.training.steps,
               desc=f"train {policy_config.name} on {device}", disable=not config.training.progress)
    began = time.perf_counter()
    for step in bar:
        policy.train()
        g = torch.Generator(device=device).manual_seed(config.training.seed * 1_000_003 + step)
        windows = torch.randint(len(dataset), (config.training.batch_size,), generator=g, device=device).cpu()
        batch = collate(dataset, windows, languages, envs)
        if sgfd is None:
            weights, stats = None, {}
            per_sample = policy.compute_loss(batch, generator=g)
        else:
            per_sample, encoding = policy.loss_and_encoding(batch, generator=g)
            weights, stats = sgfd.weights(encoding, batch["env"])
        loss = weighted_loss(per_sample, weights)
        lr = config.training.lr * lr_at(step, config.training.steps, config.training.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.step(policy.parameters())
        done = step + 1
        if done % config.training.log_every == 0 or done == config.training.steps:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            history.write(json.dumps({"step": done, "loss": loss.item(), "lr": lr,
                                      "seconds": time.perf_counter() - began, **stats}) + "\n")
            history.flush()
        if done % config.training.checkpoint_every == 0 or done == config.training.steps:
            # the policy first: a state at step N then always means the policy of step N was written
            _save_ema_policy(policy, ema, out, config, done)
            _save_state(out, policy, ema, optimizer, done, sgfd, run)
    history.close()
    return out


def _save_ema_policy(policy, ema, out: Path, config: DictConfig, step: int) -> None:
    ema.store(policy.parameters())
    ema.copy_to(policy.parameters())
    save_policy(policy.eval(), out / "policy", extra={
        "trained": {"step": step, "dataset": str(config.dataset.path), "seed": int(config.training.seed)}})
    ema.restore(policy.parameters())


def main(config: DictConfig, source: str = "train config") -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = train(config, source)
    print(f"policy written to {out / 'policy'} (trained on {training_device(config, source)})")
    print(OmegaConf.to_yaml(config.training))
