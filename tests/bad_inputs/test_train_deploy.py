"""`gpc train` and `gpc deploy` (with its robot file): each case is one mistake a user makes."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import ROOT, write

DEMOS = ROOT / "data" / "pusht" / "demos.zarr"


def small_train(tmp, *args):
    return ["train", "policy=pusht_state_diffusion", f"dataset.path={DEMOS}", "training.steps=2",
            "training.batch_size=4", "training.progress=false", f"output_dir={tmp / 'out'}", *args]


def _nan_store(tmp):
    """A copy of the PushT demos with one NaN action."""
    import zarr

    source = zarr.open_group(str(DEMOS), mode="r")
    target = zarr.open_group(str(tmp / "nan.zarr"), mode="w")
    for group in ("data", "meta"):
        for key, array in source[group].arrays():
            if key == "img":
                continue
            values = np.asarray(array[:])
            if key == "action":
                values[37, 1] = np.nan
            target.create_array(f"{group}/{key}", data=values)
    return tmp / "nan.zarr"


TRAIN = {
    "dataset_missing": (lambda t: small_train(t, f"dataset.path={t / 'none.zarr'}"), ("dataset.path",)),
    "dataset_with_nan": (lambda t: small_train(t, f"dataset.path={_nan_store(t)}"), ("action", "nan")),
    "dataset_not_a_zarr_store": (lambda t: small_train(t, f"dataset.path={write(t / 'demos.csv', 'a,b')}"),
                                 ("demos.csv is not a zarr store",)),
    "policy_unknown": (lambda t: small_train(t, "policy=pusht_transformer_xl"), ("policy: no policy named",)),
    "policy_horizon_zero": (lambda t: small_train(t, "policy.horizon=0"), ("policy.horizon",)),
    "policy_objective_kind_unknown": (lambda t: small_train(t, "policy.objective.kind=gan"), ("policy.objective.kind",)),
    "policy_obs_type_unknown": (lambda t: small_train(t, "policy.obs.0.type=voxels"), ("policy.obs",)),
    "steps_zero": (lambda t: small_train(t, "training.steps=0"), ("training.steps",)),
    "lr_text": (lambda t: small_train(t, "training.lr=fast"), ("training.lr",)),
    "training_key_misspelt": (lambda t: small_train(t, "+training.warmup=10"), ("training.warmup: unknown key",)),
    "device_absent": (lambda t: small_train(t, "training.device=cuda:3"), ("training.device",)),
    "output_dir_is_a_file": (lambda t: small_train(t, f"output_dir={write(t / 'f', 'x')}"), ("output_dir",)),
}


def small_deploy(*args):
    return ["deploy", "duration_s=1", "connect_timeout_s=0.5", "port=9", *args]


DEPLOY = {
    "robot_unknown": (lambda t: small_deploy("robot=ur99"), ("configs/deploy.yaml: robot: no robot named 'ur99'",)),
    "robot_key_misspelt": (lambda t: small_deploy("+robot.joint_namez=[a]"), ("robot.joint_namez: unknown key",
                                                                              "did you mean 'joint_names'")),
    "robot_joint_names_repeated": (lambda t: small_deploy("robot.joint_names=[a,a,b,c,d,e,f]"),
                                   ("robot.joint_names: need distinct joint names",)),
    "robot_velocity_limit_negative": (lambda t: small_deploy("robot.velocity_limit=-1"), ("robot.velocity_limit",)),
    "robot_without_estop": (lambda t: small_deploy("~robot.topics.estop"), ("robot.topics.estop: missing",)),
    "robot_command_type_unknown": (lambda t: small_deploy("robot.topics.command.type=std_msgs/String"),
                                   ("robot.topics.command.type",)),
    "robot_min_interval_too_long": (lambda t: small_deploy("robot.min_command_interval_s=0.5"),
                                    ("robot.min_command_interval_s: must be shorter than one control period",)),
    "port_zero": (lambda t: small_deploy("port=0"), ("configs/deploy.yaml: port: need an integer >= 1",)),
    "duration_negative": (lambda t: small_deploy("duration_s=-1"), ("duration_s: need a number > 0",)),
    "composition_missing": (lambda t: small_deploy(f"policy.compose={t / 'nope.yaml'}"), ("policy.compose: not found",)),
    "composition_for_another_robot": (lambda t: small_deploy(f"policy.compose={ROOT / 'configs/compose/pusht.yaml'}"),
                                      ("policy",)),
    "targets_of_the_wrong_size": (lambda t: small_deploy("policy.targets=[[0,0],[1,1]]"),
                                  ("policy.targets: need two or more joint configurations of 7 numbers",)),
    "target_outside_the_limits": (lambda t: small_deploy("policy.targets=[[9,0,0,-2,0,1,0],[0,0,0,-2,0,1,0]]"),
                                  ("policy.targets[0]", "outside the joint limits")),
    "log_dir_below_a_file": (lambda t: small_deploy(f"log_dir={write(t / 'f', 'x')}/logs"), ("log_dir",)),
}


@pytest.mark.parametrize("case", TRAIN)
def test_gpc_train_refuses(case, refused, tmp_path):
    make, expect = TRAIN[case]
    refused(*make(tmp_path), expect=expect)


@pytest.mark.parametrize("case", DEPLOY)
def test_gpc_deploy_refuses(case, refused, tmp_path):
    pytest.importorskip("roslibpy")
    make, expect = DEPLOY[case]
    refused(*make(tmp_path), expect=expect)
