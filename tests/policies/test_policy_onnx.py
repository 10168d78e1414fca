"""ONNX backend: exported encoder and denoiser match torch, and ONNX parents compose like torch ones."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("onnx", reason="ONNX export needs the gpc[export] extra")
pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")

from gpc.app.config import load_composition  # noqa: E402
from gpc.core.composer import Composer, make_generators  # noqa: E402
from gpc.core.normalizer import Normalizer  # noqa: E402
from gpc.core.samplers import SamplerConfig  # noqa: E402
from gpc.policies.configuration import load_policy_config  # noqa: E402
from gpc.policies.modeling import Policy  # noqa: E402
from gpc.policies.onnx import OnnxPolicy, export_onnx, load_onnx_policy  # noqa: E402

TOL = 1e-4
ACTION_DIM, HORIZON = 2, 8
INSTRUCTIONS = ("push the T", "open the drawer")
LOADER = "gpc.policies.onnx.load_onnx_policy"

CONFIGS = {
    "state": {  # low-dim input, diffusion U-Net
        "obs": [{"key": "state", "type": "low_dim", "shape": [5]}],
        "denoiser": {"type": "unet", "down_dims": [16, 32], "time_embed_dim": 16},
        "objective": {"kind": "diffusion", "prediction_type": "epsilon", "num_inference_steps": 7},
    },
    "rgb": {  # image plus state, flow U-Net, shorter history
        "obs": [{"key": "image", "type": "rgb", "shape": [3, 32, 32]},
                {"key": "state", "type": "low_dim", "shape": [5]}],
        "n_obs_steps": 1,
        "encoders": {"rgb": {"widths": [8, 16], "num_keypoints": 4, "feature_dim": 16, "n_groups": 4},
                     "low_dim": {"hidden": 16, "output_dim": 8}},
        "denoiser": {"type": "unet", "down_dims": [16, 32], "time_embed_dim": 16},
        "objective": {"kind": "flow", "prediction_type": "velocity"},
    },
    "points": {  # point cloud, diffusion transformer
        "obs": [{"key": "points", "type": "pointcloud", "shape": [64, 3]}],
        "encoders": {"pointcloud": {"hidden_dims": [16, 32], "feature_dim": 16}},
        "denoiser": {"type": "transformer", "d_model": 32, "n_heads": 4, "n_layers": 2},
        "objective": {"kind": "diffusion", "prediction_type": "v_prediction"},
    },
    "language": {  # instruction embedding beside state
        "obs": [{"key": "state", "type": "low_dim", "shape": [5]},
                {"key": "instruction", "type": "language", "shape": [1]}],
        "denoiser": {"type": "unet", "down_dims": [16, 32], "time_embed_dim": 16},
        "objective": {"kind": "flow", "prediction_type": "velocity"},
    },
}


def make_policy(name: str) -> Policy:
    rng = np.random.default_rng(0)
    normalizers = {"action": Normalizer.fit(rng.normal(size=(100, ACTION_DIM))),  # shared: parents compose
                   "state": Normalizer.fit(rng.normal(2.0, 3.0, size=(100, 5)), "gaussian"),
                   "points": Normalizer.fit(rng.uniform(-0.5, 0.5, size=(100, 3)))}
    keys = ["action"] + [f["key"] for f in CONFIGS[name]["obs"] if f["key"] in normalizers]
    config = load_policy_config({"name": name, "action_dim": ACTION_DIM, "horizon": HORIZON, "n_obs_steps": 2,
                                 "n_action_steps": 4, "normalization": {k: normalizers[k].mode for k in keys},
                                 **CONFIGS[name]})
    torch.manual_seed(0)
    return Policy(config, {k: normalizers[k] for k in keys}).eval()


def prime_language(encoders: dict) -> None:
    """Stand-in embeddings, so the tests need no sentence-encoder download."""
    vectors = torch.nn.functional.normalize(torch.randn(len(INSTRUCTIONS), 384,
                                                        generator=torch.Generator().manual_seed(1)), dim=-1)
    for key, encoder in encoders.items():
        if key == "instruction":
            encoder._cache.update(zip(INSTRUCTIONS, vectors))


def observations(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(2.0, 3.0, size=(batch, 2, 5)),
            "image": rng.integers(0, 256, size=(batch, 2, 32, 32, 3), dtype=np.uint8),
            "points": rng.uniform(-0.5, 0.5, size=(batch, 2, 64, 3)).astype(np.float32),
            "instruction": [INSTRUCTIONS[b % 2] for b in range(batch)]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Nets this small gain nothing from threads, and on a busy machine torch's thread pool stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs(one_thread, tmp_path_factory):
    """name -> (torch policy, its ONNX export loaded back, export folder)."""
    out = {}
    for name in CONFIGS:
        policy = make_policy(name)
        directory = export_onnx(policy, tmp_path_factory.mktemp("onnx") / name)
        onnx_policy = load_onnx_policy(directory)
        prime_language(policy.encoders)
        prime_language(onnx_policy.language_encoders)
        out[name] = (policy, onnx_policy, directory)
    return out


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_matches_torch(pairs, name):
    policy, onnx_policy, _ = pairs[name]
    for batch in (1, 5):
        obs = observations(batch, seed=batch)
        with torch.no_grad():
            expected = policy.encode(obs)
        assert max_error(onnx_policy.encode(obs), expected) < TOL


def test_point_count_is_dynamic(pairs):
    policy, onnx_policy, _ = pairs["points"]
    obs = {"points": np.random.default_rng(0).uniform(-0.5, 0.5, size=(3, 2, 17, 3))}
    with torch.no_grad():
        assert max_error(onnx_policy.encode(obs), policy.encode(obs)) < TOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_denoiser_matches_torch(pairs, name):
    policy, onnx_policy, _ = pairs[name]
    times = ([0.0, 0.37, 0.5, 0.999, 1.0] if policy.config.objective.kind == "flow"
             else [0.0, 0.5, 12.75, 63.3, 99.0])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in (1, 5):
            encoding = policy.encode(observations(batch))
            for t in [*times, None]:  # None: a different timestep on every row
                sample = torch.randn(batch, HORIZON, ACTION_DIM, generator=generator)
                timestep = torch.tensor(times[:batch]) if t is None else torch.full((batch,), t)
                expected = policy.predict(sample, timestep, encoding)
                assert max_error(onnx_policy.predict(sample, timestep, encoding), expected) < TOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parent_declares_what_torch_does(pairs, name):
    policy, onnx_policy, _ = pairs[name]
    assert isinstance(onnx_policy, OnnxPolicy)
    assert onnx_policy.spec == policy.spec and onnx_policy.spec.normalizer.allclose(policy.spec.normalizer)
    assert onnx_policy.config == policy.config
    # The CUDA I/O-binding path sizes its output from these: only the batch may be symbolic.
    for session in (onnx_policy.encoder, onnx_policy.denoiser):
        assert all(isinstance(d, int) for d in session.get_outputs()[0].shape[1:])


def sample_both(torch_parents, onnx_parents, weights, seeds=(0, 1)):
    sampler = SamplerConfig.native(torch_parents[0].spec.path, torch_parents[0].spec.prediction_type,
                                   torch_parents[0].config.objective.num_inference_steps)
    obs = observations(len(seeds))
    chunks = []
    for parents in (torch_parents, onnx_parents):
        composer = Composer(parents, sampler)
        generators = make_generators(seeds, len(weights))
        chunks.append(composer.sample(composer.encode(obs), weights, generators))
    return chunks


@pytest.mark.parametrize("names", [("state", "rgb"), ("points", "language")])
def test_composer_runs_on_onnx_parents(pairs, names):
    torch_parents = [pairs[n][0] for n in names]
    onnx_parents = [pairs[n][1] for n in names]
    expected, got = sample_both(torch_parents, onnx_parents, [[0.5, 0.5], [0.2, 0.8]])
    assert max_error(got, expected) < TOL


def test_load_composition_with_onnx_loader(pairs):
    # one by its registered format, one by a dotted loader the entry trusts
    config = OmegaConf.create({"parents": [{"path": str(pairs["state"][2]), "format": "gpc_onnx"},
                                           {"path": str(pairs["rgb"][2]), "loader": LOADER, "trust_code": True}],
                               "weights": [[0.3, 0.7]], "sampler": "native"})
    composer, candidates = load_composition(config, "test")
    assert all(isinstance(p, OnnxPolicy) for p in composer.parents)
    assert composer.sampler.num_inference_steps == 7  # read from the first parent's config
    obs = observations(2)
    got = composer.sample(composer.encode(obs), candidates, make_generators([0, 1], 1))
    expected, _ = sample_both([pairs["state"][0], pairs["rgb"][0]], composer.parents, [[0.3, 0.7]])
    assert max_error(got, expected) < TOL


def test_missing_graph_is_named(tmp_path):
    directory = export_onnx(make_policy("state"), tmp_path / "state")
    (directory / "denoiser.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="denoiser.onnx"):
        load_onnx_policy(directory)


def test_a_damaged_graph_is_one_error_naming_it(tmp_path):
    directory = export_onnx(make_policy("state"), tmp_path / "state")
    graph = directory / "denoiser.onnx"
    graph.write_bytes(graph.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"denoiser\.onnx: not a readable ONNX model"):
        load_onnx_policy(directory)
