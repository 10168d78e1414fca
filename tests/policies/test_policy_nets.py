"""Denoising networks: shapes over horizons, timestep handling, horizon errors, ONNX export."""

import warnings

import pytest
import torch

from gpc.policies.nets import ConditionalUnet1D, TransformerDenoiser

ACTION_DIM, COND_DIM = 3, 10


def make_net(kind: str, horizon: int, time_scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "unet":
        return ConditionalUnet1D(ACTION_DIM, COND_DIM, down_dims=(16, 32, 64), n_groups=8,
                                 time_embed_dim=16, time_scale=time_scale)
    return TransformerDenoiser(ACTION_DIM, COND_DIM, horizon, d_model=32, n_heads=4, n_layers=2,
                               time_scale=time_scale)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
@pytest.mark.parametrize("horizon", [8, 12, 16])
def test_output_matches_sample_shape(kind, horizon):
    net = make_net(kind, horizon)
    out = net(torch.randn(2, horizon, ACTION_DIM), torch.rand(2) * 99, torch.randn(2, COND_DIM))
    assert out.shape == (2, horizon, ACTION_DIM)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_fractional_timesteps_are_distinguished(kind):
    """Flow-matching time in [0, 1] must not be truncated to an integer step."""
    net = make_net(kind, 8, time_scale=100.0).eval()
    sample, cond = torch.randn(2, 8, ACTION_DIM), torch.randn(2, COND_DIM)
    early = net(sample, torch.full((2,), 0.25), cond)
    late = net(sample, torch.full((2,), 0.75), cond)
    assert not torch.allclose(early, late)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_scalar_and_integer_timesteps_broadcast(kind):
    """Diffusers schedulers hand out 0-d int64 timesteps; they mean the same step for the batch."""
    net = make_net(kind, 8).eval()
    sample, cond = torch.randn(3, 8, ACTION_DIM), torch.randn(3, COND_DIM)
    expected = net(sample, torch.full((3,), 7.0), cond)
    assert torch.allclose(net(sample, torch.tensor(7), cond), expected)
    assert torch.allclose(net(sample, 7.0, cond), expected)
    with pytest.raises(ValueError, match="timestep"):
        net(sample, torch.zeros(2), cond)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_every_parameter_gets_a_gradient(kind):
    net = make_net(kind, 8)
    net(torch.randn(2, 8, ACTION_DIM), torch.rand(2), torch.randn(2, COND_DIM)).square().mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


@pytest.mark.parametrize("horizon", [6, 10, 7])
def test_unet_rejects_horizon_not_divisible_by_downsampling(horizon):
    net = make_net("unet", horizon)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, horizon, ACTION_DIM), torch.zeros(1), torch.randn(1, COND_DIM))


def test_unet_single_level_takes_any_horizon():
    net = ConditionalUnet1D(ACTION_DIM, COND_DIM, down_dims=(16,))
    assert net(torch.randn(1, 7, ACTION_DIM), torch.zeros(1), torch.randn(1, COND_DIM)).shape == (1, 7, 3)


def test_unet_rejects_bad_construction_and_inputs():
    with pytest.raises(ValueError, match="n_groups"):
        ConditionalUnet1D(ACTION_DIM, COND_DIM, down_dims=(12, 24), n_groups=8)
    net = make_net("unet", 8)
    with pytest.raises(ValueError, match="global_cond"):
        net(torch.randn(1, 8, ACTION_DIM), torch.zeros(1), torch.randn(1, COND_DIM + 1))


def test_transformer_rejects_other_horizon():
    net = make_net("transformer", 8)
    with pytest.raises(ValueError, match=r"\(N, 8, 3\)"):
        net(torch.randn(1, 12, ACTION_DIM), torch.zeros(1), torch.randn(1, COND_DIM))


def test_transformer_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the gpc[export] extra")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    net = make_net("transformer", 8).eval()
    args = (torch.randn(2, 8, ACTION_DIM), torch.rand(2), torch.randn(2, COND_DIM))
    names = ["sample", "timestep", "global_cond"]
    path = tmp_path / "denoiser.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, path, dynamo=False, input_names=names, output_names=["out"],
                          dynamic_axes={name: {0: "batch"} for name in names})
    batch = (torch.randn(5, 8, ACTION_DIM), torch.rand(5) * 50, torch.randn(5, COND_DIM))
    (out,) = ort.InferenceSession(str(path)).run(None, {n: t.numpy() for n, t in zip(names, batch)})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), net(*batch), atol=1e-5)
