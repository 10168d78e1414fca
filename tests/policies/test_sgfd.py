"""SGFD's pieces against what they must do: zero covariance for independent features, lower covariance
after reweighting a batch with a planted spurious correlation, and the plain loss when it is off."""

import itertools
import json

import pytest
import torch
from omegaconf import OmegaConf

from gpc.app.config import PROJECT_ROOT
from gpc.policies.sgfd import SGFD, SGFDConfig, random_fourier_features, weighted_cross_covariance, weighted_loss


def lifted(z, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return random_fourier_features(z, torch.randn(z.shape[1], k, generator=g),
                                   6.283 * torch.rand(z.shape[1], k, generator=g))


def test_weighted_cross_covariance_is_zero_for_independent_and_positive_for_dependent_features():
    values = torch.linspace(-2, 2, 7)
    # every combination of the two features once: independent in the empirical distribution, exactly
    independent = torch.tensor(list(itertools.product(values.tolist(), values.tolist())))
    ones = torch.ones(2, 2)
    uniform = torch.ones(len(independent))
    assert weighted_cross_covariance(lifted(independent), uniform, ones).item() < 1e-10
    dependent = torch.stack([values, values], 1)
    assert weighted_cross_covariance(lifted(dependent), torch.ones(7), ones).item() > 0.1
    # weights that pick out a dependent subset make independent data dependent
    picked = (independent[:, 0] == independent[:, 1]).float() + 1e-3
    assert weighted_cross_covariance(lifted(independent), picked, ones).item() > 0.1


def test_learned_weights_reduce_the_covariance_of_a_planted_spurious_correlation():
    g = torch.Generator().manual_seed(0)
    n = 128
    signal = torch.randn(n, generator=g)
    env = (torch.arange(n) % 2)
    # env 0: the spurious feature copies the signal; env 1: it is independent noise
    spurious = torch.where(env == 0, signal + 0.05 * torch.randn(n, generator=g), torch.randn(n, generator=g))
    z = torch.stack([signal, spurious, torch.randn(n, generator=g)], 1)
    sgfd = SGFD(SGFDConfig(enabled=True, inner_steps=100, inner_lr=0.1, concentration=0.01), 3, 2)
    weights, stats = sgfd.weights(z, env)
    assert stats["decorrelation_after"] < 0.5 * stats["decorrelation_before"]
    assert weights[env == 1].mean() > 1.5 * weights[env == 0].mean()  # the decorrelated env gains weight
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    assert 0 < stats["weight_entropy"] <= 1


def test_without_sgfd_the_training_loss_is_the_plain_loss_exactly():
    per_sample = torch.rand(16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(weighted_loss(per_sample, None), per_sample.mean())


def test_sgfd_off_trains_exactly_as_before_and_on_logs_its_statistics(tmp_path):
    from gpc.policies.train import train

    def config(out, enabled):
        return OmegaConf.create({
            "policy": OmegaConf.load(PROJECT_ROOT / "configs/policy/pusht_hint_flow.yaml"),
            "dataset": {"path": str(PROJECT_ROOT / "data/pusht/variants.zarr")},
            "training": {"seed": 0, "steps": 3, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1,
                         "ema_power": 0.75, "ema_max_decay": 0.9999, "log_every": 1, "checkpoint_every": 3,
                         "progress": False, "device": "cpu", "sgfd": {"enabled": enabled, "inner_steps": 3}},
            "output_dir": str(out)})

    def losses(run):
        return [json.loads(line) for line in (train(run) / "train_log.jsonl").read_text().splitlines()]

    plain = losses(config(tmp_path / "plain", False))
    reference = config(tmp_path / "reference", False)
    del reference.training["sgfd"]  # a config that never heard of SGFD
    assert [row["loss"] for row in plain] == [row["loss"] for row in losses(reference)]
    logged = losses(config(tmp_path / "sgfd", True))
    assert {"weight_entropy", "decorrelation_before", "decorrelation_after"} <= set(logged[-1])


def test_sgfd_needs_environment_labels():
    with pytest.raises(ValueError, match="at least 2 environments"):
        SGFD(SGFDConfig(enabled=True), 4, 1)
