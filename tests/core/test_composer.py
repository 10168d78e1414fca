"""The composed sampler against exact references: Gaussian parents have closed-form predictions."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy.integrate import solve_ivp

from gpc.core.composer import Composer, CompositionError, make_generators
from gpc.core.normalizer import Normalizer
from gpc.core.paths import FlowPath, VPSchedule
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig

H, D = 2, 2
RNG = np.random.default_rng(0)


def random_cov(n, scale):
    m = RNG.normal(size=(n, n))
    return scale * (m @ m.T / n + 0.3 * np.eye(n))


MEAN_A, COV_A = RNG.normal(size=(H, D)), random_cov(H * D, 0.5)
MEAN_B, COV_B = RNG.normal(size=(H, D)) - 1.0, random_cov(H * D, 0.3)

# One parent of each kind: VP schedules and prediction types differ, flow parents use both conventions.
PATHS = {
    "eps_cos100": (VPSchedule(100, "squaredcos_cap_v2"), "epsilon"),
    "sample_lin1000": (VPSchedule(1000, "linear"), "sample"),
    "v_scaled1000": (VPSchedule(1000, "scaled_linear", 0.00085, 0.012), "v_prediction"),
    "flow_noise_at_1": (FlowPath(1, "noise_minus_action"), "velocity"),
    "flow_noise_at_0": (FlowPath(0, "action_minus_noise"), "velocity"),
}


def gaussian(name, mean=MEAN_A, cov=COV_A):
    path, prediction = PATHS[name]
    return GaussianParent(name, path, prediction, mean, cov)


def obs(rows, shift_scale=0.0):
    return {"shift": shift_scale * torch.arange(rows, dtype=torch.float64)[:, None, None].expand(rows, H, D)}


def native(parent, steps=10):
    return SamplerConfig.native(parent.spec.path, parent.spec.prediction_type, steps)


def run_alone_by_hand(parent, steps, seeds):
    """The parent through its own sampler, written without the composer."""
    x = torch.stack([torch.randn((H, D), generator=g) for g in make_generators(seeds, 1)])
    enc = parent.encode(obs(len(seeds)))
    path = parent.spec.path
    if isinstance(path, VPSchedule):
        scheduler = DDIMScheduler(**path.scheduler_config(), prediction_type=parent.spec.prediction_type,
                                  clip_sample=False)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            out = parent.predict(x, torch.full((len(seeds),), float(t)), enc)
            x = scheduler.step(out, t, x).prev_sample
        return x
    # Euler in the parent's own time convention, from its noise end to its data end.
    times = np.linspace(1.0, 0.0, steps + 1) if path.noise_at == 1 else np.linspace(0.0, 1.0, steps + 1)
    for t0, t1 in zip(times[:-1], times[1:]):
        x = x + (t1 - t0) * parent.predict(x, torch.full((len(seeds),), t0, dtype=torch.float32), enc)
    return x


@pytest.mark.parametrize("index", range(len(PATHS)))
def test_weight_one_on_a_parent_is_that_parent_alone_bit_for_bit(index):
    parents = [gaussian(name, mean=MEAN_A + i, cov=COV_A) for i, name in enumerate(PATHS)]
    weights = np.eye(len(parents))[index]
    seeds = [3, 4, 5]
    composed = Composer(parents, native(parents[index])).sample(
        [p.encode(obs(3)) for p in parents], weights, make_generators(seeds, 1))
    alone = Composer([parents[index]], native(parents[index])).sample(
        [parents[index].encode(obs(3))], [1.0], make_generators(seeds, 1))
    assert torch.equal(composed, alone)
    # and the composer's single-parent run is the parent's own sampler written by hand
    torch.testing.assert_close(alone, run_alone_by_hand(parents[index], 10, seeds), rtol=1e-5, atol=1e-5)


def test_weight_one_is_bit_exact_under_stochastic_ddpm_with_per_row_noise():
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_0", MEAN_B, COV_B)]
    sampler = SamplerConfig("ddpm", 100, parents[0].spec.path, "epsilon")
    seeds = [11, 12]
    composed = Composer(parents, sampler).sample([p.encode(obs(2)) for p in parents], [1.0, 0.0],
                                                 make_generators(seeds, 1))
    scheduler = DDPMScheduler(**parents[0].spec.path.scheduler_config(), clip_sample=False)
    scheduler.set_timesteps(100)
    generators = make_generators(seeds, 1)
    x = torch.stack([torch.randn((H, D), generator=g) for g in generators])
    for t in scheduler.timesteps:
        out = parents[0].predict(x, torch.full((2,), float(t)), parents[0].encode(obs(2)))
        x = scheduler.step(out, t, x, generator=generators).prev_sample
    assert torch.equal(composed, x)


SAME_GAUSSIAN_SAMPLERS = [
    SamplerConfig("ddim", 100, VPSchedule(1000, "linear"), "epsilon", timestep_spacing="trailing"),
    SamplerConfig("flow_euler", 100),
]


@pytest.mark.parametrize("sampler", SAME_GAUSSIAN_SAMPLERS, ids=["ddim", "flow_euler"])
@pytest.mark.parametrize("w", [0.0, 0.3, 0.7, 1.0])
def test_diffusion_and_flow_parents_of_one_gaussian_compose_to_that_gaussian(sampler, w):
    """4000 samples: the mean's standard error is ~0.01 and the covariance's ~0.02, far below the
    tolerances (0.06, 0.1); a misaligned parent (checked below) is off by > 0.2."""
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_0")]
    samples = compose_samples(parents, sampler, [w, 1 - w], 4000)
    np.testing.assert_allclose(samples.mean(0), MEAN_A.reshape(-1), atol=0.06)
    np.testing.assert_allclose(np.cov(samples.T), COV_A, atol=0.1)


def test_a_flow_sampler_warns_where_an_epsilon_parent_answers_at_the_cosine_noise_end():
    with pytest.warns(UserWarning, match=r"parent 'eps_cos100' \(epsilon\) has alpha_bar = 2.4e-07.* 2\d\d\dx"):
        Composer([gaussian("eps_cos100"), gaussian("flow_noise_at_0")], SamplerConfig("flow_euler", 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Composer([gaussian("eps_cos100"), gaussian("flow_noise_at_0")], native(gaussian("eps_cos100")))
        Composer([gaussian("sample_lin1000"), gaussian("flow_noise_at_0")], SamplerConfig("flow_euler", 10))


def compose_samples(parents, sampler, weights, n):
    composer = Composer(parents, sampler)
    out = composer.sample([p.encode(obs(n)) for p in parents], weights, make_generators(range(n), 1))
    return out.reshape(n, -1).double().numpy()


def test_a_wrong_alignment_is_caught_by_the_moment_check(monkeypatch):
    """The statistical test above has power: querying the flow parent at the VP timestep's raw fraction
    (no SNR matching, no state rescaling) moves the moments far outside its tolerance."""
    def naive_align(level, source, timestep, target):
        if target == source:
            return timestep, 1.0, level
        t = timestep / 1000 if isinstance(source, VPSchedule) else timestep
        return (t if target.noise_at == 1 else 1 - t), 1.0, target.level(t if target.noise_at == 1 else 1 - t)

    monkeypatch.setattr("gpc.core.alignment.align", naive_align)
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_0")]
    samples = compose_samples(parents, SAME_GAUSSIAN_SAMPLERS[0], [0.0, 1.0], 4000)
    error = max(np.abs(samples.mean(0) - MEAN_A.reshape(-1)).max(), np.abs(np.cov(samples.T) - COV_A).max())
    assert error > 0.2


def flow_velocity(mean, cov, x, s):
    """Exact E[e - a | x_s] for a ~ N(mean, cov) on the path x_s = (1-s) a + s e, written independently of
    gpc: x_s ~ N((1-s) mean, (1-s)^2 cov + s^2 I)."""
    c = (1 - s) ** 2 * cov + s ** 2 * np.eye(len(mean))
    r = np.linalg.solve(c, x - (1 - s) * mean)
    return s * r - (mean + (1 - s) * cov @ r)


@pytest.mark.parametrize("sampler", [
    SamplerConfig("ddim", 200, VPSchedule(1000, "linear"), "v_prediction", timestep_spacing="trailing"),
    SamplerConfig("flow_euler", 400),
], ids=["ddim", "flow_euler"])
def test_two_different_gaussians_match_an_independent_probability_flow_ode_integration(sampler):
    parents = [gaussian("eps_cos100", MEAN_A, COV_A), gaussian("flow_noise_at_0", MEAN_B, COV_B),
               gaussian("sample_lin1000", MEAN_A + 0.5, COV_B)]
    weights = [0.3, 0.5, 0.2]
    n = 8
    composed = Composer(parents, sampler).sample([p.encode(obs(n)) for p in parents], weights,
                                                 make_generators(range(n), 1)).reshape(n, -1).double().numpy()
    first = next(iter(__import__("gpc.core.samplers", fromlist=["WorkingSampler"]).WorkingSampler(sampler).steps()))
    s0 = first.level.s
    x0 = torch.stack([torch.randn((H, D), generator=g) for g in make_generators(range(n), 1)])
    x0 = x0.reshape(n, -1).double().numpy() * first.level.to_flow_scale
    means = [p.mean.numpy() for p in parents]
    covs = [p.cov.numpy() for p in parents]
    for row in range(n):
        def velocity(s, x):
            return sum(w * flow_velocity(m, c, x, s) for w, m, c in zip(weights, means, covs))
        ref = solve_ivp(velocity, (s0, 0.0), x0[row], rtol=1e-9, atol=1e-9).y[:, -1]
        np.testing.assert_allclose(composed[row], ref, atol=0.03)


def test_the_composite_does_not_depend_on_the_working_quantity():
    parents = [gaussian("eps_cos100", MEAN_A, COV_A), gaussian("flow_noise_at_1", MEAN_B, COV_B),
               gaussian("v_scaled1000", MEAN_A - 0.3, COV_B)]
    outs = []
    for quantity in ["epsilon", "sample", "v_prediction"]:
        sampler = SamplerConfig("ddim", 20, VPSchedule(1000, "linear"), quantity)
        outs.append(Composer(parents, sampler).sample([p.encode(obs(5)) for p in parents], [0.2, 0.5, 0.3],
                                                      make_generators(range(5), 1)))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)


def test_batched_candidates_equal_candidates_run_one_at_a_time():
    parents = [gaussian("eps_cos100", MEAN_A, COV_A), gaussian("flow_noise_at_0", MEAN_B, COV_B)]
    sampler = SamplerConfig("ddpm", 50, VPSchedule(100, "squaredcos_cap_v2"), "epsilon")
    candidates = [[0.0, 1.0], [0.25, 0.75], [0.6, 0.4], [1.0, 0.0]]
    seeds = [7, 8, 9]
    composer = Composer(parents, sampler)
    encodings = [p.encode(obs(3, 0.5)) for p in parents]
    batched = composer.sample(encodings, candidates, make_generators(seeds, len(candidates)))
    batched = batched.reshape(len(seeds), len(candidates), H, D)
    for k, weights in enumerate(candidates):
        alone = composer.sample(encodings, weights, make_generators(seeds, 1))
        torch.testing.assert_close(batched[:, k], alone, rtol=0, atol=1e-6)
    # common noise: with identical weights, two candidates give identical samples
    twins = composer.sample(encodings, [[0.5, 0.5], [0.5, 0.5]], make_generators(seeds, 2)).reshape(3, 2, H, D)
    assert torch.equal(twins[:, 0], twins[:, 1])


def test_different_horizons_combine_on_the_overlap_and_take_the_tail_from_the_longer_parent():
    short_mean, long_mean = np.zeros((2, 1)), np.ones((4, 1))
    short = GaussianParent("short", VPSchedule(), "epsilon", short_mean, 0.1 * np.eye(2))
    long = GaussianParent("long", FlowPath(), "velocity", long_mean, 0.1 * np.eye(4))
    composer = Composer([short, long], SamplerConfig("flow_euler", 50))
    assert composer.layout.length == 4
    n = 2000
    encodings = [p.encode({"shift": torch.zeros(n, p.spec.horizon, 1)}) for p in (short, long)]
    out = composer.sample(encodings, [0.5, 0.5], make_generators(range(n), 1))[..., 0]
    # Independent positions: the overlap is the product-of-experts-like convex composite (mean 0.5),
    # the tail is the long parent alone.
    np.testing.assert_allclose(out[:, :2].mean(0), [0.5, 0.5], atol=0.05)
    np.testing.assert_allclose(out[:, 2:].mean(0), [1.0, 1.0], atol=0.05)
    alone = Composer([long], SamplerConfig("flow_euler", 50)).sample([encodings[1]], [1.0],
                                                                     make_generators(range(n), 1))[..., 0]
    torch.testing.assert_close(out[:, 2:], alone[:, 2:], rtol=1e-5, atol=1e-5)


def test_inpainting_keeps_the_conditioned_entries():
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_1", MEAN_B, COV_B)]
    composer = Composer(parents, SamplerConfig("ddim", 10, VPSchedule(100, "squaredcos_cap_v2")))
    mask = torch.zeros(4, H, D, dtype=torch.bool)
    mask[:, 0, :] = True
    values = torch.full((4, H, D), 0.25)
    out = composer.sample([p.encode(obs(4)) for p in parents], [0.5, 0.5], make_generators(range(4), 1),
                          inpaint=(mask, values))
    assert torch.equal(out[:, 0], values[:, 0])


def test_act_returns_executable_actions_in_env_units_per_env_and_candidate():
    normalizer = Normalizer(np.array([256.0, 256.0], np.float32), np.array([200.0, 200.0], np.float32))
    parents = [GaussianParent(n, *PATHS[n], np.zeros((8, 2)), 0.01 * np.eye(16), n_obs_steps=2,
                              n_action_steps=4, normalizer=normalizer) for n in ("eps_cos100", "flow_noise_at_1")]
    composer = Composer(parents, SamplerConfig("ddim", 10, VPSchedule(100, "squaredcos_cap_v2")))
    actions = composer.act({"shift": torch.zeros(3, 8, 2)}, [[1.0, 0.0], [0.5, 0.5]], seeds=[0, 1, 2])
    assert actions.shape == (3, 2, 4, 2)
    np.testing.assert_allclose(actions.numpy(), 256.0, atol=200 * 0.5)


@pytest.mark.parametrize("make, message", [
    (lambda: [gaussian("eps_cos100"), GaussianParent("wide", VPSchedule(), "epsilon", np.zeros((2, 3)),
                                                     np.eye(6))], "action_dim 3"),
    (lambda: [gaussian("eps_cos100"), GaussianParent("other_norm", VPSchedule(), "epsilon", MEAN_A, COV_A,
              normalizer=Normalizer(np.zeros(2, np.float32), np.array([1.0, 2.0], np.float32)))],
     "per-dimension scale 2x apart.*normalizers: approximate"),
])
def test_incompatible_parents_are_refused_with_a_clear_error(make, message):
    with pytest.raises(CompositionError, match=message):
        Composer(make(), SamplerConfig())


@pytest.mark.parametrize("weights, message", [
    ([1.0], "1 weights for 2 parents"),
    ([0.5, 0.6], "sum to 1"),
    ([1.5, -0.5], ">= 0"),
    ([float("nan"), 1.0], "finite"),
])
def test_weights_off_the_simplex_are_refused(weights, message):
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_1")]
    composer = Composer(parents, SamplerConfig())
    with pytest.raises(CompositionError, match=message):
        composer.sample([p.encode(obs(1)) for p in parents], weights, make_generators([0], 1))


@pytest.mark.parametrize("path, prediction", [(VPSchedule(), "velocity"), (FlowPath(), "epsilon"),
                                              (VPSchedule(), "x0")])
def test_unknown_or_mismatched_parameterization_is_refused(path, prediction):
    with pytest.raises(ValueError, match="prediction_type"):
        GaussianParent("bad", path, prediction, MEAN_A, COV_A)


def test_weight_schedule_over_noise_levels_interpolates_between_knots():
    from gpc.core.operators import WeightSchedule

    schedule = WeightSchedule((0.0, 1.0), ((1.0, 0.0), (0.0, 1.0)))
    schedule.validate(2)
    np.testing.assert_allclose(schedule.at(0.25), [0.75, 0.25])
    parents = [gaussian("eps_cos100"), gaussian("flow_noise_at_1", MEAN_B, COV_B)]
    out = Composer(parents, SamplerConfig("flow_euler", 20)).sample(
        [p.encode(obs(2)) for p in parents], schedule, make_generators([0, 1], 1))
    assert torch.isfinite(out).all()


def test_weight_schedules_come_from_yaml_and_bad_knots_name_the_field():
    from omegaconf import OmegaConf

    from gpc.app.config import ConfigError, weight_candidates
    from gpc.core.operators import WeightSchedule

    raw = OmegaConf.create([{"knots": [0.0, 1.0], "weights": [[1.0, 0.0], [0.0, 1.0]]}, [0.5, 0.5]])
    schedules = weight_candidates(raw, 2, "compose")
    assert schedules == [WeightSchedule((0.0, 1.0), ((1.0, 0.0), (0.0, 1.0))), WeightSchedule.constant([0.5, 0.5])]
    with pytest.raises(ConfigError, match=r"compose: weights: knots must increase"):
        weight_candidates(OmegaConf.create({"knots": [1.0, 0.0], "weights": [[1, 0], [0, 1]]}), 2, "compose")
