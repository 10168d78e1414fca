"""`--policy.type=gpc`: which composition to run, with which weights, reading which LeRobot keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig

from lerobot_policy_gpc.mapping import DEFAULT_KEYS, DERIVATIONS


@PreTrainedConfig.register_subclass("gpc")
@dataclass
class GpcConfig(PreTrainedConfig):
    """A gpc composition as a LeRobot policy. The composition file names the parents, operator and sampler as
    for `gpc eval`; LeRobot's `--policy.device` replaces its `device`.

    composition: the composition YAML (relative parent paths: from the working directory, then the file's folder).
    weights: one weight vector overriding the file's `weights` (null: the file's, which must be one candidate).
    observation_keys: LeRobot observation key -> the gpc key parents read.
    derive: "pusht" adds gpc's PushT `state` and `keypoint`, computed from `environment_state` and `agent_pos`.
    seed: the noise seed; chunk n of env row b draws from (seed, episode, n, b), so reruns repeat.
    """

    composition: str | None = None
    weights: list[float] | None = None
    observation_keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    derive: str | None = None
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.validate_features()

    def validate_features(self) -> None:
        if not self.composition:
            raise ValueError("--policy.composition: missing; give the gpc composition YAML to run "
                             "(e.g. configs/compose/pusht.yaml)")
        if self.derive is not None and self.derive not in DERIVATIONS:
            raise ValueError(f"--policy.derive: {self.derive!r}; choose from {list(DERIVATIONS)} or leave it unset")

    @property
    def observation_delta_indices(self) -> None:
        return None  # the policy keeps its own observation history, as LeRobot's DiffusionPolicy does

    @property
    def action_delta_indices(self) -> None:
        return None

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self):
        raise NotImplementedError("gpc composes pretrained parents at inference; lerobot-train does not train it "
                                  "(train each parent, then compose them)")

    def get_scheduler_preset(self) -> None:
        return None
