"""`gpc eval` and the composition files it reads: each case is one mistake a user makes."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from .helpers import ROOT, compose_arg, small_eval, write

pytest.importorskip("gym_pusht")

SOURCE = "configs/eval.yaml"


def _two(parents, extra=""):
    return compose_arg(parents["a"], parents["b"], extra=extra)


CASES = {
    # the command's own settings
    "setting_misspelt": (lambda p, t: small_eval(_two(p), "episodse=3"), (SOURCE, "episodse", "did you mean 'episodes'")),
    "episodes_not_a_number": (lambda p, t: small_eval(_two(p), "episodes=abc"), (SOURCE, "episodes: need an integer")),
    "episodes_zero": (lambda p, t: small_eval(_two(p), "episodes=0"), (SOURCE, "episodes: need an integer >= 1")),
    "seed_negative": (lambda p, t: small_eval(_two(p), "seed=-1"), (SOURCE, "seed: need an integer >= 0")),
    "videos_negative": (lambda p, t: small_eval(_two(p), "videos=-1"), (SOURCE, "videos: need an integer >= 0")),
    "alone_sampler_unknown": (lambda p, t: small_eval(_two(p), "alone_sampler=own"),
                              (SOURCE, "alone_sampler: need one of")),
    "alone_not_a_bool": (lambda p, t: small_eval(_two(p), "alone=maybe"), (SOURCE, "alone: need true or false")),
    "sweep_not_dividing_one": (lambda p, t: small_eval(_two(p), "sweep=0.3"), (SOURCE, "sweep: must be a step")),
    "sweep_negative": (lambda p, t: small_eval(_two(p), "sweep=-0.1"), (SOURCE, "sweep: need a number > 0")),
    "sweep_with_three_parents": (lambda p, t: small_eval(compose_arg(p["a"], p["b"], p["a"]), "sweep=0.5",
                                                         "compose.weights=[0.2,0.3,0.5]"),
                                 (SOURCE, "sweep: a line sweep needs exactly 2 parents")),
    "override_without_value": (lambda p, t: small_eval(_two(p), "episodes"), (SOURCE, "Error parsing override")),
    "override_unbalanced_list": (lambda p, t: small_eval(_two(p), "weights=[0.5,0.5"), (SOURCE, "key=value")),
    "weights_wrong_length": (lambda p, t: small_eval(_two(p), "weights=[0.2,0.3,0.5]"),
                             (SOURCE, "weights: 3 weights for 2 parents")),
    "weights_not_summing_to_one": (lambda p, t: small_eval(_two(p), "weights=[0.2,0.3]"),
                                   (SOURCE, "weights: weights must sum to 1")),
    "weights_negative": (lambda p, t: small_eval(_two(p), "weights=[1.5,-0.5]"), (SOURCE, "weights must be finite and >= 0")),
    "weights_text": (lambda p, t: small_eval(_two(p), "weights=[a,b]"), (SOURCE, "weights: need a list of numbers")),
    "schedule_knots_unsorted": (lambda p, t: small_eval(_two(p), "weights={knots: [1, 0], weights: [[1, 0], [0, 1]]}"),
                                (SOURCE, "knots must increase strictly")),
    "output_dir_is_a_file": (lambda p, t: small_eval(_two(p), f"output_dir={write(t / 'taken', 'x')}"),
                             (SOURCE, "output_dir")),
    "output_dir_below_a_file": (lambda p, t: small_eval(_two(p), f"output_dir={write(t / 'file', 'x')}/out"),
                                (SOURCE, "output_dir")),
    "output_dir_holds_a_corrupt_store": (lambda p, t: small_eval(_two(p), f"output_dir={_corrupt_store(t)}"),
                                         (SOURCE, "output_dir", "episodes.sqlite")),
    "output_dir_holds_a_foreign_sqlite": (lambda p, t: small_eval(_two(p), f"output_dir={_foreign_store(t)}"),
                                          (SOURCE, "output_dir", "episodes.sqlite")),
    # the env
    "env_unknown": (lambda p, t: small_eval(_two(p), "env=mars"), (SOURCE, "env: no env named 'mars'")),
    "env_factory_misspelt": (lambda p, t: small_eval(_two(p), "env.factory._target_=gpc.sims.pusht.env.make_envv"),
                             (SOURCE, "env.factory")),
    "env_factory_option_unknown": (lambda p, t: small_eval(_two(p), "+env.factory.colour=red"),
                                   (SOURCE, "env.factory", "colour")),
    "env_n_envs_zero": (lambda p, t: small_eval(_two(p), "env.n_envs=0"), (SOURCE, "env.n_envs: need an integer >= 1")),
    "env_max_steps_fraction": (lambda p, t: small_eval(_two(p), "env.max_steps=2.5"), (SOURCE, "env.max_steps")),
    "env_max_steps_beyond_its_time_limit": (lambda p, t: small_eval(_two(p), "env.max_steps=400"),
                                            ("env.max_steps: 400 is beyond the env's own step limit",)),
    # the composition
    "compose_unknown": (lambda p, t: small_eval("compose=nosuch"), (SOURCE, "compose: no compose named 'nosuch'")),
    "compose_file_missing": (lambda p, t: small_eval(f"compose={t / 'absent.yaml'}"), ("absent.yaml", "no such")),
    "compose_file_bad_yaml": (lambda p, t: small_eval(f"compose={write(t / 'bad.yaml', 'parents: [path: a')}"),
                              ("bad.yaml", "not valid YAML")),
    "compose_file_a_list": (lambda p, t: small_eval(f"compose={write(t / 'list.yaml', '- a')}"),
                            ("list.yaml", "must be a YAML mapping")),
    "compose_file_weights_not_finite": (lambda p, t: small_eval("compose=" + str(write(
        t / "nan.yaml", f"parents: [{{path: '{p['a']}'}}, {{path: '{p['b']}'}}]\nweights: [.nan, 1]\n"))),
        ("nan.yaml", "compose.weights: weights must be finite")),
    "env_track_max_unknown": (lambda p, t: small_eval(_two(p), "env.track_max=[nope]"),
                              (SOURCE, "env.track_max: ['nope'] not among the numbers")),
    "compose_key_misspelt": (lambda p, t: small_eval(_two(p), "+compose.sampler_steps=3"),
                             ("compose: sampler_steps: unknown key", "did you mean 'sampler'")),
    "compose_without_parents": (lambda p, t: small_eval("compose.parents=[]"), ("compose: parents: need a list")),
    "compose_parent_not_a_mapping": (lambda p, t: small_eval(f"compose.parents=[{p['a']}]"),
                                     ("compose: parents[0]: need a mapping")),
    "compose_parent_without_path": (lambda p, t: small_eval("compose.parents=[{name: x}]"),
                                    ("compose: parents[0].path: missing",)),
    "compose_parent_path_missing": (lambda p, t: small_eval(compose_arg(p["a"], t / "nowhere")),
                                    ("compose: parents[1].path: not found",)),
    "compose_parent_entry_key_misspelt": (lambda p, t: small_eval(_two(p, ", obsevations: {}")),
                                          ("parents[0].obsevations: unknown key", "did you mean 'observations'")),
    "compose_parent_format_unknown": (lambda p, t: small_eval(_two(p, ", format: tensorflow")),
                                      ("parents[0].format: unknown format 'tensorflow'",)),
    "compose_parent_not_a_checkpoint": (lambda p, t: small_eval(compose_arg(p["a"], t)),
                                        ("parents[1].path:", "no checkpoint gpc recognizes")),
    "compose_loader_untrusted": (lambda p, t: small_eval(_two(p, ", loader: os.getcwd")),
                                 ("parents[0].loader: 'os.getcwd' runs code", "trust_code: true")),
    "compose_loader_missing": (lambda p, t: small_eval(_two(p, ", loader: nowhere.load, trust_code: true")),
                               ("parents[0].loader:",)),
    "compose_loader_returns_no_parent": (lambda p, t: small_eval(_two(p, f", loader: {_junk_loader(t)}, "
                                                                         "trust_code: true")),
                                         ("parents[0]: loading", "gave a dict, which is not a gpc parent")),
    "compose_option_for_another_format": (lambda p, t: small_eval(_two(p, ", trust: true")),
                                          ("parents[0].trust: the gpc format takes no 'trust'",)),
    "compose_parents_differ_in_action_dim": (lambda p, t: small_eval(compose_arg(p["a"], p["wide"])),
                                             ("compose: parents:", "action_dim")),
    "compose_normalizers_differ_per_dimension": (lambda p, t: small_eval(compose_arg(p["a"], p["skewed"])),
                                                 ("compose: normalizers:", "normalizers: approximate")),
    "compose_checkpoint_with_nan_weights": (lambda p, t: small_eval(compose_arg(p["nan"], p["b"])),
                                            ("compose: parents[0]", "NaN or inf")),
    "compose_checkpoint_config_lost_its_objective": (lambda p, t: small_eval(compose_arg(p["a"], p["lost_objective"])),
                                                     ("config.yaml", "objective")),
    "compose_operator_unknown": (lambda p, t: small_eval(_two(p), "compose.operator=xor"),
                                 ("compose: operator.name: unknown operator 'xor'",)),
    "compose_operator_temperature_zero": (lambda p, t: small_eval(_two(p), "compose.operator={name: or, temperature: 0}"),
                                          ("compose: operator.temperature",)),
    "compose_sampler_unknown": (lambda p, t: small_eval(_two(p), "compose.sampler={name: heun}"),
                                ("compose: sampler.name: must be one of",)),
    "compose_sampler_zero_steps": (lambda p, t: small_eval(_two(p), "compose.sampler={name: ddim, num_inference_steps: 0}"),
                                   ("compose: sampler.num_inference_steps",)),
    "compose_n_action_steps_too_many": (lambda p, t: small_eval(_two(p), "compose.n_action_steps=9"),
                                        ("compose: n_action_steps: n_action_steps=9",)),
    "compose_device_absent_gpu": (lambda p, t: small_eval(_two(p), "compose.device=cuda:7"),
                                  ("compose: device: cuda:7 is not available",)),
    "compose_device_unknown": (lambda p, t: small_eval(_two(p), "compose.device=abacus"),
                               ("compose: device: 'abacus' is not a torch device",)),
    "compose_fast_precision_unknown": (lambda p, t: small_eval(_two(p), "compose.fast.precision=int3"),
                                       ("compose: fast.precision",)),
    "compose_normalizers_mode_unknown": (lambda p, t: small_eval(_two(p), "+compose.normalizers=roughly"),
                                         ("compose: normalizers: need one of",)),
    # parents users bring (docs/checkpoints.md)
    "lerobot_folder_without_its_statistics": (lambda p, t: small_eval(
        f"compose={_lerobot_pair(t, drop='policy_preprocessor_step_3_normalizer_processor.safetensors')}"),
        ("normalizer_processor", "statistics", "missing")),
    "lerobot_policy_type_unsupported": (lambda p, t: small_eval(f"compose={_lerobot_pair(t, kind='act')}"),
                                        ("config.json: type: LeRobot policy type 'act' is not supported",
                                         "gpc loads diffusion")),
    "lerobot_feature_shape_differs_from_the_env": (lambda p, t: small_eval(
        f"compose={_lerobot_pair(t, mapping='{observation.state: agent_pos, observation.environment_state: keypoint}')}"),
        ("parents[0]", "observation.environment_state", "(16,)", "(20,)")),
    "lerobot_mapping_names_a_key_the_env_lacks": (lambda p, t: small_eval(
        f"compose={_lerobot_pair(t, mapping='{observation.state: agent_xy, observation.environment_state: environment_state}')}"),
        ("parents[0].observations", "'agent_xy' (its 'observation.state'), which the env does not give")),
    "lerobot_mapping_names_no_input_of_the_parent": (lambda p, t: small_eval(
        f"compose={_lerobot_pair(t, mapping='{observation.image: image}')}"),
        ("parents[0].observations:", "not inputs of parent")),
    "lerobot_reads_an_input_left_unmapped": (lambda p, t: small_eval(f"compose={_lerobot_pair(t, mapping='{}')}"),
                                             ("observation.state", "which the env does not give")),
    "diffusion_policy_ckpt_naming_code_untrusted": (lambda p, t: small_eval(compose_arg(_evil_ckpt(t), p["a"])),
                                                    ("evil.ckpt: this checkpoint is a pickle", "trust: true")),
    "diffusion_policy_ckpt_inpainting_refused": (lambda p, t: small_eval(compose_arg(_inpainting_ckpt(t), p["a"])),
                                                 ("obs_as_global_cond: only global conditioning",)),
    "diffusion_policy_ckpt_truncated": (lambda p, t: small_eval(compose_arg(_truncated_ckpt(t), p["a"])),
                                        ("truncated.ckpt", "not a readable torch checkpoint")),
    "lerobot_weights_truncated": (lambda p, t: small_eval(f"compose={_lerobot_pair(t, damage=_truncate_weights)}"),
                                  ("model.safetensors: not a readable safetensors file",)),
    "lerobot_statistics_not_finite": (lambda p, t: small_eval(f"compose={_lerobot_pair(t, damage=_nan_statistic)}"),
                                      ("normalizer_processor.safetensors", "observation.environment_state",
                                       "not finite")),
    "gpc_checkpoint_weights_truncated": (lambda p, t: small_eval(compose_arg(_truncated_copy(p["a"], t), p["b"])),
                                         ("model.safetensors: not a readable safetensors file",)),
    "gpc_checkpoint_missing_a_tensor": (lambda p, t: small_eval(compose_arg(_without_a_tensor(p["a"], t), p["b"])),
                                        ("model.safetensors: tensors do not match config.yaml's network: missing",)),
}


def _truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _truncated_copy(checkpoint, tmp):
    folder = shutil.copytree(checkpoint, tmp / "truncated")
    _truncate_weights(folder)
    return folder


def _without_a_tensor(checkpoint, tmp):
    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(checkpoint, tmp / "short")
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[next(k for k in sorted(tensors) if not k.startswith("normalizer."))]
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _nan_statistic(folder):
    from safetensors.numpy import load_file, save_file

    stats = folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    tensors = load_file(str(stats))
    tensors["observation.environment_state.min"][2] = float("nan")
    save_file(tensors, str(stats))


def _junk_loader(tmp):
    """A trusted loader that returns something other than a parent (a module of its own on sys.path)."""
    import sys

    write(tmp / "junk_loader.py", "def load(path, device='cpu'):\n    return {'weights': 1}\n")
    sys.path.insert(0, str(tmp))
    return "junk_loader.load"


def _corrupt_store(tmp):
    out = tmp / "run"
    out.mkdir()
    (out / "episodes.sqlite").write_bytes(b"not a database at all" * 10)
    return out


def _foreign_store(tmp):
    out = tmp / "foreign"
    out.mkdir()
    with sqlite3.connect(out / "episodes.sqlite") as db:
        db.execute("CREATE TABLE people (name TEXT)")
    return out


def _lerobot_pair(tmp, drop=None, kind=None, damage=None,
                  mapping="{observation.state: agent_pos, observation.environment_state: environment_state}"):
    """A composition file pairing a copy of the shipped LeRobot parent (broken as asked) with keypoint_flow."""
    import json

    folder = shutil.copytree(ROOT / "checkpoints" / "lerobot" / "pusht_keypoints", tmp / "lerobot")
    if drop:
        (folder / drop).unlink()
    if damage:
        damage(folder)
    if kind:
        config = json.loads((folder / "config.json").read_text())
        config["type"] = kind
        (folder / "config.json").write_text(json.dumps(config))
    return write(tmp / "pair.yaml", f"parents:\n  - {{path: {folder}, observations: {mapping}}}\n"
                                    f"  - {{path: {ROOT / 'checkpoints/pusht/keypoint_flow/policy'}}}\n"
                                    "weights: [0.5, 0.5]\n")


class _Remover:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.remove, (str(self.path),))


def _evil_ckpt(tmp):
    import torch

    keep = write(tmp / "keep", "")
    torch.save({"cfg": None, "x": _Remover(keep)}, tmp / "evil.ckpt")
    return tmp / "evil.ckpt"


def _inpainting_ckpt(tmp):
    import torch

    from gpc.policies.diffusion_policy.checkpoint import read_checkpoint

    payload = read_checkpoint(ROOT / "tests/fixtures/diffusion_policy/pusht_lowdim/latest.ckpt")
    payload["cfg"].policy.obs_as_global_cond = False
    torch.save(payload, tmp / "inpainting.ckpt")
    return tmp / "inpainting.ckpt"


def _truncated_ckpt(tmp):
    data = (ROOT / "tests/fixtures/diffusion_policy/pusht_lowdim/latest.ckpt").read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 3])
    return tmp / "truncated.ckpt"


@pytest.mark.parametrize("case", CASES)
def test_gpc_eval_refuses(case, refused, parents, tmp_path):
    make, expect = CASES[case]
    refused(*make(parents, tmp_path), expect=expect)
