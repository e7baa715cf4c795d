"""Parity with diffusers' DDPMScheduler and DDIMScheduler (a test-only reference implementation).

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
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from ddpmlab.data.toy import GaussianMixture, OptimalDenoiser  # noqa: E402
from ddpmlab.diffusion import GaussianDiffusion  # noqa: E402
from ddpmlab.sampling import DDIMSampler, DDPMSampler  # noqa: E402
from ddpmlab.schedules import make_schedule  # noqa: E402

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
