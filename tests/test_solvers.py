"""DPM-Solver++ and Heun: exact against independent references, at their order of convergence.

The reference for the order of convergence is independent of every sampler: the probability-flow ODE
of a Gaussian mixture, written in u = log sigma~ (sigma~ = sqrt((1 - alpha_bar) / alpha_bar), x~ = x /
sqrt(alpha_bar)) as dx~/du = x~ - E[x0 | x], with the exact posterior mean of the mixture at any
continuous noise level, integrated by SciPy's DOP853 to a relative tolerance of 1e-12. The solvers run
on a fine training schedule (T = 10,000, so that the integer timesteps do not limit the step sizes)
with ``logsnr`` spacing, from t = T-1 to t = 0, and their state at t = 0 (before the last step, which
is the same map for every K) is compared with the ODE's. The error must fall at the solver's order as
K doubles; with diffusers' weight for the third-order term it falls at order 2 only (negative control).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad, solve_ivp

from ddpmlab import DPMSolverSampler, HeunSampler
from ddpmlab.data.toy import GaussianMixture, OptimalDenoiser
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.samplers import SAMPLERS, make_sampler, sampler_options
from ddpmlab.sampling import DDIMSampler, DDPMSampler, Prediction
from ddpmlab.schedules import SPACINGS, ScheduleError, make_schedule, respaced_timesteps
from oracles import OracleWithNull

MIXTURE = GaussianMixture([-3.0, 0.0, 4.0], [0.5, 1.0, 0.3], [0.3, 0.5, 0.2])
NEW = ["dpm++1m", "dpm++2m", "dpm++3m", "sde-dpm++2m", "heun"]


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", 1000)


class Counting(torch.nn.Module):
    """Wraps a model; records every (timestep, x) it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, torch.Tensor]] = []

    def forward(self, x, t, cond=None):
        self.calls.append((int(t[0]), x.clone()))
        return self.model(x, t, cond)


# --------------------------------------------------------------------------------------------------
# Spacings at K = 1, 2 and T, for every spacing and every sampler.
# --------------------------------------------------------------------------------------------------


def test_the_published_edge_case_one_linspace_step_starts_at_the_noisiest_timestep(linear):
    assert DDIMSampler(GaussianDiffusion(linear), 1, spacing="linspace").timesteps == [999]


@pytest.mark.parametrize(
    "K, spacing, expected",
    [
        (1, "trailing", [999]),
        (1, "linspace", [999]),
        (1, "logsnr", [999]),
        (1, "leading", [0]),  # kept as defined (diffusers' DDIM "leading"); the samplers refuse it
        (2, "trailing", [499, 999]),
        (2, "linspace", [0, 999]),
        (2, "logsnr", [0, 999]),
        (2, "leading", [0, 500]),
    ],
)
def test_respaced_timesteps_at_one_and_two_steps(linear, K, spacing, expected):
    assert respaced_timesteps(1000, K, spacing, linear.log_snr) == expected


@pytest.mark.parametrize("spacing", SPACINGS)
def test_respaced_timesteps_at_T_is_every_step(spacing):
    schedule = make_schedule("cosine", 30)
    assert respaced_timesteps(30, 30, spacing, schedule.log_snr) == list(range(30))


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 37])
def test_logsnr_spacing_is_valid_for_every_K(name, T):
    log_snr = make_schedule(name, T).log_snr
    for K in range(1, T + 1):
        steps = respaced_timesteps(T, K, "logsnr", log_snr)
        assert len(steps) == K and steps == sorted(set(steps)), K
        assert steps[-1] == T - 1 and steps[0] == (0 if K > 1 else T - 1), K


def test_logsnr_spacing_is_uniform_in_log_snr_where_the_timesteps_allow(linear):
    steps = respaced_timesteps(1000, 10, "logsnr", linear.log_snr)
    gaps = -np.diff(linear.log_snr[steps].numpy())  # log SNR falls as t grows
    target = (linear.log_snr[0] - linear.log_snr[-1]).item() / 9
    # rounding to integer timesteps: each gap within 5% of the target here (measured: within 2.3%; the
    # first, t = 0 -> 5, is the coarsest: log SNR falls by 0.4 per timestep there)
    assert np.all(np.abs(gaps / target - 1) < 0.05), gaps / target
    # linspace, uniform in t, is far from uniform in log SNR: its first step, t = 0 -> 111, is the largest
    uniform_in_t = -np.diff(linear.log_snr[respaced_timesteps(1000, 10, "linspace")].numpy())
    assert uniform_in_t.max() == uniform_in_t[0] > 3 * uniform_in_t.min()


def test_logsnr_spacing_needs_the_log_snr():
    with pytest.raises(ScheduleError, match="logsnr spacing needs the schedule's log SNR"):
        respaced_timesteps(1000, 10, "logsnr")
    with pytest.raises(ScheduleError, match="strictly decreasing log SNR of length 1000"):
        respaced_timesteps(1000, 10, "logsnr", torch.zeros(1000))


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", ["trailing", "linspace", "logsnr"])
def test_one_step_from_noise_gives_the_oracle_mean_for_every_sampler(linear, name, spacing):
    """At t = T-1 the exact denoiser's x0 is (nearly) the data mean: a one-step sampler must return it,
    not the noise it started from (which is what a one-step sampler at t = 0 returns)."""
    sampler = make_sampler(name, GaussianDiffusion(linear), 1, spacing=spacing)
    assert sampler.timesteps == [999] and sampler.num_evaluations == 1
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler.sample(OptimalDenoiser(MIXTURE, linear), (256, 1), x_T=x_T, dtype=torch.float64)
    # E[x0 | x_999] ~ mean + sqrt(alpha_bar_999) Var[x0] x_T = -0.1 + 0.041 x_T (to first order in
    # sqrt(alpha_bar_999) = 0.0064; Var[x0] = 6.5)
    expected = (
        MIXTURE.mean().item() + math.sqrt(linear.alphas_cumprod[-1].item()) * MIXTURE.variance().item() * x_T
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0.01)
    assert (out - x_T).abs().max() > 1.0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_leading_spacing_with_one_step_is_refused(linear, name):
    with pytest.raises(ValueError, match="leading spacing with one step visits t = 0 only"):
        make_sampler(name, GaussianDiffusion(linear), 1, spacing="leading")


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("K", [2, 20])
def test_every_sampler_at_two_and_T_steps_visits_the_spacing(name, spacing, K):
    """T = 20, so K = 20 is every step; the model is called num_evaluations times, at the visited
    timesteps only (Heun's second evaluations too), noisiest first."""
    schedule = make_schedule("cosine", 20)
    sampler = make_sampler(name, GaussianDiffusion(schedule), K, spacing=spacing)
    visited = respaced_timesteps(20, K, spacing, schedule.log_snr)[::-1]
    assert sampler.timesteps == visited
    model = Counting(OptimalDenoiser(MIXTURE, schedule))
    out = sampler.sample(model, (8, 1), generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(out).all())
    assert len(model.calls) == sampler.num_evaluations == (2 * K - 1 if name == "heun" else K)
    called = [t for t, _ in model.calls]
    assert called[0] == visited[0] and set(called) == set(visited)
    assert called == sorted(called, reverse=True)


# --------------------------------------------------------------------------------------------------
# What the solvers are, step by step.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["trailing", "linspace", "logsnr"])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_dpm_solver_order_1_is_ddim(spacing, schedule_name):
    schedule = make_schedule(schedule_name, 1000)
    diffusion = GaussianDiffusion(schedule)
    x_T = torch.randn(128, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = OptimalDenoiser(MIXTURE, schedule)
    ddim = DDIMSampler(diffusion, 25, spacing=spacing).sample(model, (128, 1), x_T=x_T)
    dpm = DPMSolverSampler(diffusion, 25, order=1, spacing=spacing).sample(model, (128, 1), x_T=x_T)
    torch.testing.assert_close(dpm, ddim, rtol=0, atol=1e-10)


def test_dpm_solver_warms_up_through_the_lower_orders(linear):
    """The first step of every order is DDIM's; the second step of order 3 is order 2's."""
    diffusion = GaussianDiffusion(linear)
    model = OptimalDenoiser(MIXTURE, linear)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    records = {
        order: list(DPMSolverSampler(diffusion, 10, order=order).steps(model, (64, 1), x_T=x_T))
        for order in (1, 2, 3)
    }
    torch.testing.assert_close(records[2][0].x_prev, records[1][0].x_prev, rtol=0, atol=1e-12)
    torch.testing.assert_close(records[3][0].x_prev, records[1][0].x_prev, rtol=0, atol=1e-12)
    torch.testing.assert_close(records[3][1].x_prev, records[2][1].x_prev, rtol=0, atol=1e-12)
    assert (records[3][2].x_prev - records[2][2].x_prev).abs().max() > 1e-6
    assert (records[2][1].x_prev - records[1][1].x_prev).abs().max() > 1e-6
    # the last step is x0_hat, the first-order step to alpha_bar = 1, for every order
    for order in (1, 2, 3):
        torch.testing.assert_close(records[order][-1].x_prev, records[order][-1].x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing", ["trailing", "logsnr"])
def test_stochastic_dpm_solver_order_1_is_ddpm_fixed_small(linear, spacing):
    """The SDE form's first-order step is DDPM's posterior step: the same samples from the same seeds."""
    diffusion = GaussianDiffusion(linear)
    model = OptimalDenoiser(MIXTURE, linear)
    outputs = [
        sampler.sample(model, (128, 1), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        for sampler in (
            DDPMSampler(diffusion, 25, spacing=spacing),
            DPMSolverSampler(diffusion, 25, order=1, stochastic=True, spacing=spacing),
        )
    ]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-10)


def test_stochastic_dpm_solver_2m_is_ddpm_plus_the_midpoint_correction(linear):
    sde = DPMSolverSampler(GaussianDiffusion(linear), 10, order=2, stochastic=True)
    ddpm = DDPMSampler(GaussianDiffusion(linear), 10)
    g = torch.Generator().manual_seed(8)
    x, m0, m1, z = (torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(4))
    index = 4
    ab = [sde.schedule.alphas_cumprod[i].item() for i in (index - 1, index, index + 1)]
    lam = [0.5 * math.log(a / (1 - a)) for a in ab]
    h, h0 = lam[0] - lam[1], lam[1] - lam[2]
    expected = ddpm.step(x, index, Prediction(x, m0), noise=z) + math.sqrt(ab[0]) * (
        1 - math.exp(-2 * h)
    ) * h / (2 * h0) * (m0 - m1)
    out = sde.step(x, index, Prediction(x, m0), noise=z, history=(Prediction(x, m1),))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="orders 1 and 2 only"):
        DPMSolverSampler(GaussianDiffusion(linear), 10, order=3, stochastic=True)


def test_dpm_solver_2m_step_is_algorithm_2_by_hand(linear):
    sampler = DPMSolverSampler(GaussianDiffusion(linear), 10, order=2, spacing="logsnr")
    g = torch.Generator().manual_seed(3)
    x, m0, m1 = (torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(3))
    index = 4
    ab = [sampler.schedule.alphas_cumprod[i].item() for i in (index - 1, index, index + 1)]
    lam = [0.5 * math.log(a / (1 - a)) for a in ab]  # lambda_t, lambda_s, lambda_{s'}
    h, h0 = lam[0] - lam[1], lam[1] - lam[2]
    alpha_t, sigma_t, sigma_s = math.sqrt(ab[0]), math.sqrt(1 - ab[0]), math.sqrt(1 - ab[1])
    D = (1 + h / (2 * h0)) * m0 - h / (2 * h0) * m1
    expected = sigma_t / sigma_s * x - alpha_t * math.expm1(-h) * D
    history = (Prediction(torch.zeros_like(m1), m1),)
    out = sampler.step(x, index, Prediction(torch.zeros_like(m0), m0), history=history)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_dpm_solver_3m_is_exact_for_a_quadratic_data_prediction(linear):
    """If x0_hat is a quadratic in lambda (here, independent of x), the 3M step integrates the ODE from s
    to t exactly: x_t = (sigma_t / sigma_s) x_s + sigma_t int e^lambda q(lambda) dlambda, by quadrature."""
    sampler = DPMSolverSampler(GaussianDiffusion(linear), 12, order=3, spacing="logsnr")
    index = 5
    ab = {i: sampler.schedule.alphas_cumprod[i].item() for i in (index - 1, index, index + 1, index + 2)}
    lam = {i: 0.5 * math.log(a / (1 - a)) for i, a in ab.items()}

    def q(lam_):
        return 0.7 - 0.4 * lam_ + 0.15 * lam_**2

    def at(i):
        return Prediction(torch.zeros(1, 1), torch.tensor([[q(lam[i])]], dtype=torch.float64))

    x_s = torch.tensor([[0.3]], dtype=torch.float64)
    out = sampler.step(x_s, index, at(index), history=(at(index + 2), at(index + 1)))
    integral, _ = quad(
        lambda lam_: math.exp(lam_) * q(lam_), lam[index], lam[index - 1], epsabs=0, epsrel=1e-13
    )
    sigma_t, sigma_s = math.sqrt(1 - ab[index - 1]), math.sqrt(1 - ab[index])
    expected = sigma_t / sigma_s * 0.3 + sigma_t * integral
    assert out.item() == pytest.approx(expected, rel=1e-11)
    # while order 2, whose data prediction is only linear, is not exact
    two = DPMSolverSampler(GaussianDiffusion(linear), 12, order=2, spacing="logsnr")
    assert two.step(x_s, index, at(index), history=(at(index + 1),)).item() != pytest.approx(
        expected, rel=1e-4
    )


def test_heun_predictor_is_the_ddim_step_and_the_last_step_is_euler(linear):
    diffusion = GaussianDiffusion(linear)
    base = OptimalDenoiser(MIXTURE, linear)
    model = Counting(base)
    heun = HeunSampler(diffusion, 6, spacing="linspace")
    x_T = torch.randn(16, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    records = list(heun.steps(model, (16, 1), x_T=x_T))
    ddim = DDIMSampler(diffusion, 6, spacing="linspace")
    # calls: (x_T at t_5), (Euler point at t_4), (corrected x at t_4), (Euler point at t_3), ...
    first = records[0]
    euler = ddim.step(first.x_t, 5, Prediction(first.eps, first.x0))
    assert model.calls[1][0] == heun.timesteps[1]
    torch.testing.assert_close(model.calls[1][1], euler, rtol=0, atol=1e-12)
    # the corrected point uses the mean of the two slopes (Karras et al. Algorithm 1, line 8)
    second = heun.predict(base, euler, 4)
    sig = [math.sqrt((1 - a) / a) for a in (linear.alphas_cumprod[t].item() for t in heun.timesteps[:2])]
    a0, a1 = (math.sqrt(linear.alphas_cumprod[t].item()) for t in heun.timesteps[:2])
    expected = a1 * (x_T / a0 + (sig[1] - sig[0]) * (first.eps + second.eps) / 2)
    torch.testing.assert_close(records[0].x_prev, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(records[-1].x_prev, records[-1].x0, rtol=0, atol=1e-12)
    assert len(model.calls) == heun.num_evaluations == 11


def test_heun_step_without_predict_is_refused(linear):
    heun = HeunSampler(GaussianDiffusion(linear), 4)
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="needs predict"):
        heun.step(x, 2, Prediction(x, x))


# --------------------------------------------------------------------------------------------------
# Order of convergence against an independent ODE solution.
# --------------------------------------------------------------------------------------------------

FINE = make_schedule("linear", 10_000)
POINTS = torch.linspace(-2.5, 2.5, 64, dtype=torch.float64)[:, None]


def posterior_mean(mixture, x, alpha_bar):
    """E[x0 | x_t = x] for the mixture at a continuous alpha_bar (Tweedie's formula)."""
    score = mixture.noised(alpha_bar).score(torch.from_numpy(x)[:, None]).numpy()[:, 0]
    return (x + (1 - alpha_bar) * score) / math.sqrt(alpha_bar)


@pytest.fixture(scope="module")
def ode_solution():
    """x at t = 0 of the probability-flow ODE started from POINTS at t = T-1, by DOP853."""
    ab = FINE.alphas_cumprod

    def rhs(u, x_tilde):  # u = log sigma~, x~ = x / sqrt(alpha_bar): dx~/du = x~ - E[x0 | x]
        alpha_bar = 1.0 / (1.0 + math.exp(2 * u))
        return x_tilde - posterior_mean(MIXTURE, math.sqrt(alpha_bar) * x_tilde, alpha_bar)

    u = [0.5 * math.log((1 - ab[t].item()) / ab[t].item()) for t in (-1, 0)]
    start = POINTS[:, 0].numpy() / math.sqrt(ab[-1].item())
    solution = solve_ivp(rhs, u, start, method="DOP853", rtol=1e-12, atol=1e-12)
    assert solution.success
    return solution.y[:, -1] * math.sqrt(ab[0].item())


def solver_error(sampler, model, reference) -> float:
    """Median over the points of |x at t = 0 - the ODE's| (the median: a few points start near the
    boundary between two modes, where the flow separates them and the error is large longer)."""
    records = list(sampler.steps(model, tuple(POINTS.shape), x_T=POINTS, dtype=torch.float64))
    assert records[-1].timestep == 0
    return float(np.median(np.abs(records[-1].x_t[:, 0].numpy() - reference)))


def measured_slopes(build, steps, reference) -> list[float]:
    model = OptimalDenoiser(MIXTURE, FINE)
    errors = [solver_error(build(K), model, reference) for K in steps]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    print(f"\nerrors {[f'{e:.2e}' for e in errors]} at K = {steps}, slopes {[f'{s:.2f}' for s in slopes]}")
    return slopes


# K chosen in the asymptotic regime of each solver on this problem, below where the integer timesteps
# of the fine schedule start to limit the steps (measured: ddim 1.04 1.01, dpm++2m 2.09 1.99,
# dpm++3m 3.31 3.20, heun 2.14 2.07).
ORDERS = {
    "ddim": (1, [40, 80, 160], (0.9, 1.15)),
    "dpm++2m": (2, [40, 80, 160], (1.85, 2.2)),
    "dpm++3m": (3, [20, 40, 80], (2.8, 3.4)),
    "heun": (2, [40, 80, 160], (1.85, 2.2)),
}


@pytest.mark.parametrize("name", list(ORDERS))
def test_order_of_convergence_against_the_exact_ode(ode_solution, name):
    order, steps, (low, high) = ORDERS[name]
    diffusion = GaussianDiffusion(FINE)
    slopes = measured_slopes(
        lambda K: make_sampler(name, diffusion, K, spacing="logsnr"), steps, ode_solution
    )
    assert all(low < s < high for s in slopes), (name, order, slopes)


class HalfThirdOrderTerm(DPMSolverSampler):
    """DPM-Solver++(3M) with diffusers' weight on the d012 term: a1 h0 + a2 instead of a1 h0 + 2 a2."""

    def _coefficient_tensors(self):
        c = super()._coefficient_tensors()
        a2 = (c["b3"] - c["a1"] * c["h0"]) / 2
        c["b3"] = c["a1"] * c["h0"] + a2
        return c


def test_third_order_with_diffusers_weight_converges_at_order_2_only(ode_solution):
    """Negative control: the convergence test tells the exact third-order weight from diffusers'."""
    diffusion = GaussianDiffusion(FINE)

    def build(K):
        return HalfThirdOrderTerm(diffusion, K, order=3, spacing="logsnr")

    slopes = measured_slopes(build, [40, 80, 160], ode_solution)
    assert all(s < 2.3 for s in slopes), slopes


# --------------------------------------------------------------------------------------------------
# The loop's contract: seeds, conditions, guidance, clipping, prediction types, autograd.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_per_sample_generators_make_samples_independent_of_batching(linear, name):
    sampler = make_sampler(name, GaussianDiffusion(linear), 8)
    model = OptimalDenoiser(MIXTURE, linear)

    def generators(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    whole = sampler.sample(model, (8, 1), generator=generators(range(8)))
    parts = torch.cat(
        [
            sampler.sample(model, (3, 1), generator=generators(range(3))),
            sampler.sample(model, (5, 1), generator=generators(range(3, 8))),
        ]
    )
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)
    again = sampler.sample(model, (8, 1), generator=generators(range(8)))
    assert torch.equal(again, whole) and whole.unique().numel() == 8
    x_T = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))
    one, other = (sampler.sample(model, (8, 1), x_T=x_T, generator=generators([s] * 8)) for s in (1, 2))
    assert torch.equal(one, other) != (name == "sde-dpm++2m")  # only the SDE uses the generator after x_T


@pytest.mark.parametrize("prediction", ["x0", "v"])
@pytest.mark.parametrize("name", ["dpm++3m", "heun"])
def test_x0_and_v_oracles_give_the_same_samples_as_eps(prediction, name):
    schedule = make_schedule("cosine", 1000)
    outputs = {}
    for pred in ("eps", prediction):
        sampler = make_sampler(name, GaussianDiffusion(schedule, pred), 10)
        model = OptimalDenoiser(MIXTURE, schedule, prediction=pred)
        outputs[pred] = sampler.sample(
            model, (128, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )
    torch.testing.assert_close(outputs[prediction], outputs["eps"], rtol=0, atol=1e-8)



@pytest.mark.parametrize("name", NEW)
def test_guided_sampling_of_component_k_lands_on_component_k(linear, name):
    """Classifier-free guidance at w = 1 with the exact per-component denoisers is the conditional
    model: 20 steps of every solver put > 95% of samples conditioned on k nearest component k."""
    model = Counting(ClassifierFreeGuidance(OracleWithNull(MIXTURE, linear), 1.0, -1))
    sampler = make_sampler(name, GaussianDiffusion(linear), 20, spacing="logsnr")
    for k in range(3):
        x = sampler.sample(
            model, (500, 1), cond=torch.full((500,), k), generator=torch.Generator().manual_seed(k)
        )
        assert (MIXTURE.responsibilities(x).argmax(-1) == k).double().mean() > 0.95
        assert abs(x.double().mean().item() - MIXTURE.means[k, 0].item()) < 0.2


@pytest.mark.parametrize("name", NEW)
def test_clip_x0_bounds_every_prediction_and_the_sample(linear, name):
    sampler = make_sampler(name, GaussianDiffusion(linear), 10, clip_x0=1.0)
    model = Counting(OptimalDenoiser(MIXTURE, linear))
    records = list(sampler.steps(model, (256, 1), generator=torch.Generator().manual_seed(0)))
    assert all(r.x0.abs().max() <= 1.0 for r in records)
    assert records[-1].x_prev.abs().max() <= 1.0 + 1e-6
    # the unclipped mixture puts samples at -3 and 4
    free = make_sampler(name, GaussianDiffusion(linear), 10).sample(
        OptimalDenoiser(MIXTURE, linear), (256, 1), generator=torch.Generator().manual_seed(0)
    )
    assert free.abs().max() > 2.5


def test_heun_second_evaluation_runs_with_autograd_for_classifier_guidance(linear):
    seen = []

    class NeedsGrad(torch.nn.Module):
        requires_grad_for_sampling = True

        def forward(self, x, t):
            seen.append(torch.is_inference_mode_enabled())
            return torch.zeros_like(x)

    HeunSampler(GaussianDiffusion(linear), 3).sample(NeedsGrad(), (2, 1))
    assert len(seen) == 5 and not any(seen)


# --------------------------------------------------------------------------------------------------
# The factory.
# --------------------------------------------------------------------------------------------------


def test_make_sampler_names_defaults_and_options(linear):
    diffusion = GaussianDiffusion(linear)
    for name, order in (("dpm++1m", 1), ("dpm++2m", 2), ("dpm++3m", 3), ("sde-dpm++2m", 2)):
        sampler = make_sampler(name, diffusion, 15, clip_x0=2.0, spacing="logsnr")
        assert isinstance(sampler, DPMSolverSampler) and sampler.order == order
        assert sampler.stochastic == name.startswith("sde")
        assert sampler.num_steps == 15 and sampler.clip_x0 == 2.0 and sampler.spacing == "logsnr"
    assert make_sampler("dpm++2m", diffusion).num_steps == DPMSolverSampler(diffusion).num_steps
    heun = make_sampler("heun", diffusion)
    assert isinstance(heun, HeunSampler) and heun.num_evaluations == 2 * heun.num_steps - 1
    assert (
        make_sampler("ddpm", diffusion).num_steps == 1000 and make_sampler("ddim", diffusion).num_steps == 50
    )
    assert sampler_options("ddpm") == ("variance", "clip_x0", "spacing")
    assert sampler_options("ddim") == ("eta", "clip_x0", "spacing")
    assert all(sampler_options(name) == ("clip_x0", "spacing") for name in NEW)


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "dpm++2m",
            {"variance": "fixed_small"},
            r"sampler 'dpm\+\+2m' takes no option 'variance'; its options are clip_x0, spacing",
        ),
        ("heun", {"eta": 0.0}, r"sampler 'heun' takes no option 'eta'"),
        ("dpm++3m", {"order": 2}, r"takes no option 'order'"),
        (
            "ddim",
            {"variance": "fixed_large"},
            r"sampler 'ddim' takes no option 'variance'; its options are eta",
        ),
        ("ddpm", {"eta": 1.0}, r"sampler 'ddpm' takes no option 'eta'"),
        (
            "euler",
            {},
            r"unknown sampler 'euler'; choose one of ddpm, ddim, dpm\+\+1m, dpm\+\+2m, dpm\+\+3m, "
            r"sde-dpm\+\+2m, heun",
        ),
    ],
)
def test_make_sampler_refuses_options_a_sampler_does_not_take(linear, name, options, message):
    with pytest.raises(ValueError, match=message):
        make_sampler(name, GaussianDiffusion(linear), 10, **options)


def test_dpm_solver_order_is_checked(linear):
    with pytest.raises(ValueError, match="order must be 1, 2 or 3, got 4"):
        DPMSolverSampler(GaussianDiffusion(linear), 10, order=4)
