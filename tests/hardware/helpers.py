"""What the hardware tests share: the simulated arm's robot file with some fields changed."""

from __future__ import annotations

from omegaconf import OmegaConf

from gpc.app.cli import CONFIG_DIR
from gpc.hardware.robot_config import robot_config


def sim_arm(**changes):
    """configs/robot/sim_arm.yaml as a RobotConfig, with `changes` keyed by dotted field ("topics.estop.timeout_s")."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "robot" / "sim_arm.yaml"))
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return robot_config(raw, "sim_arm.yaml")
