"""GaussianDiffusion: forward process moments, posterior, eps/x0/v conversions, training loss."""

from __future__ import annotations

import math

import pytest
import torch

from ddpmlab.diffusion import PREDICTION_TYPES, GaussianDiffusion, call_model, randn
from ddpmlab.schedules import make_schedule, respace

T = 1000


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", T)


@pytest.fixture(scope="module")
def cosine():
    return make_schedule("cosine", T)


def alpha_bar(schedule, t):
    return schedule.alphas_cumprod[t].item()


# --------------------------------------------------------------------------------------------------
# Forward process.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 10, 250, 600, 999])
def test_q_sample_moments(name, t):
    """Mean sqrt(ab) x0 and variance 1 - ab, to within 5 standard errors of the sample estimates."""
    schedule = make_schedule(name, T)
    diffusion = GaussianDiffusion(schedule)
    n = 200_000
    x0 = torch.full((n, 1), 1.7, dtype=torch.float64)
    torch.manual_seed(1234 + t)  # q_sample draws its own noise when none is given
    x_t = diffusion.q_sample(x0, torch.full((n,), t))
    ab = alpha_bar(schedule, t)
    mean, var = math.sqrt(ab) * 1.7, 1 - ab
    # standard errors of the sample mean and of the sample variance of a normal sample
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2 / (n - 1))
    assert abs(x_t.mean().item() - mean) < 5 * se_mean
    assert abs(x_t.var().item() - var) < 5 * se_var


def test_q_sample_is_the_closed_form_with_given_noise(cosine):
    diffusion = GaussianDiffusion(cosine)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 100, 500, 700, 998, 999])
    ab = cosine.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected, rtol=0, atol=1e-14)
    mean, variance = diffusion.q_mean_variance(x0, t)
    torch.testing.assert_close(mean, ab.sqrt() * x0, rtol=0, atol=1e-15)
    assert variance.shape == (8, 1, 1, 1)
    torch.testing.assert_close(variance, 1 - ab, rtol=0, atol=1e-15)


def test_q_sample_keeps_dtype(linear):
    diffusion = GaussianDiffusion(linear)
    x0 = torch.randn(4, 2)
    out = diffusion.q_sample(x0, torch.tensor([0, 1, 2, 3]), torch.randn(4, 2))
    assert out.dtype == torch.float32 and out.shape == (4, 2)


# --------------------------------------------------------------------------------------------------
# Posterior.
# --------------------------------------------------------------------------------------------------


def log_normal(x, mean, var):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


def posterior_by_product_of_gaussians(schedule, t, x0, x_t):
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), by completing the square in canonical
    (precision) form, independently of the library's coef1/coef2 formulas."""
    beta = schedule.betas[t].item()
    ab_prev = alpha_bar(schedule, t - 1)
    # q(x_t | y) = N(sqrt(1-beta) y, beta): as a function of y, precision (1-beta)/beta and
    # shift sqrt(1-beta) x_t / beta
    # q(y | x0) = N(sqrt(ab_prev) x0, 1 - ab_prev)
    precision = (1 - beta) / beta + 1 / (1 - ab_prev)
    shift = math.sqrt(1 - beta) * x_t / beta + math.sqrt(ab_prev) * x0 / (1 - ab_prev)
    return shift / precision, 1 / precision


def posterior_on_grid(schedule, t, x0, x_t, center, half_width, points=400_001):
    """The same posterior, normalised numerically on a fine grid (trapezoid rule)."""
    beta = schedule.betas[t].item()
    ab_prev = alpha_bar(schedule, t - 1)
    y = torch.linspace(center - half_width, center + half_width, points, dtype=torch.float64)
    log_density = log_normal(x_t, math.sqrt(1 - beta) * y, beta) + log_normal(
        y, math.sqrt(ab_prev) * x0, 1 - ab_prev
    )
    density = (log_density - log_density.max()).exp()
    mass = torch.trapezoid(density, y)
    mean = torch.trapezoid(y * density, y) / mass
    var = torch.trapezoid((y - mean) ** 2 * density, y) / mass
    return mean.item(), var.item()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 2, 50, 500, 999])
@pytest.mark.parametrize("x0, x_t", [(0.7, -0.4), (-2.0, 1.5), (3.0, 0.0)])
def test_q_posterior_against_product_of_gaussians(name, t, x0, x_t):
    schedule = make_schedule(name, T)
    diffusion = GaussianDiffusion(schedule)
    mean, var, log_var = diffusion.q_posterior(
        torch.tensor([[x0]], dtype=torch.float64),
        torch.tensor([[x_t]], dtype=torch.float64),
        torch.tensor([t]),
    )
    ref_mean, ref_var = posterior_by_product_of_gaussians(schedule, t, x0, x_t)
    assert mean.item() == pytest.approx(ref_mean, rel=1e-10, abs=1e-12)
    assert var.item() == pytest.approx(ref_var, rel=1e-10)
    assert log_var.item() == pytest.approx(math.log(ref_var), rel=1e-10, abs=1e-12)
    # and numerically, on a grid of +-12 posterior standard deviations
    grid_mean, grid_var = posterior_on_grid(schedule, t, x0, x_t, ref_mean, 12 * math.sqrt(ref_var))
    sd = math.sqrt(ref_var)
    assert abs(mean.item() - grid_mean) < 1e-6 * sd
    assert var.item() == pytest.approx(grid_var, rel=1e-6)


def test_q_posterior_at_t0_is_degenerate_at_x0(linear):
    diffusion = GaussianDiffusion(linear)
    x0 = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    x_t = torch.tensor([[2.0, 5.0]], dtype=torch.float64)
    mean, var, log_var = diffusion.q_posterior(x0, x_t, torch.tensor([0]))
    # coef1_0 = beta_0 / (1 - alpha_bar_0) = 1 up to the rounding of 1 - (1 - beta_0)
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-12)
    assert var.item() == 0.0
    assert log_var.item() == pytest.approx(math.log(linear.posterior_variance[1].item()))


def test_q_posterior_shapes_broadcast_over_image_batches(cosine):
    diffusion = GaussianDiffusion(cosine)
    x0 = torch.randn(5, 3, 8, 8)
    x_t = torch.randn(5, 3, 8, 8)
    mean, var, log_var = diffusion.q_posterior(x0, x_t, torch.tensor([1, 10, 100, 500, 999]))
    assert mean.shape == (5, 3, 8, 8) and var.shape == (5, 1, 1, 1) and log_var.shape == (5, 1, 1, 1)
    assert mean.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# eps / x0 / v conversions.
# --------------------------------------------------------------------------------------------------


def random_state(schedule, shape=(64, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, schedule.num_timesteps, (shape[0],), generator=g)
    t[:4] = torch.tensor([0, 1, schedule.num_timesteps - 2, schedule.num_timesteps - 1])
    return x0, eps, t


def v_by_hand(schedule, x0, eps, t):
    ab = schedule.alphas_cumprod[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_round_trip_target_to_eps_x0(name, prediction):
    schedule = make_schedule(name, T)
    diffusion = GaussianDiffusion(schedule, prediction)
    x0, eps, t = random_state(schedule)
    x_t = diffusion.q_sample(x0, t, eps)
    target = {"eps": eps, "x0": x0, "v": v_by_hand(schedule, x0, eps, t)}[prediction]
    torch.testing.assert_close(diffusion.training_target(x0, eps, t), target, rtol=0, atol=1e-12)
    recovered = diffusion.prediction_to_eps_x0(target, x_t, t)
    torch.testing.assert_close(recovered.eps, eps, rtol=0, atol=1e-10)
    torch.testing.assert_close(recovered.x0, x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(diffusion.eps_to_prediction(eps, x_t, t), target, rtol=0, atol=1e-10)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
@pytest.mark.parametrize("shape", [(16, 1), (16, 2), (16, 3, 8, 8)])
def test_eps_to_prediction_inverts_prediction_to_eps_x0(cosine, prediction, shape):
    diffusion = GaussianDiffusion(cosine, prediction)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(shape, generator=g, dtype=torch.float64)
    output = torch.randn(shape, generator=g, dtype=torch.float64)  # any model output, not a consistent one
    t = torch.randint(0, T, (shape[0],), generator=g)
    eps, x0 = diffusion.prediction_to_eps_x0(output, x_t, t)
    assert eps.shape == x0.shape == shape
    # (eps, x0) always describe the same x_t
    ab = cosine.alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
    torch.testing.assert_close(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x_t, rtol=0, atol=1e-10)
    torch.testing.assert_close(diffusion.eps_to_prediction(eps, x_t, t), output, rtol=0, atol=1e-10)


def test_pairwise_conversions(linear):
    diffusion = GaussianDiffusion(linear)
    x0, eps, t = random_state(linear, (32, 2, 3))
    x_t = diffusion.q_sample(x0, t, eps)
    v = diffusion.v_from_x0_eps(x0, eps, t)
    torch.testing.assert_close(v, v_by_hand(linear, x0, eps, t), rtol=0, atol=1e-14)
    torch.testing.assert_close(diffusion.x0_from_eps(x_t, t, eps), x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(diffusion.eps_from_x0(x_t, t, x0), eps, rtol=0, atol=1e-10)
    torch.testing.assert_close(diffusion.x0_from_v(x_t, t, v), x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(diffusion.eps_from_v(x_t, t, v), eps, rtol=0, atol=1e-10)


def test_coefficient_broadcasts_and_casts(linear):
    diffusion = GaussianDiffusion(linear)
    like = torch.zeros(3, 2, 5, 5, dtype=torch.float32)
    c = diffusion.coefficient("alphas_cumprod", torch.tensor([0, 5, 999]), like)
    assert c.shape == (3, 1, 1, 1) and c.dtype == torch.float32
    assert c[1].item() == pytest.approx(linear.alphas_cumprod[5].item(), rel=1e-7)
    assert diffusion.coefficient("betas", torch.tensor(7), like).ndim == 0


def test_predict_calls_model_once_with_original_timesteps_on_respaced_schedule(cosine):
    respaced = respace(cosine, 10)
    diffusion = GaussianDiffusion(respaced, "v")
    calls = []

    def model(x_t, t):
        calls.append(t.clone())
        return torch.zeros_like(x_t)

    x_t = torch.randn(4, 2, dtype=torch.float64)
    eps, x0 = diffusion.predict(model, x_t, torch.tensor([0, 3, 9, 9]))
    assert len(calls) == 1
    assert calls[0].tolist() == [99, 399, 999, 999]
    # v = 0 means eps = sqrt(1-ab) x_t, x0 = sqrt(ab) x_t, with ab of the *original* timesteps
    ab = cosine.alphas_cumprod[[99, 399, 999, 999]][:, None]
    torch.testing.assert_close(eps, (1 - ab).sqrt() * x_t, rtol=0, atol=1e-14)
    torch.testing.assert_close(x0, ab.sqrt() * x_t, rtol=0, atol=1e-14)


def test_predict_casts_model_output_to_x_t_dtype(linear):
    diffusion = GaussianDiffusion(linear)
    eps, x0 = diffusion.predict(
        lambda x, t: torch.zeros_like(x, dtype=torch.bfloat16), torch.randn(2, 3), torch.tensor([1, 2])
    )
    assert eps.dtype == x0.dtype == torch.float32


def test_predict_wrong_shape_raises(linear):
    diffusion = GaussianDiffusion(linear)
    with pytest.raises(ValueError, match=r"returned shape \[2, 1\] for x_t of shape \[2, 3\]"):
        diffusion.predict(lambda x, t: x[:, :1], torch.randn(2, 3), torch.tensor([1, 2]))


# --------------------------------------------------------------------------------------------------
# Models with and without a condition.
# --------------------------------------------------------------------------------------------------


def test_call_model_passes_condition_only_when_given():
    seen = []

    def conditional(x, t, cond=None):
        seen.append(cond)
        return x

    x, t = torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64)
    call_model(conditional, x, t)
    call_model(conditional, x, t, ["a", "b"])
    assert seen == [None, ["a", "b"]]


def test_call_model_refuses_condition_for_unconditional_model():
    class Unconditional(torch.nn.Module):
        def forward(self, x, t):
            return x

    with pytest.raises(TypeError, match="Unconditional takes no condition"):
        call_model(
            Unconditional(), torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64), torch.tensor([0, 1])
        )


# --------------------------------------------------------------------------------------------------
# Training loss.
# --------------------------------------------------------------------------------------------------


def exact_target_model(schedule, prediction, x0, noise, expected_t):
    """A model that knows the noise: returns the true target, computed by hand, for the x_t it is given."""

    def model(x_t, t):
        assert torch.equal(t, expected_t)
        ab = schedule.alphas_cumprod[t].reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
        if prediction == "eps":
            return noise.clone()
        if prediction == "x0":
            return x0.clone()
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    return model


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
@pytest.mark.parametrize("shape", [(8, 1), (8, 2), (8, 3, 8, 8)])
@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
def test_training_loss_is_zero_for_the_exact_target(cosine, prediction, shape, min_snr_gamma):
    diffusion = GaussianDiffusion(cosine, prediction, min_snr_gamma=min_snr_gamma)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
    model = exact_target_model(cosine, prediction, x0, noise, t)
    loss = diffusion.training_loss(model, x0, t=t, noise=noise)
    assert loss.ndim == 0
    assert loss.item() < 1e-12


@pytest.mark.parametrize("prediction, value, target_sq", [("eps", 2.0, 4.0), ("x0", 3.0, 9.0)])
@pytest.mark.parametrize("shape", [(6, 1), (6, 2), (6, 3, 8, 8)])
def test_training_loss_of_zero_model_is_mean_square_of_target(linear, prediction, value, target_sq, shape):
    diffusion = GaussianDiffusion(linear, prediction)
    x0 = torch.full(shape, 3.0)
    noise = torch.full(shape, 2.0)
    t = torch.tensor([0, 5, 50, 500, 990, 999])
    loss = diffusion.training_loss(lambda x, t: torch.zeros_like(x), x0, t=t, noise=noise)
    assert loss.item() == pytest.approx(target_sq, rel=1e-6)


def test_training_loss_of_zero_v_model(linear):
    diffusion = GaussianDiffusion(linear, "v")
    x0 = torch.full((4, 2), 3.0, dtype=torch.float64)
    noise = torch.full((4, 2), 2.0, dtype=torch.float64)
    t = torch.tensor([0, 100, 500, 999])
    ab = linear.alphas_cumprod[t]
    expected = ((ab.sqrt() * 2.0 - (1 - ab).sqrt() * 3.0) ** 2).mean().item()
    loss = diffusion.training_loss(lambda x, t: torch.zeros_like(x), x0, t=t, noise=noise)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_training_loss_is_mean_over_batch_of_per_sample_mse(linear):
    diffusion = GaussianDiffusion(linear)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(4, 3, 2, 2, generator=g)
    noise = torch.randn(4, 3, 2, 2, generator=g)
    t = torch.tensor([3, 30, 300, 999])
    loss = diffusion.training_loss(lambda x, t: 0.5 * x, x0, t=t, noise=noise)
    x_t = diffusion.q_sample(x0, t, noise)
    expected = ((0.5 * x_t - noise) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
@pytest.mark.parametrize("gamma", [0.5, 5.0, 1e9])
def test_min_snr_weights_formula(cosine, prediction, gamma):
    diffusion = GaussianDiffusion(cosine, prediction, min_snr_gamma=gamma)
    t = torch.tensor([0, 10, 100, 400, 700, 999])
    ab = cosine.alphas_cumprod[t]
    snr = ab / (1 - ab)
    clipped = torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64))
    expected = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]
    weights = diffusion.loss_weights(t)
    assert weights.shape == (6,)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-6, atol=0)
    assert GaussianDiffusion(cosine, prediction).loss_weights(t) is None


def model_with_eps_error(schedule, prediction, x0, noise, error):
    """A model whose output is off by exactly `error` in eps-space, expressed as its own target."""

    def model(x_t, t):
        ab = schedule.alphas_cumprod[t].reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        eps_hat = noise + error
        if prediction == "eps":
            return eps_hat
        x0_hat = (x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
        if prediction == "x0":
            return x0_hat
        return ab.sqrt() * eps_hat - (1 - ab).sqrt() * x0_hat

    return model


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_loss_is_the_same_for_every_target_given_the_same_eps_error(name, gamma):
    schedule = make_schedule(name, T)
    g = torch.Generator().manual_seed(7)
    shape = (7, 2)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    error = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 2, 50, 200, 500, 800, 999])
    ab = schedule.alphas_cumprod[t]
    snr = ab / (1 - ab)
    expected = (snr.clamp(max=gamma) / snr * (error**2).mean(1)).mean().item()
    losses = {}
    for prediction in PREDICTION_TYPES:
        diffusion = GaussianDiffusion(schedule, prediction, min_snr_gamma=gamma)
        model = model_with_eps_error(schedule, prediction, x0, noise, error)
        losses[prediction] = diffusion.training_loss(model, x0, t=t, noise=noise).item()
    for prediction, value in losses.items():
        assert value == pytest.approx(expected, rel=1e-4), (prediction, losses)


def test_unweighted_losses_differ_by_target_for_the_same_eps_error(cosine):
    # without min-SNR the three targets weigh the same eps error differently (x0 by 1/SNR)
    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, generator=g, dtype=torch.float64)
    error = torch.full((3, 2), 0.1, dtype=torch.float64)
    t = torch.tensor([100, 500, 900])
    ab = cosine.alphas_cumprod[t]
    snr = ab / (1 - ab)
    for prediction, factor in [("eps", torch.ones(3)), ("x0", 1 / snr), ("v", (1 + snr) / snr)]:
        loss = GaussianDiffusion(cosine, prediction).training_loss(
            model_with_eps_error(cosine, prediction, x0, noise, error), x0, t=t, noise=noise
        )
        assert loss.item() == pytest.approx((0.01 * factor.double()).mean().item(), rel=1e-4), prediction


@pytest.mark.parametrize("shape", [(16, 1), (16, 2), (16, 3, 8, 8)])
def test_training_loss_reproducible_with_generator(linear, shape):
    diffusion = GaussianDiffusion(linear)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def model(x, t):
        return torch.tanh(x) * (t.float() / 1000).reshape(-1, *([1] * (x.ndim - 1)))

    first = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(42))
    again = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(42))
    other = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(43))
    assert torch.isfinite(first) and first.ndim == 0
    assert first.item() == again.item()
    assert first.item() != other.item()


def test_training_loss_draws_t_uniformly_over_all_steps():
    schedule = make_schedule("linear", 50)
    diffusion = GaussianDiffusion(schedule)
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    diffusion.training_loss(model, torch.zeros(20_000, 1), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(seen[0], minlength=50).double()
    assert counts.numel() == 50 and seen[0].dtype == torch.int64
    # each count is Binomial(20000, 1/50): mean 400, sd ~19.8
    assert bool(((counts - 400).abs() < 5 * 19.8).all())


def test_training_loss_passes_condition(linear):
    diffusion = GaussianDiffusion(linear)
    seen = []

    def model(x, t, cond):
        seen.append(cond)
        return torch.zeros_like(x)

    diffusion.training_loss(model, torch.zeros(2, 1), cond=["a cat", "a dog"])
    assert seen == [["a cat", "a dog"]]


@pytest.mark.parametrize("bad_output", [lambda x: x[:, :1], lambda x: x.flatten(), lambda x: x[:1]])
def test_training_loss_wrong_output_shape_raises(linear, bad_output):
    diffusion = GaussianDiffusion(linear)
    with pytest.raises(ValueError, match=r"the model returned shape .* for data of shape \[4, 3\]"):
        diffusion.training_loss(lambda x, t: bad_output(x), torch.zeros(4, 3))


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction", "EPS", ""])
def test_invalid_prediction_raises(linear, prediction):
    with pytest.raises(ValueError, match=rf"unknown prediction '{prediction}'; choose one of eps, x0, v"):
        GaussianDiffusion(linear, prediction)


@pytest.mark.parametrize("gamma", [0, -1.0])
def test_invalid_min_snr_gamma_raises(linear, gamma):
    with pytest.raises(ValueError, match="min_snr_gamma must be positive"):
        GaussianDiffusion(linear, min_snr_gamma=gamma)


# --------------------------------------------------------------------------------------------------
# randn.
# --------------------------------------------------------------------------------------------------


def test_randn_with_per_sample_generators_is_batch_independent():
    whole = randn((4, 3), [torch.Generator().manual_seed(s) for s in range(4)])
    part = randn((2, 3), [torch.Generator().manual_seed(s) for s in range(2, 4)])
    assert torch.equal(whole[2:], part)
    assert torch.equal(whole[0], torch.randn(3, generator=torch.Generator().manual_seed(0)))


def test_randn_with_seed_blocks():
    # G generators split the batch into G consecutive blocks, each drawn from its own generator
    blocks = randn((6, 2), [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert torch.equal(blocks[:3], torch.randn(3, 2, generator=torch.Generator().manual_seed(10)))
    assert torch.equal(blocks[3:], torch.randn(3, 2, generator=torch.Generator().manual_seed(11)))
    single = randn((6, 2), torch.Generator().manual_seed(10), dtype=torch.float64)
    assert single.dtype == torch.float64 and single.shape == (6, 2)


@pytest.mark.parametrize("count", [0, 2, 4])
def test_randn_generators_that_cannot_split_the_batch_raise(count):
    with pytest.raises(ValueError, match=f"{count} generators cannot split a batch of 3 evenly"):
        randn((3, 1), [torch.Generator() for _ in range(count)])
