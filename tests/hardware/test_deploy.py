"""`gpc deploy` end to end on the simulated arm, its config errors, and the rosbridge adapter on its own."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from gpc.app.cli import CONFIG_DIR
from gpc.app.cli import main as gpc_main
from gpc.hardware.robot import RobotConnectionError, RosRobot
from gpc.hardware.safety import SafetyLayer

from .helpers import sim_arm

pytest.importorskip("roslibpy")
pytest.importorskip("pybullet")

SOURCE = "configs/deploy.yaml"


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_gpc_deploy_moves_the_arm_toward_the_composed_target_and_stops_cleanly(sim, tmp_path, assert_safe):
    deploy = OmegaConf.load(CONFIG_DIR / "deploy.yaml")
    target = np.mean(np.asarray(deploy.policy.targets), axis=0)  # equal weights, equal covariances
    start = sim.joint_positions()
    result = subprocess.run([sys.executable, "-m", "gpc.app.cli", "deploy", f"port={sim.port}", "duration_s=3",
                             f"log_dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "commands published" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    commands = sim.commands()
    assert len(commands) == summary["commands_published"] >= 100  # 3 s at 50 Hz, none lost or added
    assert_safe(commands, sim_arm().limits)
    end = sim.joint_positions()
    assert np.linalg.norm(end - target) < 0.5 * np.linalg.norm(start - target)
    assert summary["latency_ms"]["p50"] is not None and summary["chunks"] > 10
    assert sim.wait_for_clients(0, 5)  # the client closed its connection


def test_a_dry_run_computes_and_logs_commands_but_sends_none(sim, tmp_path, capsys):
    assert gpc_main(["deploy", f"port={sim.port}", "duration_s=1", "dry_run=true", f"log_dir={tmp_path}"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert sim.commands() == []
    logged = (tmp_path / "commands.jsonl").read_text().splitlines()
    assert len(logged) == json.loads((tmp_path / "summary.json").read_text())["commands_published"] > 20


@pytest.mark.parametrize("overrides, message", [
    (["robot.joint_limits.lower=[0,0]"], "robot.joint_limits.lower: need a number or 7 numbers"),
    (["robot.topics.cameras=[{name:pc,topic:/points,type:sensor_msgs/PointCloud2}]"],
     "robot.topics.cameras[0].type: need one of 'sensor_msgs/CompressedImage', 'sensor_msgs/Image', got 'sensor_msgs/PointCloud2'"),
    (["robot.topics.command.type=std_msgs/String"], "robot.topics.command.type: need one of"),
    (["policy.targets=[[0,0,0,0,0,0,0],[0,0,0,-1,0,1,0]]"], "policy.targets[0]: "),
    (["policy.weights=[0.7,0.7]"], "policy.weights"),
    (["policy.compose=configs/compose/missing.yaml"], "policy.compose: not found"),
    (["duration_s=-1"], "duration_s: need a number > 0, got -1"),
    (["robot.watchdog_timeout_s=inf"], "robot.watchdog_timeout_s: need a finite number, got inf"),
    (["robot.topics.estop={topic:'',type:std_msgs/Bool}"], "robot.topics.estop.topic: need a non-empty string"),
    (["robot.resume_after_reconnect=maybe"], "robot.resume_after_reconnect: need true or false"),
    (["robot.topics.estop=null"], "robot.topics.estop: need `no_estop_topic` or {topic: ..., type: ..., "
                                  "timeout_s: ..., max_bytes: ...}, got None"),
    (["~robot.topics.estop"], "robot.topics.estop: missing"),
    (["robot.topics.estop.timeout_s=0"], "robot.topics.estop.timeout_s: need a number > 0, got 0"),
    (["robot.topics.estop.max_bytes=10"], "robot.topics.estop.max_bytes: need an integer >= 64, got 10"),
    (["~robot.hold_while_estopped"], "robot.hold_while_estopped: missing"),
    (["robot.hold_while_estopped=1"], "robot.hold_while_estopped: need true or false"),
    (["robot.min_command_interval_s=0.02"], "robot.min_command_interval_s: must be shorter than one control period"),
    (["robot.topics.joint_states.max_bytes=1.5"], "robot.topics.joint_states.max_bytes: need an integer >= 64, got 1.5"),
    (["robot.topics.joint_states.max_stamp_age_s=-1"], "robot.topics.joint_states.max_stamp_age_s: need a number > 0, got -1"),
    (["robot.topics.joint_states.max_stamp_lead_s=inf"], "robot.topics.joint_states.max_stamp_lead_s: need a finite number, got inf"),
    (["robot.topics.cameras=[{name:f,topic:/c,type:sensor_msgs/Image}]"], "robot.topics.cameras[0].max_bytes: missing"),
    (["robot.transport=twisted"], "robot.transport: need one of 'asyncio', got 'twisted'"),
])
def test_bad_config_is_one_line_naming_the_field(overrides, message, capsys):
    assert gpc_main(["deploy", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gpc deploy: error: {SOURCE}: ") and message in err[0], err


def test_no_server_is_one_line_naming_the_host(unused_tcp_port, capsys):
    assert gpc_main(["deploy", f"port={unused_tcp_port}", "connect_timeout_s=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{SOURCE}: host: no rosbridge server at ws://127.0.0.1:{unused_tcp_port}" in err[0]


@pytest.fixture
def unused_tcp_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fmt, message_type", [("jpeg", "sensor_msgs/CompressedImage"), ("raw", "sensor_msgs/Image")])
def test_camera_frames_arrive_decoded(fmt, message_type):
    from gpc.hardware.rosbridge_sim import RosbridgeSim

    config = sim_arm(**{"topics.cameras": [{"name": "front", "topic": "/camera/image", "type": message_type,
                                            "max_bytes": 1 << 20}]})
    with RosbridgeSim(port=0, camera=fmt, camera_size=(32, 24), camera_rate_hz=20) as server:
        with RosRobot(config, "127.0.0.1", server.port) as robot:
            robot.connect(5)
            robot.wait_for_joint_state(5)
            for _ in range(100):
                frames = robot.observation(2).frames["front"]
                if frames:
                    break
                robot.wait_for_new_state(robot.observation().observed, 1)
            assert frames and frames[-1].rgb.shape == (24, 32, 3) and frames[-1].rgb.dtype == np.uint8
            assert frames[-1].rgb.std() > 0  # a picture, not a blank


def test_trajectory_commands_reach_the_arm_and_nothing_is_queued_while_disconnected(sim):
    config = sim_arm(**{"topics.command.type": "trajectory_msgs/JointTrajectory"})
    with RosRobot(config, "127.0.0.1", sim.port) as robot:
        robot.connect(5)
        state = robot.wait_for_joint_state(5)
        layer = SafetyLayer(config.limits, robot)
        command = layer.step(state.positions + 0.001)
        assert sim.wait_for_commands(1, 5)
        received = sim.commands()[0]
        assert received.message_type == "trajectory_msgs/JointTrajectory" and received.applied
        np.testing.assert_array_equal(received.positions, command.positions)
        with pytest.raises(TypeError, match="SafeCommand"):
            robot.publish(state.positions)  # raw positions cannot bypass the safety layer
        sim.drop_connections()
        assert wait_until(lambda: not robot.connected, 5)
        assert robot.publish(command) is False  # refused, not queued for the reconnection
        assert sim.wait_for_clients(1, 10)
        robot.wait_for_new_state(state.received + 1.0, 5)
        assert len(sim.commands()) == 1
    with pytest.raises(RobotConnectionError):
        RosRobot(config, "127.0.0.1", 1).connect(0.3)
