"""Parents normalized with different statistics, checked on Gaussian parents with closed-form predictions.

Each test builds one action distribution (in env units) twice: a parent normalized as the working parent is,
and the same parent normalized with other statistics (its mean and covariance moved into that space). An
offset and a uniform scale must be invisible to the composition; a per-dimension scale is refused unless asked
for, then approximated with a bounded error (benchmarks/normalizer_mismatch.py tabulates it)."""

import numpy as np
import pytest
import torch

from gpc.core.composer import Composer, CompositionError, make_generators
from gpc.core.normalizer import Normalizer
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig

from .test_composer import COV_A, COV_B, MEAN_A, MEAN_B, PATHS, D, H

# Statistics exact in float32, so that the exact cases can be held to float64 rounding.
WORKING = Normalizer(np.array([0.125, -0.25], np.float32), np.array([0.5, 0.5], np.float32))
SAMPLERS = {"ddim": SamplerConfig("ddim", 10, PATHS["eps_cos100"][0]), "flow_euler": SamplerConfig("flow_euler", 10)}


def moved(name, mean, cov, scale, shift):
    """The parent `name` of N(mean, cov) (working normalized units), normalized as a = scale * a_w + shift."""
    path, prediction = PATHS[name]
    c = np.tile(np.asarray(scale, np.float64), H)
    normalizer = Normalizer((WORKING.offset - np.asarray(shift) * WORKING.scale / scale).astype(np.float32),
                            (WORKING.scale / np.asarray(scale)).astype(np.float32))
    return GaussianParent(f"{name}_moved", path, prediction, mean * scale + shift, c[:, None] * cov * c[None, :],
                          normalizer=normalizer)


def env_actions(composer, weights, seeds):
    encodings = composer.encode({"shift": torch.zeros(len(seeds), H, D)})
    chunk = composer.sample(encodings, weights, make_generators(seeds, 1))
    return composer.normalizer.unnormalize(chunk)


# Pairs where every working level is one the parent's path reaches. Where it is not (a VP parent at the flow
# sampler's pure-noise start, a VP schedule whose ends fall short of the working sampler's), a parent is queried at
# its nearest level in any action space, exactly as an unmoved parent is, and the map is exact only elsewhere.
REACHABLE = [("ddim", "eps_cos100", name) for name in ("eps_cos100", "sample_lin1000", "flow_noise_at_1",
                                                         "flow_noise_at_0")]
REACHABLE += [("flow_euler", "flow_noise_at_1", name) for name in ("flow_noise_at_1", "flow_noise_at_0")]


@pytest.mark.parametrize("sampler, first_name, name", REACHABLE)
def test_an_offset_and_a_uniform_scale_compose_exactly(sampler, first_name, name):
    path, prediction = PATHS[name]
    first = GaussianParent("first", *PATHS[first_name], MEAN_A, COV_A, normalizer=WORKING)
    same_space = GaussianParent(name, path, prediction, MEAN_B, COV_B, normalizer=WORKING)
    other_space = moved(name, MEAN_B, COV_B, scale=[2.0, 2.0], shift=[0.25, -0.5])
    seeds = list(range(8))
    # In float64, so that float32 rounding cannot hide an error.
    for weights in ([0.3, 0.7], [0.0, 1.0]):
        expected = env_actions(Composer([first, same_space], SAMPLERS[sampler], dtype=torch.float64), weights, seeds)
        got = env_actions(Composer([first, other_space], SAMPLERS[sampler], dtype=torch.float64), weights, seeds)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_per_dimension_scale_is_refused_unless_approximation_is_asked_for():
    first = GaussianParent("first", *PATHS["eps_cos100"], MEAN_A, COV_A, normalizer=WORKING)
    other = moved("flow_noise_at_1", MEAN_B, COV_B, scale=[1.0, 3.0], shift=[0.0, 0.0])
    with pytest.raises(CompositionError, match=r"per-dimension scale 3x apart .*normalizers: approximate"):
        Composer([first, other], SAMPLERS["ddim"])
    with pytest.warns(UserWarning, match=r"per-dimension scale 3x apart .* composed approximately"):
        Composer([first, other], SAMPLERS["ddim"], normalizers="approximate")


def approximation_error(spread: float, sampler: str = "ddim", n: int = 256) -> float:
    """Mean distance, in units of the action's std, between the approximated parent alone and the same parent in
    the working space alone, from the same noise."""
    scale = [spread ** -0.5, spread ** 0.5]
    same = GaussianParent("same", *PATHS["flow_noise_at_1"], MEAN_B, COV_B, normalizer=WORKING)
    other = moved("flow_noise_at_1", MEAN_B, COV_B, scale=scale, shift=[0.2, 0.1])
    first = GaussianParent("first", *PATHS["flow_noise_at_1"], MEAN_A, COV_A, normalizer=WORKING)
    seeds = list(range(n))
    with pytest.warns(UserWarning) if spread > 1 else _nothing():
        approx = env_actions(Composer([first, other], SAMPLERS[sampler], normalizers="approximate"), [0, 1], seeds)
    exact = env_actions(Composer([first, same], SAMPLERS[sampler]), [0, 1], seeds)
    std = torch.as_tensor(np.sqrt(np.diag(COV_B)).reshape(H, D) * WORKING.scale)
    return float(((approx - exact).abs() / std).mean())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_approximation_is_exact_without_spread_and_degrades_with_it(sampler):
    errors = [approximation_error(spread, sampler) for spread in (1.0, 1.5, 4.0)]
    assert errors[0] < 1e-5
    assert 0 < errors[1] < errors[2]
