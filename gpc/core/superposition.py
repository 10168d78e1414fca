"""The math of AND / OR superposition (Skreta et al., "The Superposition of Diffusion Models", ICLR 2025); the
operators themselves are gpc.core.operators.Or and gpc.core.operators.And.

Every parent, once aligned (gpc.core.paths.align), is a denoiser on the working path x = alpha a + sigma e, so its
score there is s_i = -e_i / sigma, whatever it was trained as. Along the sampling trajectory we keep a running
estimate l_i of each parent's log-density log q_i(x) (up to one constant shared by all parents: every parent
starts from the same pure noise) and pick per-row weights kappa from it at every step:

- OR (mixture): kappa = softmax(T l + log w). With T = 1 and exact tracking the composite score is the score of
  the mixture sum_i w_i q_i, so the sampler draws from the mixture of the parents with weights w.
- AND (equal log-density change): kappa (summing to 1) makes every participating parent's log-density change
  by the same amount over the step, so samples stay where all parents are equally likely.

Tracking, with reverse time tau, forward drift f(x) = f_t x, diffusion g_t, F = int f dtau, G = int g^2 dtau
over one step (closed forms on the VP and linear-flow paths, finite down to sigma = 0):

- stochastic samplers (DDPM), Ito estimator, no divergence:
    dl_i = <s_i, dx> + F <x, s_i> - G/2 |s_i|^2
- deterministic samplers (DDIM, flow Euler):
    dl_i = <s_i, dx> + F <x, s_i> - G/2 (|s_i|^2 + div s_i)
  with div s_i from a Hutchinson estimate z^T (s_i(x + h z) - s_i(x)) / h, z Rademacher: one more parent call
  per step, batched with the main one (twice the rows).
The term d f_t, equal for all parents, is left out: both operators only use differences of l.
"""

from __future__ import annotations

import math

import torch

from gpc.core.paths import FlowPath, Level, NoisePath


def step_integrals(path: NoisePath, level: Level, next_level: Level) -> tuple[float, float]:
    """(F, G) = (int f dtau, int g^2 dtau) from `level` to the less noisy `next_level` on the working path.

    With f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2: F = log(alpha / alpha'); on a VP path
    G = 2 log(alpha' / alpha); on the linear flow path (alpha = 1 - s, sigma = s) G = 2 (s' - s) + 2 log(alpha' /
    alpha). Both are exact for the step, so the last step down to sigma = 0 stays finite.
    """
    log_ratio = math.log(next_level.alpha / level.alpha)
    if isinstance(path, FlowPath):
        return -log_ratio, 2.0 * (next_level.sigma - level.sigma) + 2.0 * log_ratio
    return -log_ratio, 2.0 * log_ratio


def row_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-row inner product over all but the first dimension, in float64 (the estimates are sums of large
    terms that nearly cancel)."""
    return (u.double() * v.double()).flatten(1).sum(1)


def score_products(scores, steps: torch.Tensor) -> torch.Tensor:
    """M[r, i, j] = <s_i, dx_j> for scores [P x (rows, ...)] and per-parent steps (P, rows, ...), float64."""
    s = torch.stack(scores).flatten(2).double()
    return torch.einsum("irn,jrn->rij", s, steps.flatten(2).double())


def rademacher(shape, generators, device, dtype) -> torch.Tensor:
    """One +-1 probe per row, drawn from that row's generator (so paired rows share probes)."""
    return torch.stack([torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1
                        for g in generators])


class LogDensityTracker:
    """Running estimates l (rows, P) of each parent's log-density at the current state, up to a shared constant."""

    def __init__(self, n_rows: int, n_parents: int, device):
        self.log_density = torch.zeros(n_rows, n_parents, dtype=torch.float64, device=device)

    def step_terms(self, scores, x, divergences, F: float, G: float) -> torch.Tensor:
        """The part of each parent's change that does not depend on dx: F <x, s_i> - G/2 (|s_i|^2 [+ div s_i])."""
        terms = []
        for i, s in enumerate(scores):
            term = F * row_dot(x, s) - 0.5 * G * row_dot(s, s)
            if divergences is not None:
                term = term - 0.5 * G * divergences[i]
            terms.append(term)
        return torch.stack(terms, 1)

    def update(self, scores, x, x_next, constant_terms: torch.Tensor) -> None:
        dx = x_next - x
        self.log_density += constant_terms + torch.stack([row_dot(s, dx) for s in scores], 1)


def or_weights(log_density: torch.Tensor, prior: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(T l + log w) per row; a parent with prior weight 0 gets exactly 0."""
    return torch.softmax(temperature * log_density + prior.double().log(), dim=1)


def and_weights(log_density: torch.Tensor, constant_terms: torch.Tensor, score_dot_steps: torch.Tensor,
                participating: torch.Tensor) -> torch.Tensor:
    """kappa per row with sum 1, equal l_i + dl_i for every participating parent i, 0 for the others.

    score_dot_steps[r, i, j] = <s_i, dx_j>: the step parent j alone would take (every step is affine in the
    model output, so the composite step is sum_j kappa_j dx_j). Solved by pseudo-inverse: where parents agree
    the system is degenerate and the minimum-norm answer is the uniform one.
    """
    rows, P = log_density.shape
    after = log_density + constant_terms  # l_i + (the dx-free part of dl_i)
    reference = participating.double().argmax(1)  # first participating parent of each row
    idx = torch.arange(rows, device=log_density.device)
    ref_after, ref_m = after[idx, reference], score_dot_steps[idx, reference]  # (rows,), (rows, P)
    eye = torch.eye(P, dtype=torch.float64, device=log_density.device)
    equal = score_dot_steps - ref_m[:, None, :]  # row i: (M_i - M_ref) kappa = after_ref - after_i
    A = torch.where(participating[:, :, None], equal, eye[None].expand(rows, P, P))
    b = torch.where(participating, ref_after[:, None] - after, torch.zeros_like(after))
    is_ref = torch.nn.functional.one_hot(reference, P).bool()
    A = torch.where(is_ref[:, :, None], participating.double()[:, None, :], A)  # sum of kappa = 1
    b = torch.where(is_ref, torch.ones_like(b), b)
    kappa = (torch.linalg.pinv(A, rtol=1e-9) @ b[:, :, None])[:, :, 0]
    kappa = torch.where(participating, kappa, torch.zeros_like(kappa))
    uniform = participating.double() / participating.double().sum(1, keepdim=True)
    fixed = ~torch.isfinite(kappa).all(1, keepdim=True) | (participating.sum(1, keepdim=True) == 1)
    return torch.where(fixed, uniform, kappa)  # a parent alone gets exactly 1
