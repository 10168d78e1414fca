"""Observation encoders: output shapes, input checks, and the properties each design is for."""

import pytest
import torch

from gpc.policies.encoders import PointCloudEncoder, RGBEncoder, StateEncoder


def test_state_encoder_identity_flattens_history():
    enc = StateEncoder(obs_dim=5, n_obs_steps=2)
    obs = torch.randn(4, 2, 5)
    assert enc.output_dim == 10
    assert torch.equal(enc(obs), obs.flatten(1))
    assert not list(enc.parameters())


def test_state_encoder_mlp():
    enc = StateEncoder(obs_dim=5, n_obs_steps=2, hidden=32, output_dim=16)
    assert enc(torch.randn(4, 2, 5)).shape == (4, enc.output_dim) == (4, 16)
    with pytest.raises(ValueError, match=r"\(B, 2, 5\)"):
        enc(torch.randn(4, 3, 5))


@pytest.mark.parametrize("image_size", [32, (24, 40)])
def test_rgb_encoder_concatenates_frame_features(image_size):
    torch.manual_seed(0)
    enc = RGBEncoder(image_size, n_obs_steps=2, widths=(16, 32), num_keypoints=8, feature_dim=12)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    images = torch.rand(3, 2, 3, h, w)
    out = enc(images)
    assert out.shape == (3, enc.output_dim) == (3, 24)
    # The CNN is shared across frames: frame 1's features depend only on frame 1.
    swapped = enc(images.flip(1))
    assert torch.allclose(out[:, :12], swapped[:, 12:], atol=1e-5)
    with pytest.raises(ValueError, match="float in"):
        enc(torch.rand(3, 2, 3, h + 2, w))


def test_spatial_softmax_keypoints_lie_in_the_image():
    enc = RGBEncoder(16, n_obs_steps=1, widths=(8,), num_keypoints=4, feature_dim=4)
    keypoints = enc.pool(enc.backbone(torch.rand(2, 3, 16, 16)))
    assert keypoints.shape == (2, 8) and keypoints.abs().max() <= 1


def test_point_cloud_encoder_is_order_invariant():
    torch.manual_seed(0)
    enc = PointCloudEncoder(n_obs_steps=2, in_channels=6, hidden_dims=(16, 32), feature_dim=8)
    points = torch.randn(3, 2, 50, 6)
    out = enc(points)
    assert out.shape == (3, enc.output_dim) == (3, 16)
    assert torch.allclose(enc(points[:, :, torch.randperm(50)]), out, atol=1e-5)
    with pytest.raises(ValueError, match="n_points, 6"):
        enc(torch.randn(3, 2, 50, 3))
