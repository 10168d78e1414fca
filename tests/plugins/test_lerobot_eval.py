"""The plugin inside LeRobot, in the side environment scripts/lerobot_side_env.sh makes (LeRobot 0.4.4): skipped
unless GPC_LEROBOT_VENV names that venv, so CI (which has no LeRobot) is unaffected. Slow: about a minute."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("GPC_LEROBOT_VENV", "/nonexistent"))
pytestmark = pytest.mark.skipif(not (VENV / "bin" / "lerobot-eval").exists(),
                                reason="set GPC_LEROBOT_VENV to a venv made by scripts/lerobot_side_env.sh")

# LeRobot's own factories build the policy and processors from the registered type; its pusht env's observations go
# through LeRobot's preprocess_observation, as in lerobot-eval.
IN_LEROBOT = """
import numpy as np, torch
from lerobot.envs.configs import PushtEnv
from lerobot.envs.factory import make_env
from lerobot.envs.utils import preprocess_observation
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.configs.policies import PreTrainedConfig
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()
env_cfg = PushtEnv(obs_type="environment_state_agent_pos")
cfg = PreTrainedConfig.get_choice_class("gpc")(composition="configs/compose/pusht.yaml", derive="pusht", device="cpu")
policy = make_policy(cfg, env_cfg=env_cfg)
pre, post = make_pre_post_processors(cfg)
from gpc.sims.pusht.env import block_keypoints
calls = []
act = policy.composer.act
policy.composer.act = lambda obs, *a, **k: calls.append(obs) or act(obs, *a, **k)
envs = make_env(env_cfg, n_envs=1)["pusht"][0]
obs, _ = envs.reset(seed=[3])
sim = envs.envs[0].unwrapped
agent, block, angle = np.array(sim.agent.position), np.array(sim.block.position), sim.block.angle
policy.reset()
for step in range(9):
    if step == 1:  # the parents saw gpc's PushT quantities of the simulator's true state, both history frames
        truth = {"state": np.r_[agent, block, angle % (2 * np.pi)],
                 "keypoint": np.r_[block_keypoints(block, angle).ravel(), agent]}
        assert "keypoint" in calls[0], sorted(calls[0])  # both pusht.yaml parents read it
        for key in set(truth) & set(calls[0]):
            value, seen = truth[key], calls[0][key]
            assert seen.shape == (1, 2, len(value)), seen.shape
            assert np.abs(seen - value).max() < 1e-3, (key, seen, value)
    action = post(policy.select_action(pre(preprocess_observation(obs))))
    assert action.shape == (1, 2) and torch.isfinite(action).all() and (action.abs() < 600).all(), action
    obs, *_ = envs.step(action.numpy())
print("chunks", len(calls), "of", policy.composer.layout.n_action_steps)
"""


def _run(args, **kwargs):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def test_lerobot_factories_build_the_policy_and_it_acts_in_chunks():
    result = _run([str(VENV / "bin" / "python"), "-c", IN_LEROBOT])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chunks 2 of 8" in result.stdout  # 9 steps: one chunk of 8 actions, then a new one


def test_lerobot_eval_runs_a_shipped_composition():
    result = _run([str(VENV / "bin" / "lerobot-eval"), "--policy.type=gpc",
                   "--policy.composition=configs/compose/pusht.yaml", "--policy.derive=pusht", "--policy.device=cpu",
                   "--env.type=pusht", "--env.obs_type=environment_state_agent_pos", "--eval.n_episodes=1",
                   "--eval.batch_size=1", f"--output_dir={VENV / 'eval-test'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Imported third-party plugin: lerobot_policy_gpc" in result.stderr
    assert "'pc_success'" in result.stdout + result.stderr


def test_bad_composition_is_one_clear_error():
    result = _run([str(VENV / "bin" / "lerobot-eval"), "--policy.type=gpc",
                   "--policy.composition=configs/compose/no_such.yaml", "--env.type=pusht",
                   "--env.obs_type=environment_state_agent_pos", "--eval.n_episodes=1", "--eval.batch_size=1",
                   f"--output_dir={VENV / 'eval-test-bad'}"])
    assert result.returncode != 0
    assert "--policy.composition: configs/compose/no_such.yaml: no such composition file" in result.stderr
