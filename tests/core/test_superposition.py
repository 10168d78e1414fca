"""AND / OR superposition against closed forms: Gaussian parents have exact scores and densities."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import multivariate_normal

from gpc.app.config import ConfigError, operator_config
from gpc.core.composer import Composer, CompositionError, make_generators
from gpc.core.operators import OperatorConfig, WeightSchedule
from gpc.core.paths import FlowPath, VPSchedule
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig
from gpc.core.superposition import and_weights, step_integrals

# A diffusion parent and a flow parent, far apart, with different covariances.
MEAN_A, COV_A = np.array([[-2.0, 0.5]]), 0.3 * np.eye(2)
MEAN_B, COV_B = np.array([[2.0, -0.5]]), np.array([[0.5, 0.1], [0.1, 0.2]])
SAMPLERS = [
    SamplerConfig("ddpm", 200, VPSchedule(1000, "linear"), "epsilon"),  # stochastic: Ito estimator
    SamplerConfig("ddim", 100, VPSchedule(1000, "linear"), "v_prediction"),  # deterministic: Hutchinson
    SamplerConfig("flow_euler", 100),
]
IDS = ["ddpm", "ddim", "flow_euler"]
N = 1500


def parents(mean_b=MEAN_B, cov_b=COV_B, horizon_b=1):
    a = GaussianParent("diffusion", VPSchedule(100, "squaredcos_cap_v2"), "epsilon", MEAN_A, COV_A)
    b = GaussianParent("flow", FlowPath(0, "action_minus_noise"), "velocity", np.resize(mean_b, (horizon_b, 2)),
                       np.eye(2 * horizon_b) * 0.3 if horizon_b > 1 else cov_b)
    return [a, b]


def sample(operator, sampler, weights, n=N, seeds=None):
    ps = parents()
    composer = Composer(ps, sampler, operator=OperatorConfig(operator))
    obs = {"shift": torch.zeros(n, 1, 2, dtype=torch.float64)}
    out = composer.sample([p.encode(obs) for p in ps], weights, make_generators(seeds or range(n), 1))
    return out.reshape(n, -1).double().numpy()


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_or_samples_the_mixture_of_the_parents(sampler):
    x = sample("or", sampler, [0.3, 0.7])
    from_a = x[:, 0] < 0  # the components are ~7 standard deviations apart along the first axis
    assert abs(from_a.mean() - 0.3) < 0.05  # 3.4 sampling standard deviations at N = 1500
    for part, mean, cov in ((x[from_a], MEAN_A[0], COV_A), (x[~from_a], MEAN_B[0], COV_B)):
        np.testing.assert_allclose(part.mean(0), mean, atol=0.1)
        np.testing.assert_allclose(np.cov(part.T), cov, atol=0.1)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_and_samples_lie_where_both_parents_are_equally_likely(sampler):
    x = sample("and", sampler, [0.5, 0.5])
    gap = np.abs(multivariate_normal(MEAN_A[0], COV_A).logpdf(x) - multivariate_normal(MEAN_B[0], COV_B).logpdf(x))
    # Under either parent alone the gap is tens of nats; AND keeps it near 0 (the numerical reference: the
    # equal-density set of the two closed-form densities).
    alone = sample("or", sampler, [1.0, 0.0], n=200)
    gap_alone = np.abs(multivariate_normal(MEAN_A[0], COV_A).logpdf(alone)
                       - multivariate_normal(MEAN_B[0], COV_B).logpdf(alone))
    assert np.median(gap_alone) > 20
    assert np.median(gap) < 0.2 and np.quantile(gap, 0.9) < 0.4
    # ...and between the parents: on the segment's side of neither mean
    assert -1.0 < x[:, 0].mean() < 1.0


@pytest.mark.parametrize("operator", ["or", "and"])
@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_one_parent_alone_is_that_parent_bit_for_bit(operator, sampler):
    ps = parents()
    obs = {"shift": torch.zeros(6, 1, 2, dtype=torch.float64)}
    encodings = [p.encode(obs) for p in ps]
    for weights in ([1.0, 0.0], [0.0, 1.0]):
        superposed = Composer(ps, sampler, operator=OperatorConfig(operator)).sample(
            encodings, weights, make_generators(range(6), 1))
        convex = Composer(ps, sampler).sample(encodings, weights, make_generators(range(6), 1))
        assert torch.equal(superposed, convex)


def test_batched_candidates_equal_candidates_run_one_at_a_time():
    ps = parents()
    obs = {"shift": torch.zeros(3, 1, 2, dtype=torch.float64)}
    encodings = [p.encode(obs) for p in ps]
    candidates = [[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]]
    composer = Composer(ps, SAMPLERS[0], operator=OperatorConfig("or"))
    batched = composer.sample(encodings, candidates, make_generators(range(3), 3)).reshape(3, 3, 1, 2)
    for k, weights in enumerate(candidates):
        alone = composer.sample(encodings, weights, make_generators(range(3), 1))
        torch.testing.assert_close(batched[:, k], alone, rtol=0, atol=1e-6)


def test_and_weights_solve_for_equal_log_density_changes():
    rng = np.random.default_rng(0)
    log_density = torch.as_tensor(rng.normal(size=(4, 3)))
    constants = torch.as_tensor(rng.normal(size=(4, 3)))
    products = torch.as_tensor(rng.normal(size=(4, 3, 3)))
    everyone = torch.ones(4, 3, dtype=torch.bool)
    kappa = and_weights(log_density, constants, products, everyone)
    after = log_density + constants + (products @ kappa[:, :, None])[:, :, 0]
    torch.testing.assert_close(kappa.sum(1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(after - after[:, :1], torch.zeros(4, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    # a parent left out gets weight 0 and the others still balance
    some = everyone.clone()
    some[:, 1] = False
    kappa = and_weights(log_density, constants, products, some)
    assert torch.all(kappa[:, 1] == 0)
    after = log_density + constants + (products @ kappa[:, :, None])[:, :, 0]
    torch.testing.assert_close(after[:, 2] - after[:, 0], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    # identical parents: any kappa balances them; the minimum-norm answer is uniform
    same = and_weights(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
                       torch.ones(2, 2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.bool))
    torch.testing.assert_close(same, torch.full((2, 2), 0.5, dtype=torch.float64))


def test_step_integrals_are_the_closed_forms_of_f_and_g_squared():
    """Against a fine numerical quadrature of f = dlog(alpha)/dt and g^2 = dsigma^2/dt - 2 f sigma^2."""
    from scipy.integrate import quad

    def numeric(alpha, sigma, t0, t1, eps=1e-6):
        def f(t):
            return (np.log(alpha(t + eps)) - np.log(alpha(t - eps))) / (2 * eps)

        def g2(t):
            return (sigma(t + eps) ** 2 - sigma(t - eps) ** 2) / (2 * eps) - 2 * f(t) * sigma(t) ** 2
        return quad(f, t1, t0)[0], quad(g2, t1, t0)[0]  # reverse time: from t0 down to t1

    from gpc.core.paths import Level
    for alpha, sigma, path in ((lambda t: np.cos(t), lambda t: np.sin(t), VPSchedule()),
                               (lambda t: 1 - t, lambda t: t, FlowPath())):
        t0, t1 = 0.7, 0.4
        F, G = step_integrals(path, Level(alpha(t0), sigma(t0)), Level(alpha(t1), sigma(t1)))
        np.testing.assert_allclose((F, G), numeric(alpha, sigma, t0, t1), rtol=1e-5)


def test_invalid_operators_are_clear_errors():
    ps = parents()
    with pytest.raises(CompositionError, match="DDIM eta"):
        Composer(ps, SamplerConfig("ddim", 10, eta=0.5), operator=OperatorConfig("or"))
    with pytest.raises(CompositionError, match="same chunk"):
        Composer(parents(horizon_b=3), SamplerConfig("flow_euler", 10), operator=OperatorConfig("and"))
    composer = Composer(ps, SamplerConfig("flow_euler", 10), operator=OperatorConfig("or"))
    with pytest.raises(CompositionError, match="constant weights"):
        composer.candidates([WeightSchedule((0.0, 1.0), ((1.0, 0.0), (0.0, 1.0)))])
    with pytest.raises(ConfigError, match="compose: operator.name: unknown operator 'xor'"):
        operator_config("xor", "compose")
    with pytest.raises(ConfigError, match="compose: operator.temperature: must be > 0"):
        operator_config(OmegaConf.create({"name": "or", "temperature": -1}), "compose")
    with pytest.raises(ConfigError, match="compose: operator.temp: unknown key"):
        operator_config(OmegaConf.create({"name": "or", "temp": 2}), "compose")
