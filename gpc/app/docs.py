"""docs/configuration.md, generated from the schemas every command checks: `python -m gpc.app.docs`."""

import sys

from gpc.app.schema import markdown_table
from gpc.app.schemas import CompareConfig, Composition, EnvConfig, EvalConfig, SearchConfig, ServeConfig
from gpc.hardware.deploy_job import DeployConfig
from gpc.hardware.robot_config import RobotFile
from gpc.policies.configuration import PolicyConfig
from gpc.policies.train import TrainConfig


def documentation() -> str:
    """docs/configuration.md: every schema as a table."""
    sections = [("Composition file (`configs/compose/*.yaml`, `compose=<file>`)", Composition),
                ("`env` (configs/env/*.yaml)", EnvConfig),
                ("`gpc eval`", EvalConfig), ("`gpc search`", SearchConfig), ("`gpc compare`", CompareConfig),
                ("`gpc serve`", ServeConfig), ("`gpc train`", TrainConfig),
                ("Policy file (`configs/policy/*.yaml`; a checkpoint's `config.yaml` holds it, every field required)",
                 PolicyConfig), ("`gpc deploy`", DeployConfig), ("Robot file (`configs/robot/*.yaml`)", RobotFile)]
    parts = ["# Configuration reference", "",
             "Generated from the schemas by `python -m gpc.app.docs > docs/configuration.md`; "
             "`tests/app/test_schemas.py` fails when it is stale. Unknown keys are refused, and every error names "
             "the file and the field. Command settings are Hydra overrides: `gpc eval episodes=50 env.n_envs=20`.",
             ""]
    for title, schema in sections:
        parts += [f"## {title}", "", markdown_table(schema), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(documentation())
