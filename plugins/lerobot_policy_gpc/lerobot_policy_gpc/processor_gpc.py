"""The pre/post processors LeRobot builds for `--policy.type=gpc` (found by name: make_<type>_pre_post_processors).

Preprocessor: LeRobot's rename step (`--rename_map`), a batch dimension, then `gpc_observation`, which adds the
observation under gpc's keys (`observation.gpc.<key>`, see `mapping`). No normalization here: every gpc parent
normalizes its own inputs and unnormalizes its own actions, so LeRobot's dataset statistics are not used.
Postprocessor: actions to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from lerobot.configs.types import FeatureType, PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    ObservationProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from lerobot_policy_gpc.configuration_gpc import GpcConfig
from lerobot_policy_gpc.mapping import DEFAULT_KEYS, PREFIX, gpc_observation

DERIVED_SHAPES = {"pusht": {"state": (5,), "keypoint": (20,)}}


@dataclass
@ProcessorStepRegistry.register(name="gpc_observation")
class GpcObservationStep(ObservationProcessorStep):
    """Adds `observation.gpc.<gpc key>` for each mapped LeRobot key (and the derived ones); LeRobot's own keys stay."""

    keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    derive: str | None = None

    def observation(self, observation):
        mapped = gpc_observation(observation, self.keys, self.derive)
        return {**observation, **{PREFIX + key: torch.from_numpy(value) for key, value in mapped.items()}}

    def get_config(self) -> dict[str, Any]:
        return {"keys": dict(self.keys), "derive": self.derive}

    def transform_features(self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
                           ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        observed = features.get(PipelineFeatureType.OBSERVATION, {})
        added = {PREFIX + self.keys[k]: ft for k, ft in observed.items() if k in self.keys}
        for key, shape in DERIVED_SHAPES.get(self.derive, {}).items():
            added[PREFIX + key] = PolicyFeature(type=FeatureType.STATE, shape=shape)
        return {**features, PipelineFeatureType.OBSERVATION: {**observed, **added}}


def make_gpc_pre_post_processors(config: GpcConfig, dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None
                                 ) -> tuple[PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
                                            PolicyProcessorPipeline[PolicyAction, PolicyAction]]:
    """`dataset_stats` is accepted for LeRobot's factory and unused (the parents carry their own statistics)."""
    pre = [RenameObservationsProcessorStep(rename_map={}), AddBatchDimensionProcessorStep(),
           GpcObservationStep(keys=dict(config.observation_keys), derive=config.derive)]
    post = [DeviceProcessorStep(device="cpu")]
    return (PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=pre, name=POLICY_PREPROCESSOR_DEFAULT_NAME),
            PolicyProcessorPipeline[PolicyAction, PolicyAction](steps=post, name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
                                                                to_transition=policy_action_to_transition,
                                                                to_output=transition_to_policy_action))
