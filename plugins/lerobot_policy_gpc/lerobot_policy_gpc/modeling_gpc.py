"""The gpc composition as a LeRobot policy: `select_action` / `predict_action_chunk` run gpc's composer on the
observations the preprocessor mapped to gpc's keys (`observation.gpc.<key>`), and return actions in the env's
units (each parent unnormalizes its own actions, so the postprocessor only moves them to the CPU)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor, nn

from gpc.app.config import ConfigError, load_composer, weight_candidates
from gpc.app.yaml_file import load_yaml
from gpc.core.composer import Composer
from gpc.core.operators import WeightSchedule
from lerobot_policy_gpc.configuration_gpc import GpcConfig
from lerobot_policy_gpc.mapping import PREFIX, as_array, check_inputs


def load_composition(config: GpcConfig) -> tuple[Composer, WeightSchedule]:
    """The composer and its one weight vector or schedule; ConfigError names the file and field."""
    path = Path(config.composition).expanduser()
    if not path.is_file():
        raise ConfigError(f"--policy.composition: {config.composition}: no such composition file")
    document = load_yaml(path, "composition")
    document["device"] = str(config.device)
    composer = load_composer(document, str(path), base=path.resolve().parent)
    if config.weights is not None:
        weights = weight_candidates(list(config.weights), len(composer.parents), "--policy", "weights")
    else:
        weights = weight_candidates(document.get("weights"), len(composer.parents), str(path))
    if len(weights) != 1:
        raise ConfigError(f"{path}: weights: a LeRobot policy runs one weight vector or schedule, got {len(weights)}; "
                          "pick one with --policy.weights")
    composer.candidates(weights)  # refuses what the operator cannot take
    return composer, weights[0]


class GpcPolicy(PreTrainedPolicy):
    """Keeps the last `n_obs_steps` observations (padded at reset by repeating the first, as gpc's rollouts and
    Diffusion Policy do) and a queue of the chunk's remaining actions."""

    config_class = GpcConfig
    name = "gpc"

    def __init__(self, config: GpcConfig, **kwargs):
        super().__init__(config)
        self.composer, self.weights = load_composition(config)
        # the parents' networks, so that LeRobot's .to() / .eval() reach them
        self.parents = nn.ModuleList([p for p in (getattr(p, "parent", p) for p in self.composer.parents)
                                      if isinstance(p, nn.Module)])
        self.inputs = [i for p in self.composer.parents for i in p.spec.inputs]
        self.episode = -1
        self.reset()

    def reset(self):
        """A new episode (per env batch): empty history and action queue; the noise seeds move on."""
        self.frames: deque[dict[str, np.ndarray]] = deque(maxlen=self.composer.n_obs_steps)
        self.actions: deque[Tensor] = deque()
        self.episode += 1
        self.chunks = 0

    def get_optim_params(self) -> dict:
        raise NotImplementedError("gpc composes pretrained parents; it is not trained through LeRobot")

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict | None]:
        raise NotImplementedError("gpc composes pretrained parents; it is not trained through LeRobot")

    def observe(self, batch: dict[str, Tensor]) -> None:
        """Add this step's mapped observation to the history (the first one fills it)."""
        frame = {key[len(PREFIX):]: as_array(value) for key, value in batch.items() if key.startswith(PREFIX)}
        if not frame:
            raise ValueError(f"the observation holds no {PREFIX}* keys: run it through the gpc preprocessor "
                             "(make_gpc_pre_post_processors), which maps LeRobot's keys to gpc's")
        if not self.frames:
            check_inputs(self.inputs, frame)
            self.frames.extend([frame] * self.composer.n_obs_steps)
        else:
            self.frames.append(frame)

    @torch.no_grad()
    def chunk(self) -> Tensor:
        """(B, n_action_steps, action_dim) from the current history; RuntimeError on NaN or inf."""
        keys = {i.key for i in self.inputs}
        obs = {k: np.stack([frame[k] for frame in self.frames], axis=1) for k in keys}  # (B, T, ...)
        rows = len(next(iter(obs.values())))
        seeds = [int(np.random.SeedSequence([self.config.seed, self.episode, self.chunks, b]).generate_state(1)[0])
                 for b in range(rows)]
        self.chunks += 1
        actions = self.composer.act(obs, [self.weights], seeds)[:, 0].float()
        if not bool(torch.isfinite(actions).all()):
            raise RuntimeError(f"the composition gave a non-finite action chunk (episode {self.episode}, chunk "
                               f"{self.chunks - 1}); not sending it to the env")
        return actions

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """One chunk for this observation (LeRobot's async inference calls this once per observation it sends)."""
        self.observe(batch)
        return self.chunk()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """This step's action (B, action_dim): the next of the current chunk, a new chunk when it runs out."""
        self.observe(batch)
        if not self.actions:
            self.actions.extend(self.chunk().transpose(0, 1))
        return self.actions.popleft()
