"""Parity with diffusers' DDPM, DDIM, DPM-Solver++ and Heun schedulers (a test-only reference implementation).

diffusers keeps its schedule in float32, and its step computes 1 - alpha_bar_t / alpha_bar_{t-1} from
the float32 cumulative products, which loses up to ~1e-3 at small t. To compare the *formulas* to 1e-6
we therefore run diffusers' own step code on a float64 copy of the schedule (``float64_copy``: the same
derivation as its ``__init__``, alphas = 1 - betas, alphas_cumprod = cumprod, from our float64 betas),
after checking separately that its float32 schedule agrees with ours to 1e-6. One test also compares
against stock float32 diffusers with a float32-sized tolerance.

Run with ``pytest -s`` to see every measured error.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    HeunDiscreteScheduler,
)

from ddpmlab.data.toy import GaussianMixture, OptimalDenoiser  # noqa: E402
from ddpmlab.diffusion import GaussianDiffusion, Prediction  # noqa: E402
from ddpmlab.sampling import DDIMSampler, DDPMSampler  # noqa: E402
from ddpmlab.schedules import make_schedule  # noqa: E402
from ddpmlab.solvers import DPMSolverSampler, HeunSampler  # noqa: E402

T = 1000
TOL = 1e-6
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
STEP_TIMESTEPS = [0, 1, 2, 10, 100, 500, 900, 998, 999]
MIXTURE = GaussianMixture([-3.0, 0.0, 4.0], [0.5, 1.0, 0.3], [0.3, 0.5, 0.2])


def report(label: str, error: float, kind: str = "abs") -> float:
    print(f"\nparity {label}: max {kind} error {error:.3e}")
    return error


def float64_copy(scheduler, schedule):
    """Put a float64 schedule into a diffusers scheduler, derived the way its __init__ derives it."""
    scheduler.betas = schedule.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        set_alpha_to_one = scheduler.config.set_alpha_to_one
        scheduler.final_alpha_cumprod = (
            torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else scheduler.alphas_cumprod[0]
        )
    return scheduler


def random_state(shape=(32, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(
        shape, generator=g, dtype=torch.float64
    )


# --------------------------------------------------------------------------------------------------
# Schedules.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
def test_alphas_cumprod_parity(name, scheduler_class):
    ours = make_schedule(name, T)
    theirs = scheduler_class(num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULE[name])
    error = (ours.alphas_cumprod - theirs.alphas_cumprod.double()).abs().max().item()
    report(f"alphas_cumprod {name} ({scheduler_class.__name__}, float32 reference)", error)
    assert error <= TOL
    beta_error = ((ours.betas - theirs.betas.double()).abs() / ours.betas).max().item()
    report(f"betas {name} (float32 reference)", beta_error, kind="relative")
    assert beta_error <= TOL  # float32 rounding of the same betas


# --------------------------------------------------------------------------------------------------
# DDPM.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_ddpm_single_step_parity(name, variance, prediction):
    schedule = make_schedule(name, T)
    diffusion = GaussianDiffusion(schedule, prediction)
    sampler = DDPMSampler(diffusion, variance=variance)
    scheduler = DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule=DIFFUSERS_SCHEDULE[name],
        variance_type=variance,
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
    )
    float64_copy(scheduler, schedule)
    errors, x0_errors, noise_errors = [], [], []
    for t in STEP_TIMESTEPS:
        x_t, output = random_state(seed=t)
        # diffusers draws its noise with randn_tensor from the generator it is given ...
        theirs = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(123))
        index = torch.full((len(x_t),), t)
        prediction_ = diffusion.prediction_to_eps_x0(output, x_t, index)
        # ... so the same seeded generator must give the same step
        ours = sampler.step(x_t, t, prediction_, generator=torch.Generator().manual_seed(123))
        errors.append((ours - theirs.prev_sample).abs().max().item())
        x0_errors.append((prediction_.x0 - theirs.pred_original_sample).abs().max().item())
        # and so must the noise passed explicitly
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
        noise_errors.append(
            (sampler.step(x_t, t, prediction_, noise=noise) - theirs.prev_sample).abs().max().item()
        )
    report(f"DDPM step {name} {variance} {prediction} (t in {STEP_TIMESTEPS})", max(errors))
    report(f"DDPM pred x0 {name} {variance} {prediction}", max(x0_errors))
    report(f"DDPM step with explicit noise {name} {variance} {prediction}", max(noise_errors))
    assert max(errors) <= TOL and max(x0_errors) <= TOL and max(noise_errors) <= TOL


def test_ddpm_step_parity_with_stock_float32_diffusers():
    """Against unmodified diffusers (float32 schedule): agreement to float32-level accuracy only.

    The loss is largest at t = 1, 2, where diffusers' 1 - ab_t / ab_{t-1} cancels in float32."""
    schedule = make_schedule("linear", T)
    diffusion = GaussianDiffusion(schedule)
    sampler = DDPMSampler(diffusion)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=False)
    worst_small_t, worst_large_t = 0.0, 0.0
    for t in STEP_TIMESTEPS:
        x_t, output = random_state(seed=t)
        theirs = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
        prediction = diffusion.prediction_to_eps_x0(output, x_t, torch.full((len(x_t),), t))
        ours = sampler.step(x_t, t, prediction, generator=torch.Generator().manual_seed(7))
        error = (ours - theirs).abs().max().item()
        if t <= 10:
            worst_small_t = max(worst_small_t, error)
        else:
            worst_large_t = max(worst_large_t, error)
    report("DDPM step vs stock float32 diffusers, t <= 10", worst_small_t)
    report("DDPM step vs stock float32 diffusers, t > 10", worst_large_t)
    assert worst_small_t <= 2e-3
    assert worst_large_t <= 2e-5


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_full_loop_parity(variance):
    """1000 ancestral steps with the exact mixture denoiser and one shared generator."""
    schedule = make_schedule("linear", T)
    model = OptimalDenoiser(MIXTURE, schedule)
    ours = DDPMSampler(GaussianDiffusion(schedule), variance=variance).sample(
        model, (64, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    scheduler = float64_copy(
        DDPMScheduler(num_train_timesteps=T, variance_type=variance, clip_sample=False), schedule
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, generator=generator, dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(model(x, torch.full((64,), t)), t, x, generator=generator).prev_sample
    error = report(f"DDPM-1000 full loop {variance}", (ours - x).abs().max().item())
    assert error <= TOL


def test_ddpm_respaced_full_loop_parity():
    """100 trailing steps: diffusers' DDPMScheduler.set_timesteps respaces the same way (fixed_small)."""
    schedule = make_schedule("cosine", T)
    model = OptimalDenoiser(MIXTURE, schedule)
    sampler = DDPMSampler(GaussianDiffusion(schedule), 100)
    scheduler = DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(100)
    assert scheduler.timesteps.tolist() == sampler.timesteps
    float64_copy(scheduler, schedule)
    ours = sampler.sample(model, (64, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, generator=generator, dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(model(x, torch.full((64,), t)), t, x, generator=generator).prev_sample
    # diffusers adds sqrt(1e-20) * noise at the last step (variance clamped at 1e-20 because t = 9 > 0)
    error = report("DDPM-100 (trailing) full loop fixed_small", (ours - x).abs().max().item())
    assert error <= TOL


# --------------------------------------------------------------------------------------------------
# DDIM.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("num_steps", [10, 20, 25, 30, 37, 50, 100, 250])
def test_ddim_visits_the_same_timesteps(spacing, num_steps):
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    scheduler.set_timesteps(num_steps)
    sampler = DDIMSampler(GaussianDiffusion(make_schedule("linear", T)), num_steps, spacing=spacing)
    assert scheduler.timesteps.tolist() == sampler.timesteps


def test_ddim_default_is_diffusers_trailing_50():
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    scheduler.set_timesteps(50)
    sampler = DDIMSampler(GaussianDiffusion(make_schedule("linear", T)))  # defaults: 50 steps, trailing
    assert sampler.num_steps == 50
    assert scheduler.timesteps.tolist() == sampler.timesteps == list(range(999, 0, -20))


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_ddim_single_step_parity(name, eta, prediction):
    schedule = make_schedule(name, T)
    diffusion = GaussianDiffusion(schedule, prediction)
    sampler = DDIMSampler(diffusion, 50, eta=eta)
    scheduler = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule=DIFFUSERS_SCHEDULE[name],
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        timestep_spacing="trailing",
        set_alpha_to_one=True,
    )
    scheduler.set_timesteps(50)
    float64_copy(scheduler, schedule)
    kept = sampler.schedule.timesteps.tolist()
    errors, generator_errors = [], []
    for t in [999, 979, 519, 39, 19]:  # 19 is the last step, where diffusers uses final_alpha_cumprod
        index = kept.index(t)
        x_t, output = random_state(seed=t)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        theirs = scheduler.step(output, t, x_t, eta=eta, variance_noise=noise).prev_sample
        pred = sampler.diffusion.prediction_to_eps_x0(output, x_t, torch.full((len(x_t),), index))
        errors.append((sampler.step(x_t, index, pred, noise=noise) - theirs).abs().max().item())
        if eta > 0:
            theirs_g = scheduler.step(
                output, t, x_t, eta=eta, generator=torch.Generator().manual_seed(5)
            ).prev_sample
            ours_g = sampler.step(x_t, index, pred, generator=torch.Generator().manual_seed(5))
            generator_errors.append((ours_g - theirs_g).abs().max().item())
    report(f"DDIM-50 step {name} eta={eta} {prediction}", max(errors))
    assert max(errors) <= TOL
    if generator_errors:
        report(f"DDIM-50 step with generator {name} eta={eta} {prediction}", max(generator_errors))
        assert max(generator_errors) <= TOL


def test_ddim_last_step_matches_set_alpha_to_one_true_only():
    """Our last step goes to alpha_bar = 1 (x_0 = predicted x0), as diffusers with set_alpha_to_one=True."""
    schedule = make_schedule("linear", T)
    diffusion = GaussianDiffusion(schedule)
    sampler = DDIMSampler(diffusion, 50)
    x_t, output = random_state(seed=3)
    pred = diffusion.prediction_to_eps_x0(output, x_t, torch.full((len(x_t),), 19))
    ours = sampler.step(x_t, 0, pred)
    torch.testing.assert_close(ours, pred.x0, rtol=0, atol=1e-12)
    results = {}
    for set_alpha_to_one in (True, False):
        scheduler = DDIMScheduler(
            num_train_timesteps=T,
            clip_sample=False,
            timestep_spacing="trailing",
            set_alpha_to_one=set_alpha_to_one,
        )
        scheduler.set_timesteps(50)
        float64_copy(scheduler, schedule)
        results[set_alpha_to_one] = (ours - scheduler.step(output, 19, x_t).prev_sample).abs().max().item()
    report("DDIM last step vs set_alpha_to_one=True", results[True])
    report("DDIM last step vs set_alpha_to_one=False (expected to differ)", results[False])
    assert results[True] <= TOL
    assert results[False] > 1e-3


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_full_loop_parity(eta, prediction):
    """50 trailing steps with the exact mixture denoiser, one shared generator for x_T and the noise."""
    schedule = make_schedule("cosine", T)
    model = OptimalDenoiser(MIXTURE, schedule, prediction=prediction)
    ours = DDIMSampler(GaussianDiffusion(schedule, prediction), 50, eta=eta).sample(
        model, (64, 1), generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(50)
    float64_copy(scheduler, schedule)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(64, 1, generator=generator, dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        out = model(x, torch.full((64,), t))
        x = scheduler.step(out, t, x, eta=eta, generator=generator if eta > 0 else None).prev_sample
    error = report(f"DDIM-50 full loop eta={eta} {prediction}", (ours - x).abs().max().item())
    assert error <= TOL


# --------------------------------------------------------------------------------------------------
# DPM-Solver++ (DPMSolverMultistepScheduler) and Heun (HeunDiscreteScheduler).
#
# Their schedules are float64 copies of ours (float64_copy, as above), but set_timesteps stores the
# sigmas in float32 and DPM-Solver++ casts x to float32 inside its step, so the tolerance is a float32
# one (our loops run in float64). Every comparison is against stock diffusers except the third-order
# one, where diffusers' d012 term carries half the weight of the exact integral (see DPMSolverSampler):
# there we compare with diffusers plus the missing half, recomputed in the test from diffusers' own step
# quantities.
# --------------------------------------------------------------------------------------------------

DPM_TOL = 5e-6  # relative: float32 sigmas and steps (measured up to 2.6e-6)


class TinyNet(torch.nn.Module):
    """A fixed random function of (x, t): a seeded two-layer tanh network in float64, x [B, 3]."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w_x = torch.randn(3, 16, generator=g, dtype=torch.float64) / 3**0.5
        self.w_t = torch.randn(4, 16, generator=g, dtype=torch.float64)
        self.w_out = torch.randn(16, 3, generator=g, dtype=torch.float64) / 4
        self.frequencies = torch.tensor([1.0, 3.0, 7.0, 13.0], dtype=torch.float64)

    def forward(self, x, t):
        phase = torch.sin(t.to(torch.float64)[:, None] / 1000 * self.frequencies)
        return torch.tanh(x.double() @ self.w_x + phase @ self.w_t) @ self.w_out


class ExactThirdOrder(DPMSolverMultistepScheduler):
    """diffusers' third-order multistep step with the d012 term at the weight of the exact integral: its
    own result plus alpha_t (h^2/2 - h + 1 - e^-h) / h^2 * D2 once more (D2 = h^2 d012 in its notation)."""

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, **kwargs):
        x_t = super().multistep_dpm_solver_third_order_update(
            model_output_list, *args, sample=sample, **kwargs
        )
        sigmas = [self.sigmas[self.step_index + k] for k in (1, 0, -1, -2)]
        alphas = [1 / (s**2 + 1) ** 0.5 for s in sigmas]
        lam = [torch.log(a) - torch.log(s * a) for a, s in zip(alphas, sigmas)]
        h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d012 = ((m0 - m1) / h0 - (m1 - m2) / h1) / (h0 + h1)
        return x_t + alphas[0] * (h**2 / 2 - h - torch.expm1(-h)) * d012


def dpm_scheduler(order, name="linear", exact_third_order=False, **config):
    cls = ExactThirdOrder if exact_third_order else DPMSolverMultistepScheduler
    options = {
        "num_train_timesteps": T,
        "beta_schedule": DIFFUSERS_SCHEDULE[name],
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "algorithm_type": "dpmsolver++",
        "solver_order": order,
        "solver_type": "midpoint",
        "timestep_spacing": "trailing",
        "final_sigmas_type": "zero",
        "lower_order_final": False,
    }
    options.update(config)
    return float64_copy(cls(**options), make_schedule(name, T))


def diffusers_loop(scheduler, model, x, timesteps=None, num_steps=None):
    scheduler.set_timesteps(num_steps, timesteps=timesteps)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(model(x, torch.full((len(x),), t)), t, x).prev_sample
    return x


@pytest.mark.parametrize("num_steps", [7, 10, 20, 25, 50])
def test_dpm_solver_visits_diffusers_trailing_timesteps(num_steps):
    scheduler = dpm_scheduler(2)
    scheduler.set_timesteps(num_steps)
    sampler = DPMSolverSampler(GaussianDiffusion(make_schedule("linear", T)), num_steps)
    assert scheduler.timesteps.tolist() == sampler.timesteps


def relative_error(ours, theirs):
    """max |ours - theirs| / max |theirs|: a random network's eps makes x0 = (x - sigma eps) / alpha huge
    at the noisiest steps (alpha = 0.006 for linear, 4e-5 for cosine), and the samples with it."""
    return (ours - theirs).abs().max().item() / theirs.abs().max().item()


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [10, 20])
def test_dpm_solver_full_loop_parity_with_a_random_network(order, name, num_steps):
    schedule = make_schedule(name, T)
    model = TinyNet()
    x_T = torch.randn(32, 3, generator=torch.Generator().manual_seed(order), dtype=torch.float64)
    sampler = DPMSolverSampler(GaussianDiffusion(schedule), num_steps, order=order)
    ours = sampler.sample(model, (32, 3), x_T=x_T)
    theirs = diffusers_loop(
        dpm_scheduler(order, name, exact_third_order=True), model, x_T, num_steps=num_steps
    )
    label = f"DPM-Solver++({order}M) {name} {num_steps} steps, tiny network"
    error = report(label, relative_error(ours, theirs), kind="relative")
    assert error <= DPM_TOL
    if order == 3:  # stock diffusers' third order differs by its halved d012 term
        stock = diffusers_loop(dpm_scheduler(3, name), model, x_T, num_steps=num_steps)
        difference = report(f"{label} vs stock diffusers", relative_error(ours, stock), kind="relative")
        if name == "linear":  # (with cosine, float32 rounding of the huge first x0 hides the difference)
            assert difference > 20 * DPM_TOL


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_dpm_solver_full_loop_parity_with_the_mixture_oracle(order, prediction):
    schedule = make_schedule("linear", T)
    model = OptimalDenoiser(MIXTURE, schedule, prediction=prediction)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = DPMSolverSampler(GaussianDiffusion(schedule, prediction), 25, order=order).sample(
        model, (64, 1), x_T=x_T
    )
    scheduler = dpm_scheduler(order, exact_third_order=True, prediction_type=DIFFUSERS_PREDICTION[prediction])
    theirs = diffusers_loop(scheduler, model, x_T, num_steps=25)
    error = report(
        f"DPM-Solver++({order}M) 25 steps, mixture oracle, {prediction}",
        relative_error(ours, theirs),
        "relative",
    )
    assert error <= DPM_TOL


@pytest.mark.parametrize("spacing", ["linspace", "logsnr"])
def test_dpm_solver_parity_on_our_spacings_given_as_timesteps(spacing):
    """diffusers' own "linspace" drops t = 0 (K + 1 points, the last removed); given our timesteps
    explicitly it takes the same steps."""
    schedule = make_schedule("linear", T)
    sampler = DPMSolverSampler(GaussianDiffusion(schedule), 15, order=2, spacing=spacing)
    model = TinyNet(1)
    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = sampler.sample(model, (16, 3), x_T=x_T)
    theirs = diffusers_loop(dpm_scheduler(2), model, x_T, timesteps=sampler.timesteps)
    error = report(
        f"DPM-Solver++(2M) 15 steps, {spacing} timesteps", relative_error(ours, theirs), "relative"
    )
    assert error <= DPM_TOL
    stock_linspace = dpm_scheduler(2, timestep_spacing="linspace")
    stock_linspace.set_timesteps(15)
    assert stock_linspace.timesteps.tolist()[-1] > 0 and (spacing != "linspace" or sampler.timesteps[-1] == 0)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("position", [0, 1, 2, 9, 18, 19])
def test_dpm_solver_single_step_parity(order, position):
    """One step at loop position ``position`` of 20, from the same x and the same data predictions
    (diffusers with prediction_type="sample" takes the model output as x0)."""
    schedule = make_schedule("cosine", T)
    sampler = DPMSolverSampler(GaussianDiffusion(schedule), 20, order=order)
    g = torch.Generator().manual_seed(10 * order + position)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x0s = [torch.randn(8, 3, generator=g, dtype=torch.float64) for _ in range(position + 1)]  # oldest first
    index = 19 - position
    available = min(order - 1, position)
    history = tuple(Prediction(torch.zeros_like(m), m) for m in x0s[len(x0s) - 1 - available : -1])
    ours = sampler.step(x, index, Prediction(torch.zeros_like(x), x0s[-1]), history=history)
    scheduler = dpm_scheduler(order, "cosine", exact_third_order=True, prediction_type="sample")
    scheduler.set_timesteps(20)
    scheduler._step_index = position
    scheduler.lower_order_nums = available
    # diffusers shifts its list left and appends the new output: [..., m2, m1] becomes [..., m1, m0]
    scheduler.model_outputs = [None] * (order - available) + [p.x0.clone() for p in history]
    t = scheduler.timesteps[position]
    theirs = scheduler.step(x0s[-1], t, x).prev_sample
    error = report(
        f"DPM-Solver++({order}M) single step at position {position}", relative_error(ours, theirs), "relative"
    )
    assert error <= DPM_TOL


def test_dpm_solver_lower_order_final_is_diffusers_default_below_15_steps():
    """The one option where we differ by design: below 15 steps diffusers' default
    (``lower_order_final=True``) takes the second-to-last step at order 2 at most; we keep order 3 up to
    the last step (which is of order 1 for both, being the step to sigma = 0)."""
    schedule = make_schedule("linear", T)
    model = TinyNet(2)
    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = DPMSolverSampler(GaussianDiffusion(schedule), 10, order=3).sample(model, (16, 3), x_T=x_T)
    for lower_order_final in (False, True):
        scheduler = dpm_scheduler(3, exact_third_order=True, lower_order_final=lower_order_final)
        error = relative_error(ours, diffusers_loop(scheduler, model, x_T, num_steps=10))
        report(
            f"DPM-Solver++(3M) 10 steps vs diffusers lower_order_final={lower_order_final}", error, "relative"
        )
        assert (error <= DPM_TOL) == (not lower_order_final)


@pytest.mark.parametrize("spacing, num_steps", [("trailing", 10), ("trailing", 25), ("linspace", 10)])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_heun_full_loop_parity(spacing, num_steps, prediction):
    """diffusers' HeunDiscreteScheduler works on x~ = x / sqrt(alpha_bar) (scale_model_input gives the
    model x~ / sqrt(sigma~^2 + 1) = x): its 2K - 1 model calls and its x~ at sigma = 0 are ours."""
    schedule = make_schedule("linear", T)
    diffusion = GaussianDiffusion(schedule, prediction)
    network = TinyNet(4)
    model = network if prediction == "eps" else lambda x, t: diffusion.eps_to_prediction(network(x, t), x, t)
    sampler = HeunSampler(diffusion, num_steps, spacing=spacing)
    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ours = sampler.sample(model, (16, 3), x_T=x_T)
    scheduler = HeunDiscreteScheduler(  # its defaults are Stable Diffusion's betas, not Ho et al.'s
        num_train_timesteps=T,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        timestep_spacing=spacing,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
    )
    float64_copy(scheduler, schedule)
    scheduler.set_timesteps(num_steps)
    # the same start: x~_T = x_T / sqrt(alpha_bar_999) = x_T sqrt(sigma~^2 + 1). (diffusers' own
    # init_noise_sigma is sigma~ for trailing and linspace spacing, 2e-5 smaller here: it starts from
    # sqrt(1 - alpha_bar) x_T, as if x_T carried no signal variance.)
    x = x_T * (scheduler.sigmas[0].double() ** 2 + 1).sqrt()
    calls = 0
    for t in scheduler.timesteps.tolist():
        assert t == int(t)
        calls += 1
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(model_input, torch.full((len(x),), int(t))), t, x).prev_sample
    assert calls == sampler.num_evaluations == 2 * num_steps - 1
    error = report(f"Heun {num_steps} steps {spacing} {prediction}", relative_error(ours, x), "relative")
    assert error <= DPM_TOL


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("num_steps", [10, 25])
def test_sde_dpm_solver_full_loop_parity(order, num_steps):
    """The stochastic form against diffusers' ``sde-dpmsolver++`` given the same noise at every step (our
    loop draws x_T and then one noise per step but the last from one generator; diffusers takes them as
    ``variance_noise``)."""
    schedule = make_schedule("linear", T)
    model = OptimalDenoiser(MIXTURE, schedule)
    sampler = DPMSolverSampler(GaussianDiffusion(schedule), num_steps, order=order, stochastic=True)
    ours = sampler.sample(model, (64, 1), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(64, 1, generator=generator, dtype=torch.float64)
    scheduler = dpm_scheduler(order, algorithm_type="sde-dpmsolver++")
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.tolist()
    for position, t in enumerate(timesteps):
        last = position == len(timesteps) - 1
        noise = (
            torch.zeros_like(x) if last else torch.randn(x.shape, generator=generator, dtype=torch.float64)
        )
        x = scheduler.step(model(x, torch.full((64,), t)), t, x, variance_noise=noise).prev_sample
    label = f"SDE-DPM-Solver++({order}M) {num_steps} steps, mixture oracle, the same noise"
    assert report(label, relative_error(ours, x), "relative") <= DPM_TOL
