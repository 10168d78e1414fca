#!/usr/bin/env bash
# A side environment for the LeRobot plugin (docs/lerobot.md): LeRobot 0.4.4 with gym-pusht, gpc (editable, so the
# repository's checkpoints and configs resolve) and lerobot_policy_gpc in a virtual environment at VENV; then, unless
# --no-eval, lerobot-eval runs a shipped PushT composition for EPISODES episodes (default 2) and prints LeRobot's
# metrics. Re-running it on the same VENV reinstalls nothing that is already there.
#   scripts/lerobot_side_env.sh VENV [--no-eval]
# PYTHON: the interpreter for the venv (default python3, 3.10+). TORCH_INDEX_URL: where torch comes from (default
# PyPI, a CUDA build of about 5 GB on x86_64; the CPU build's index is smaller where it is reachable).
set -euo pipefail
venv=${1:?usage: scripts/lerobot_side_env.sh VENV [--no-eval]}
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then index=(--index-url "$TORCH_INDEX_URL"); fi
# LeRobot 0.4.4 takes torch >=2.2.1,<2.11 and torchvision <0.26: an explicit pair that fits (torchcodec 0.8 is torch
# 2.9's), so that no resolver picks a newer torch
"${pip[@]}" "${index[@]}" torch==2.9.1 torchvision==0.24.1
"${pip[@]}" 'torchcodec==0.8.*' 'lerobot[pusht]==0.4.4'
"${pip[@]}" -e "$repo[sims]"
"${pip[@]}" "$repo/plugins/lerobot_policy_gpc"
"$venv/bin/python" -c "import lerobot_policy_gpc, lerobot; print('lerobot', lerobot.__version__, 'with the gpc plugin')"
if [ "${2:-}" = "--no-eval" ]; then exit 0; fi
cd "$repo"
"$venv/bin/lerobot-eval" --policy.type=gpc --policy.composition=configs/compose/pusht_lerobot.yaml \
  --policy.derive=pusht --policy.device=cpu --env.type=pusht --env.obs_type=environment_state_agent_pos \
  --eval.n_episodes="${EPISODES:-2}" --eval.batch_size=2 --seed=1000 --output_dir="$venv/eval/$(date +%Y%m%d-%H%M%S)"
