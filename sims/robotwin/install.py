"""Write a gpc policy folder into a RoboTwin 2.0 checkout, so its own script evaluates a composition.

    python -m gpc.sims.robotwin.install /path/to/RoboTwin --compose configs/compose/my_pair.yaml [--name GPC]
    cd /path/to/RoboTwin/policy/GPC && bash eval.sh beat_block_hammer demo_clean my_pair 0 0

RoboTwin imports `policy/<name>` as a module (its `__init__.py` re-exports `deploy_policy`), reads
`deploy_policy.yml` plus `--overrides`, and calls `get_model`, `reset_model` and `eval` from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpc.app.config import resolve_path

DEPLOY_POLICY = '''"""gpc composition for RoboTwin: every call goes to gpc.sims.robotwin.policy."""

from gpc.sims.robotwin.policy import encode_obs, eval, get_model, reset_model  # noqa: F401
'''

DEPLOY_YML = """# RoboTwin's base keys (filled by eval.sh), then gpc's.
policy_name: {name}
task_name: null
task_config: null
ckpt_setting: null
seed: null
instruction_type: unseen

compose: {compose}   # the gpc composition YAML
weights: null        # one weight vector, e.g. [0.5, 0.5]; null uses the composition's
device: null         # cuda or cpu; null uses the composition's
"""

EVAL_SH = """#!/bin/bash
# bash eval.sh <task_name> <task_config> <ckpt_setting> <seed> <gpu_id>
# ckpt_setting only names the result folder (eval_result/<task>/{name}/<config>/<ckpt_setting>/...).
task_name=${{1}}
task_config=${{2}}
ckpt_setting=${{3}}
seed=${{4}}
gpu_id=${{5}}
export CUDA_VISIBLE_DEVICES=${{gpu_id}}
cd ../..
python script/eval_policy.py --config policy/{name}/deploy_policy.yml \\
    --overrides \\
    --task_name ${{task_name}} \\
    --task_config ${{task_config}} \\
    --ckpt_setting ${{ckpt_setting}} \\
    --seed ${{seed}} \\
    --policy_name {name}
"""


def install(robotwin: Path, compose: Path, name: str = "GPC") -> Path:
    """The policy folder, written (files replaced) under `robotwin/policy/`."""
    if not (robotwin / "script" / "eval_policy.py").is_file():
        raise FileNotFoundError(f"{robotwin}: not a RoboTwin 2.0 checkout (no script/eval_policy.py)")
    folder = robotwin / "policy" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("from .deploy_policy import *  # noqa: F401,F403\n")
    (folder / "deploy_policy.py").write_text(DEPLOY_POLICY)
    (folder / "deploy_policy.yml").write_text(DEPLOY_YML.format(name=name, compose=compose.resolve()))
    (folder / "eval.sh").write_text(EVAL_SH.format(name=name))
    (folder / "eval.sh").chmod(0o755)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("robotwin", type=Path, help="the RoboTwin checkout (holds script/eval_policy.py)")
    parser.add_argument("--compose", required=True, help="a gpc composition YAML")
    parser.add_argument("--name", default="GPC", help="the policy folder's name under policy/")
    args = parser.parse_args()
    compose = resolve_path(args.compose)
    if not compose.is_file():
        sys.exit(f"--compose: {args.compose} does not exist")
    try:
        folder = install(args.robotwin, compose, args.name)
    except FileNotFoundError as err:
        sys.exit(str(err))
    print(f"wrote {folder}; evaluate with: cd {folder} && bash eval.sh <task_name> <task_config> "
          f"<ckpt_setting> <seed> <gpu_id>")


if __name__ == "__main__":
    main()
