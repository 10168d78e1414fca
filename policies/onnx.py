"""ONNX Runtime backend: export a `Policy` to ONNX and load it back as a `gpc` parent.

Deployment then needs neither the network code nor autograd, and may pick an execution provider; the
composer does not notice, since the loaded object is still a `gpc.core.contract.Parent`.

An export folder is an ordinary checkpoint (`save_policy`: config.yaml, and model.safetensors holding the
normalizer statistics) with two graphs beside it, each with a dynamic batch axis:

- `encoder.onnx`: `Policy.encode` from tensors on. One input per observation feature, named by its key, in
  config order; output `encoding` (B, cond_dim). Low-dim (B, To, D) and point-cloud (B, To, N, C) inputs
  enter raw: their normalization is in the graph (so is the point count N, which is dynamic). Images enter
  as float (B, To, 3, H, W) in [0, 1]: turning uint8 (B, To, H, W, 3) env frames into that stays in
  Python, as does cutting each history to its last `n_obs_steps` frames. Language features enter as their
  (B, 384) sentence embeddings: the frozen sentence encoder works on strings, so it runs in Python
  (`LanguageEncoder`, with its cache) and the graph only concatenates its output.
- `denoiser.onnx`: (sample (N, H, D), timestep (N,) float32, encoding (N, C)) -> prediction (N, H, D).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from gpc.policies.checkpoint import read_checkpoint, save_policy
from gpc.policies.modeling import Policy, build_encoder, instruction_texts, observation_tensor, policy_spec

try:
    import onnxruntime as ort
except ImportError as err:
    raise ImportError("gpc.policies.onnx needs ONNX Runtime: pip install 'gpc[export]' "
                      "(or 'gpc[export-gpu]' for CUDA)") from err

ENCODER_FILE, DENOISER_FILE = "encoder.onnx", "denoiser.onnx"
DENOISER_INPUTS = ("sample", "timestep", "encoding")


class _EncoderGraph(nn.Module):
    """What `Policy.encode` does once its inputs are float tensors: normalize, encode, concatenate."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = []
        for feature, x in zip(self.policy.config.obs, inputs):
            if feature.type != "language":  # the embedding is the feature
                if feature.type != "rgb" and feature.key in self.policy.normalizers:
                    x = self.policy.normalizers[feature.key].normalize(x)
                x = self.policy.encoders[feature.key](x)
            features.append(x)
        return torch.cat(features, dim=-1)


def export_onnx(policy: Policy, directory: str | Path, opset: int | None = None) -> Path:
    """Write a self-contained folder: the checkpoint (replacing any at `directory`) plus both graphs.

    Uses the TorchScript exporter (`dynamo=False`): for these small nets it is exact and takes well under
    a second, where the dynamo exporter takes seconds per net.
    """
    directory = save_policy(policy, directory)
    config, device, batch = policy.config, policy.device, 2  # batch 2: a 1 could be baked in as a constant
    example = tuple(torch.rand((batch, policy.encoders[f.key].output_dim) if f.type == "language"
                               else (batch, config.n_obs_steps, *f.shape), device=device) for f in config.obs)
    axes = {f.key: {0: "batch", 2: "points"} if f.type == "pointcloud" else {0: "batch"} for f in config.obs}
    _export(_EncoderGraph(policy), example, directory / ENCODER_FILE, [f.key for f in config.obs],
            "encoding", axes, opset)
    cond_dim = sum(encoder.output_dim for encoder in policy.encoders.values())
    example = (torch.randn(batch, config.horizon, config.action_dim, device=device),
               torch.rand(batch, device=device), torch.randn(batch, cond_dim, device=device))
    _export(policy.denoiser, example, directory / DENOISER_FILE, list(DENOISER_INPUTS), "prediction",
            {name: {0: "batch"} for name in DENOISER_INPUTS}, opset)
    return directory


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_name: str,
            dynamic_axes: dict, opset: int | None) -> None:
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose; its tracer notes are noise
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names,
                          output_names=[output_name], opset_version=opset,
                          dynamic_axes={**dynamic_axes, output_name: {0: "batch"}})


class OnnxPolicy:
    """A parent whose encoder and denoiser run in ONNX Runtime; returns float32 torch tensors on `device`.

    On CUDA with onnxruntime-gpu installed, inputs and outputs stay in torch's GPU memory through I/O
    binding (`_run_bound`); that path is untested here, having no GPU. Otherwise the CPU provider runs and
    tensors go through host memory (results still land on `device`).
    """

    def __init__(self, directory: str | Path, device: str | torch.device = "cpu", action_stats: str | None = None):
        directory = Path(directory)
        self.config, self.normalizers, _ = read_checkpoint(directory, action_stats, weights=False,
                                                           also_needs=(ENCODER_FILE, DENOISER_FILE))
        c = self.config
        self.spec = policy_spec(c, self.normalizers["action"])
        self.device = torch.device(device)
        self.language_encoders = {f.key: build_encoder(f, c.n_obs_steps, c.encoders.get(f.type, {}))
                                  for f in c.obs if f.type == "language"}
        self.bound = self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if self.device.type == "cuda" and not self.bound:
            warnings.warn("CUDA requested but onnxruntime has no CUDAExecutionProvider "
                          "(pip install onnxruntime-gpu); running on CPU", stacklevel=2)
        providers = ([("CUDAExecutionProvider", {"device_id": self.device.index or 0})] if self.bound else [])
        providers.append("CPUExecutionProvider")
        self.encoder = _session(directory / ENCODER_FILE, providers)
        self.denoiser = _session(directory / DENOISER_FILE, providers)

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """(B, cond_dim), from the same observations `Policy.encode` takes."""
        inputs = {}
        for feature in self.config.obs:
            value = obs[feature.key]
            if feature.type == "language":
                inputs[feature.key] = self.language_encoders[feature.key](instruction_texts(value))
                continue
            inputs[feature.key] = observation_tensor(feature, value, self.config.n_obs_steps)
        return self._run(self.encoder, inputs)

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(sample.shape[0]) if t.ndim == 0 else t
        return self._run(self.denoiser, {"sample": sample, "timestep": t, "encoding": encoding})

    def _run(self, session: ort.InferenceSession, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {name: x.float().contiguous() for name, x in inputs.items()}
        if self.bound:
            return _run_bound(session, inputs, self.device)
        (out,) = session.run(None, {name: x.detach().cpu().numpy() for name, x in inputs.items()})
        return torch.from_numpy(out).to(self.device)


def _session(path: Path, providers: list) -> ort.InferenceSession:
    """ONNX Runtime's session for one exported graph; a damaged file is a ValueError naming it."""
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own pybind types for unreadable models
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a readable ONNX model ({reason})") from None


def _run_bound(session: ort.InferenceSession, inputs: Mapping[str, torch.Tensor],
               device: torch.device) -> torch.Tensor:
    """CUDA I/O binding: ONNX Runtime reads the inputs and writes the output in place, no host copies.

    Untested on GPU. Relies on every output dimension but the batch being static (the tests check it).
    """
    index = device.index or 0  # as the provider's device_id
    inputs = {name: x.to(device) for name, x in inputs.items()}  # kept alive until the run ends
    binding = session.io_binding()
    for name, x in inputs.items():
        binding.bind_input(name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
    meta = session.get_outputs()[0]
    out = torch.empty((next(iter(inputs.values())).shape[0], *meta.shape[1:]), dtype=torch.float32,
                      device=device)
    binding.bind_output(meta.name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
    torch.cuda.synchronize(device)  # ONNX Runtime works on its own stream: the inputs must be written
    session.run_with_iobinding(binding)  # returns once its stream has finished
    return out


def load_onnx_policy(path: str | Path, device: str | torch.device = "cpu", action_stats: str | None = None
                     ) -> OnnxPolicy:
    """Loader for composition configs: `parents: [{path: ..., loader: gpc.policies.onnx.load_onnx_policy}]`."""
    return OnnxPolicy(path, device, action_stats)
