"""Write a gpc policy folder into a RoboTwin 2.0 checkout (branch stable_2.0), so its own scripts evaluate a
composition, in one of two ways:

    python -m gpc.sims.robotwin.install /path/to/RoboTwin --compose configs/compose/my_pair.yaml [--name GPC]
    cd /path/to/RoboTwin/policy/GPC
    bash eval.sh beat_block_hammer demo_clean my_pair 0 0                                  # gpc in RoboTwin's env
    bash eval_server.sh beat_block_hammer demo_clean my_pair 0 0 /path/to/gpc/.venv/bin/python   # gpc in its own

RoboTwin imports `policy/<name>` as a module (its `__init__.py` re-exports `deploy_policy`), reads
`deploy_policy.yml` plus `--overrides`, and calls `get_model`, `reset_model` and `eval` from it; in client/server
mode `script/eval_policy_client.py` passes its ModelClient as the model, `gpc_client.py` (a copy of
gpc.sims.robotwin.client, which imports nothing of gpc) talks to gpc.sims.robotwin.server, and nothing of gpc is
imported in RoboTwin's environment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from gpc.app.config import resolve_path

CLIENT = Path(__file__).with_name("client.py")

DEPLOY_POLICY = '''"""gpc composition for RoboTwin. eval.sh (script/eval_policy.py) loads it here with gpc,
installed in this environment; eval_server.sh (script/eval_policy_client.py) passes RoboTwin's ModelClient,
connected to gpc.sims.robotwin.server in gpc's own environment, and then nothing here imports gpc."""

from . import gpc_client


def encode_obs(observation):
    return observation


def get_model(usr_args):
    from gpc.sims.robotwin.policy import get_model as load

    return load(usr_args)


def eval(TASK_ENV, model, observation):
    if gpc_client.is_client(model):
        return gpc_client.eval(TASK_ENV, model, observation)
    from gpc.sims.robotwin.policy import eval as run

    return run(TASK_ENV, model, observation)


def reset_model(model):
    if gpc_client.is_client(model):
        return gpc_client.reset_model(model)
    model.reset()
'''

DEPLOY_YML_HEADER = """\
# RoboTwin's base keys (eval.sh fills task_name, task_config, ckpt_setting and seed), then gpc's:
# compose: the gpc composition YAML; weights: one weight vector, e.g. [0.5, 0.5] (null: the composition's);
# device: cuda or cpu (null: the composition's).
"""

EVAL_ARGS = """    --overrides \\
    --task_name ${{task_name}} \\
    --task_config ${{task_config}} \\
    --ckpt_setting ${{ckpt_setting}} \\
    --seed ${{seed}} \\
    --policy_name {name}"""

POSITIONAL = """task_name=${{1}}
task_config=${{2}}
ckpt_setting=${{3}}
seed=${{4}}
gpu_id=${{5}}
"""

EVAL_SH = """#!/bin/bash
# bash eval.sh <task_name> <task_config> <ckpt_setting> <seed> <gpu_id>
# gpc runs inside RoboTwin's Python environment. ckpt_setting only names the result folder
# (eval_result/<task_name>/{name}/<task_config>/<ckpt_setting>/<timestamp>/).
set -e
""" + POSITIONAL + """export CUDA_VISIBLE_DEVICES=${{gpu_id}}
cd ../..
python script/eval_policy.py --config policy/{name}/deploy_policy.yml \\
""" + EVAL_ARGS + "\n"

EVAL_SERVER_SH = """#!/bin/bash
# bash eval_server.sh <task_name> <task_config> <ckpt_setting> <seed> <gpu_id> <gpc_python>
# RoboTwin's client/server mode: gpc.sims.robotwin.server runs with <gpc_python> (the python of gpc's own
# environment) on a free loopback port, RoboTwin's script/eval_policy_client.py with this shell's python.
# Results: eval_result/<task_name>/{name}/<task_config>/<ckpt_setting>/<timestamp>/.
set -e
""" + POSITIONAL + """gpc_python=${{6:?usage: bash eval_server.sh task_name task_config ckpt_setting seed gpu_id \
gpc_python}}
export CUDA_VISIBLE_DEVICES=${{gpu_id}}
cd ../..
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${{gpc_python}}" -m gpc.sims.robotwin.server --port ${{port}} --config policy/{name}/deploy_policy.yml \\
""" + EVAL_ARGS + """ &
server_pid=$!
trap 'kill ${{server_pid}} 2>/dev/null' EXIT
# wait until the server listens (loading the parents takes a while); stop if it refused its configuration
until python -c "import socket; socket.create_connection(('127.0.0.1', ${{port}}), 1).close()" 2>/dev/null; do
    kill -0 ${{server_pid}} 2>/dev/null || {{ echo "gpc's server exited; see its message above" >&2; exit 1; }}
    sleep 1
done
python script/eval_policy_client.py --port ${{port}} --config policy/{name}/deploy_policy.yml \\
""" + EVAL_ARGS + "\n"


def deploy_yml(name: str, compose: Path) -> str:
    """RoboTwin reads this file with yaml.safe_load: written by a YAML dumper, so any path survives."""
    settings = {"policy_name": name, "task_name": None, "task_config": None, "ckpt_setting": None, "seed": None,
                "instruction_type": "unseen", "compose": str(compose), "weights": None, "device": None}
    return DEPLOY_YML_HEADER + yaml.safe_dump(settings, sort_keys=False)


def install(robotwin: Path, compose: Path, name: str = "GPC") -> Path:
    """The policy folder, written (files replaced) under `robotwin/policy/`."""
    if not (robotwin / "script" / "eval_policy.py").is_file():
        raise FileNotFoundError(f"{robotwin}: not a RoboTwin 2.0 checkout (no script/eval_policy.py: clone "
                                "branch stable_2.0)")
    if not name.isidentifier():
        raise ValueError(f"--name: {name!r} must be a Python identifier (RoboTwin imports the folder by name)")
    folder = robotwin / "policy" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("from .deploy_policy import *  # noqa: F401,F403\n")
    (folder / "deploy_policy.py").write_text(DEPLOY_POLICY)
    (folder / "gpc_client.py").write_text(CLIENT.read_text())
    (folder / "deploy_policy.yml").write_text(deploy_yml(name, compose.resolve()))
    for script, text in (("eval.sh", EVAL_SH), ("eval_server.sh", EVAL_SERVER_SH)):
        (folder / script).write_text(text.format(name=name))
        (folder / script).chmod(0o755)
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
    except (FileNotFoundError, ValueError) as err:
        sys.exit(str(err))
    print(f"wrote {folder}; evaluate with: cd {folder} && bash eval.sh <task_name> <task_config> <ckpt_setting> "
          "<seed> <gpu_id> (gpc in RoboTwin's environment), or bash eval_server.sh ... <gpu_id> <gpc_python> "
          "(gpc in its own)")


if __name__ == "__main__":
    main()
