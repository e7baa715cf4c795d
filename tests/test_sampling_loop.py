"""The sampling loop's shortcuts compute exactly what the plain formulas compute.

The loop makes its timestep tensors once, uses scalar coefficients for a step's single timestep, draws
seed-block noise into one buffer, accumulates a step's terms in place and caches whether a model takes a
condition. Each test below compares one shortcut bitwise with the straightforward computation, or checks
that it leaves the caller's tensors alone.
"""

from __future__ import annotations

import pytest
import torch

from ddpmlab.diffusion import GaussianDiffusion, _accepts_cond, call_model, randn
from ddpmlab.guidance import ClassifierFreeGuidance, concat_conditions
from ddpmlab.sampling import DDIMSampler, DDPMSampler, Prediction
from ddpmlab.schedules import make_schedule


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_schedule("linear", 1000))


class TimestepRecorder(torch.nn.Module):
    """eps = 0.1 x + 1e-4 t (per sample), recording every t it is called with."""

    def __init__(self):
        super().__init__()
        self.calls: list[torch.Tensor] = []

    def forward(self, x, t, cond=None):
        self.calls.append(t.clone())
        return 0.1 * x + 1e-4 * t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("generators", [3, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_block_noise_is_each_blocks_own_randn(generators, dtype):
    shape = (12, 1, 5, 7)
    make = lambda: [torch.Generator().manual_seed(40 + i) for i in range(generators)]  # noqa: E731
    expected = torch.cat([torch.randn((12 // generators, 1, 5, 7), generator=g, dtype=dtype) for g in make()])
    assert torch.equal(randn(shape, make(), dtype=dtype), expected)


def test_seed_block_noise_of_an_empty_batch():
    assert randn((0, 3), [torch.Generator(), torch.Generator()]).shape == (0, 3)


@pytest.mark.parametrize("name", ["sqrt_alphas_cumprod", "posterior_mean_coef1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_coefficient_is_the_gathered_one(diffusion, name, dtype):
    like = torch.zeros(4, 1, 3, 3, dtype=dtype)
    for index in (0, 1, 517, 999):
        scalar = diffusion.coefficient(name, index, like)
        gathered = diffusion.coefficient(name, torch.full((4,), index), like)
        assert scalar.ndim == 0 and scalar.dtype == dtype
        assert torch.equal(scalar.expand_as(gathered), gathered)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predict_with_one_index_equals_predict_with_a_batch_of_indices(prediction):
    diffusion = GaussianDiffusion(make_schedule("cosine", 1000), prediction)
    x_t = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    model = TimestepRecorder()
    for index in (0, 3, 998):
        one = diffusion.predict(model, x_t, index)
        batch = diffusion.predict(model, x_t, torch.full((6,), index))
        assert torch.equal(one.eps, batch.eps) and torch.equal(one.x0, batch.x0)
        assert torch.equal(model.calls[-2], model.calls[-1])


@pytest.mark.parametrize("sampler_class", [DDPMSampler, DDIMSampler])
def test_loop_calls_the_model_with_the_original_timesteps(diffusion, sampler_class):
    sampler = sampler_class(diffusion, 10)
    model = TimestepRecorder()
    sampler.sample(model, (3, 2), generator=torch.Generator().manual_seed(0))
    assert [t.tolist() for t in model.calls] == [[t] * 3 for t in sampler.timesteps]
    assert all(t.dtype == torch.int64 and t.shape == (3,) for t in model.calls)


@pytest.mark.parametrize("sampler_class", [DDPMSampler, DDIMSampler])
def test_step_leaves_its_inputs_alone(diffusion, sampler_class):
    options = {"eta": 1.0} if sampler_class is DDIMSampler else {}
    sampler = sampler_class(diffusion, 20, **options)
    g = torch.Generator().manual_seed(1)
    x_t, eps, x0, noise = (torch.randn(5, 3, generator=g) for _ in range(4))
    copies = [v.clone() for v in (x_t, eps, x0, noise)]
    out = sampler.step(x_t, 7, Prediction(eps, x0), noise=noise)
    for original, copy in zip((x_t, eps, x0, noise), copies):
        assert torch.equal(original, copy)
    c = sampler._coefficients
    if sampler_class is DDPMSampler:
        expected = c["coef_x0"][7] * x0 + c["coef_xt"][7] * x_t + c["std"][7] * noise
    else:
        expected = c["coef_x0"][7] * x0 + c["coef_eps"][7] * eps + c["sigma"][7] * noise
    assert torch.equal(out, expected)


def test_step_with_drawn_noise_equals_step_with_that_noise_given(diffusion):
    sampler = DDPMSampler(diffusion, 20)
    x_t, eps, x0 = (torch.randn(4, 2, generator=torch.Generator().manual_seed(i)) for i in range(3))
    drawn = sampler.step(x_t, 5, Prediction(eps, x0), generator=torch.Generator().manual_seed(9))
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    assert torch.equal(drawn, sampler.step(x_t, 5, Prediction(eps, x0), noise=noise))


def test_step_broadcasts_and_promotes_like_the_formula(diffusion):
    sampler = DDPMSampler(diffusion, 20)
    x_t = torch.randn(4, 2, dtype=torch.float64)
    x0 = torch.randn(1, 2)  # float32, broadcast over the batch
    out = sampler.step(x_t, 0, Prediction(torch.zeros(1, 2), x0))
    c = sampler._coefficients
    assert out.dtype == torch.float64 and out.shape == (4, 2)
    assert torch.equal(out, c["coef_x0"][0] * x0 + c["coef_xt"][0] * x_t)


@pytest.mark.parametrize("w", [3.0, 0.5, -1.0])
def test_cfg_combination_is_the_formula_bitwise(w):
    torch.manual_seed(0)
    table = torch.randn(5, 4)

    def model(x, t, cond):
        return x * 0.3 + table[cond]

    x = torch.randn(6, 4)
    t = torch.full((6,), 10)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    both = model(torch.cat([x, x]), torch.cat([t, t]), concat_conditions(labels, 4))
    conditional, unconditional = both.chunk(2)
    expected = unconditional + w * (conditional - unconditional)
    assert torch.equal(ClassifierFreeGuidance(model, w, 4)(x, t, labels), expected)


def test_concat_conditions_with_scalar_and_tensor_nulls():
    labels = torch.tensor([2, 0, 1])
    assert concat_conditions(labels, 7).tolist() == [2, 0, 1, 7, 7, 7]
    assert concat_conditions(labels, torch.tensor(7)).tolist() == [2, 0, 1, 7, 7, 7]
    features = torch.ones(2, 3)
    null = torch.tensor([0.0, 5.0, 0.0])
    assert torch.equal(concat_conditions(features, null)[2:], null.expand(2, 3))
    assert concat_conditions(features, 0.5)[2:].eq(0.5).all()


def test_accepts_cond_is_cached_and_still_right():
    class Conditional(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return x

    class Unconditional(torch.nn.Module):
        def forward(self, x, t):
            return x

    def plain(x, t):
        return x

    assert _accepts_cond(Conditional()) and _accepts_cond(Conditional())
    assert not _accepts_cond(Unconditional()) and not _accepts_cond(Unconditional())
    assert not _accepts_cond(plain) and not _accepts_cond(plain)
    assert _accepts_cond(lambda x, t, c: x)
    assert _accepts_cond(lambda *args: args[0])
    # a module whose instance overrides forward is judged by that forward
    module = Unconditional()
    module.forward = lambda x, t, c: x
    assert _accepts_cond(module)
    with pytest.raises(TypeError, match="takes no condition"):
        call_model(Unconditional(), torch.zeros(1), torch.zeros(1), torch.zeros(1))
