"""Classifier-free guidance and classifier guidance, with hand-made models and the exact mixture oracle."""

from __future__ import annotations

import pytest
import torch

from ddpmlab.data.toy import GaussianMixture, OptimalDenoiser
from ddpmlab.diffusion import PREDICTION_TYPES, GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance, ClassifierGuidance, concat_conditions
from ddpmlab.sampling import DDIMSampler, DDPMSampler
from ddpmlab.schedules import make_schedule, respace
from oracles import OracleWithNull

T = 1000
MIXTURE = GaussianMixture([-3.0, 0.0, 4.0], [0.5, 1.0, 0.3], [0.3, 0.5, 0.2])
NULL = 3  # the "no condition" class index for a 3-class model


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", T)


class CountingConditionalModel(torch.nn.Module):
    """eps(x, t, c) = 0.5 x + 0.001 t + e_c, with a distinct random vector e_c per class (class NULL too).

    Records the batch size of every call."""

    def __init__(self, dim: int = 2, num_classes: int = 4):
        super().__init__()
        self.table = torch.randn(
            num_classes, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        self.batch_sizes: list[int] = []

    def forward(self, x, t, cond):
        self.batch_sizes.append(len(x))
        return 0.5 * x + 0.001 * t[:, None].to(x.dtype) + self.table[cond].to(x.dtype)


class StringConditionalModel(torch.nn.Module):
    """A 'text' model: the condition is a list of strings, turned into a number by its length."""

    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def forward(self, x, t, cond):
        self.calls.append(list(cond))
        lengths = torch.tensor([float(len(c)) for c in cond], dtype=x.dtype)
        return x * 0.1 + lengths[:, None]


def inputs(batch=5, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (batch,), generator=g)
    return x, t


# --------------------------------------------------------------------------------------------------
# Classifier-free guidance.
# --------------------------------------------------------------------------------------------------


def test_cfg_w1_is_the_conditional_model():
    model = CountingConditionalModel()
    x, t = inputs()
    cond = torch.tensor([0, 1, 2, 1, 0])
    out = ClassifierFreeGuidance(model, 1.0, NULL)(x, t, cond)
    model.batch_sizes.clear()
    torch.testing.assert_close(out, model(x, t, cond), rtol=0, atol=0)


def test_cfg_w0_is_the_unconditional_model():
    model = CountingConditionalModel()
    x, t = inputs()
    cond = torch.tensor([0, 1, 2, 1, 0])
    out = ClassifierFreeGuidance(model, 0.0, NULL)(x, t, cond)
    torch.testing.assert_close(out, model(x, t, torch.full_like(cond, NULL)), rtol=0, atol=0)
    assert not torch.allclose(out, model(x, t, cond))


@pytest.mark.parametrize("w", [3.0, 0.5, 7.5, -1.0])
def test_cfg_is_the_guidance_formula_by_hand(w):
    model = CountingConditionalModel()
    x, t = inputs()
    cond = torch.tensor([0, 1, 2, 1, 0])
    out = ClassifierFreeGuidance(model, w, NULL)(x, t, cond)
    eps_c = model(x, t, cond)
    eps_u = model(x, t, torch.full_like(cond, NULL))
    torch.testing.assert_close(out, eps_u + w * (eps_c - eps_u), rtol=0, atol=1e-14)


@pytest.mark.parametrize("w, expected_batches", [(0.0, [5]), (1.0, [5]), (3.0, [10])])
def test_cfg_uses_one_forward(w, expected_batches):
    model = CountingConditionalModel()
    x, t = inputs()
    ClassifierFreeGuidance(model, w, NULL)(x, t, torch.tensor([0, 1, 2, 1, 0]))
    assert model.batch_sizes == expected_batches


def test_cfg_with_list_of_strings():
    model = StringConditionalModel()
    x, t = inputs(batch=3)
    prompts = ["a cat", "a large dog", "x"]
    out = ClassifierFreeGuidance(model, 2.0, "")(x, t, prompts)
    assert model.calls == [prompts + ["", "", ""]]  # one batched forward: conditions then nulls
    lengths = torch.tensor([5.0, 11.0, 1.0], dtype=torch.float64)[:, None]
    eps_c, eps_u = 0.1 * x + lengths, 0.1 * x
    torch.testing.assert_close(out, eps_u + 2.0 * (eps_c - eps_u), rtol=0, atol=1e-14)
    # w = 0 calls the model with the null conditions only
    model.calls.clear()
    torch.testing.assert_close(ClassifierFreeGuidance(model, 0.0, "")(x, t, prompts), 0.1 * x)
    assert model.calls == [["", "", ""]]


def test_cfg_with_tensor_condition_and_tensor_null():
    # conditions that are vectors (e.g. embeddings), with a null vector broadcast over the batch
    def model(x, t, cond):
        return x + cond

    x = torch.zeros(2, 3, dtype=torch.float64)
    cond = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    null = torch.tensor([0.5, 0.5, 0.5])
    out = ClassifierFreeGuidance(model, 2.0, null)(x, torch.zeros(2, dtype=torch.int64), cond)
    torch.testing.assert_close(out, null + 2.0 * (cond - null))


def test_concat_conditions():
    assert torch.equal(concat_conditions(torch.tensor([1, 2]), 9), torch.tensor([1, 2, 9, 9]))
    assert concat_conditions(["a", "b"], "") == ["a", "b", "", ""]
    assert concat_conditions(("a",), None) == ["a", None]
    with pytest.raises(TypeError, match="cannot batch a condition of type str"):
        concat_conditions("a cat", "")


def test_cfg_needs_a_condition():
    with pytest.raises(ValueError, match="needs a condition for every sample"):
        ClassifierFreeGuidance(CountingConditionalModel(), 3.0, NULL)(*inputs(), None)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_cfg_on_raw_outputs_equals_cfg_on_eps(schedule, prediction):
    """x0 and v are affine in eps at fixed (x_t, t), so guiding raw outputs guides eps."""
    diffusion = GaussianDiffusion(schedule, prediction)
    model = CountingConditionalModel()
    x, t = inputs()
    cond = torch.tensor([0, 1, 2, 1, 0])
    w = 4.0
    guided = diffusion.prediction_to_eps_x0(ClassifierFreeGuidance(model, w, NULL)(x, t, cond), x, t).eps
    eps_c = diffusion.prediction_to_eps_x0(model(x, t, cond), x, t).eps
    eps_u = diffusion.prediction_to_eps_x0(model(x, t, torch.full_like(cond, NULL)), x, t).eps
    torch.testing.assert_close(guided, eps_u + w * (eps_c - eps_u), rtol=0, atol=1e-9)



@pytest.mark.parametrize("w", [1.0, 3.0])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_cfg_sampling_of_component_k_lands_on_component_k(schedule, w, k):
    n = 2000
    diffusion = GaussianDiffusion(schedule)
    model = ClassifierFreeGuidance(OracleWithNull(MIXTURE, schedule), w, -1)
    cond = torch.full((n,), k)
    x = DDPMSampler(diffusion, 100).sample(
        model, (n, 1), cond=cond, generator=torch.Generator().manual_seed(k)
    )
    # the fraction of samples whose most likely component is k, against the same for exact draws from k
    # (component 1 is wide and overlaps its neighbours, so that is about 97.7%, not 100%)
    fraction = (MIXTURE.responsibilities(x).argmax(-1) == k).double().mean().item()
    exact = MIXTURE.component(k).sample(200_000, generator=torch.Generator().manual_seed(10 + k))
    expected = (MIXTURE.responsibilities(exact).argmax(-1) == k).double().mean().item()
    se = (expected * (1 - expected) / n) ** 0.5
    assert expected > 0.97
    mean, std = MIXTURE.means[k, 0].item(), MIXTURE.stds[k].item()
    sample_mean, sample_std = x.double().mean().item(), x.double().std().item()
    if w == 1.0:  # the conditional oracle samples the component itself (std within 10% with 100 steps)
        assert abs(fraction - expected) < 4 * se + 1e-3
        assert abs(sample_mean - mean) < 5 * std / n**0.5
        assert abs(sample_std - std) < 0.1 * std
    else:  # guidance beyond 1 sharpens the component and pushes it away from the others
        assert fraction > expected - 4 * se
        assert sample_std < std
        assert abs(sample_mean - mean) < std
        if k == 0:  # the leftmost component moves further left, the rightmost further right
            assert sample_mean < mean
        if k == 2:
            assert sample_mean > mean


# --------------------------------------------------------------------------------------------------
# Classifier guidance.
# --------------------------------------------------------------------------------------------------


class TwoClassClassifier(torch.nn.Module):
    """logits = [a(t) S, -a(t) S] with S = sum of x over its non-batch dims and a(t) = 0.7 (1 + t / T).

    log p(0 | x) = a S - log(e^{aS} + e^{-aS}), so d/dx_i log p(0 | x) = a (1 - tanh(a S)) and
    d/dx_i log p(1 | x) = -a (1 + tanh(a S)) for every coordinate i."""

    def __init__(self):
        super().__init__()
        self.timesteps: list[torch.Tensor] = []

    def scale(self, t, x):
        return (0.7 * (1 + t.to(x.dtype) / T)).reshape(-1, 1)

    def forward(self, x, t):
        self.timesteps.append(t)
        s = x.flatten(1).sum(1, keepdim=True)
        a = self.scale(t, x)
        return torch.cat([a * s, -a * s], dim=1)

    def analytic_gradient(self, x, t, labels):
        s = x.flatten(1).sum(1)
        a = self.scale(t, x).flatten()
        tanh = torch.tanh(a * s)
        per_sample = torch.where(labels == 0, a * (1 - tanh), -a * (1 + tanh))
        return per_sample.reshape(-1, *([1] * (x.ndim - 1))).expand_as(x)


def base_model(x, t):
    return torch.sin(x) + 0.0005 * t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


@pytest.mark.parametrize("shape", [(6, 1), (6, 2), (6, 3, 4, 4)])
@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_classifier_guidance_eps_formula(schedule, shape, scale):
    diffusion = GaussianDiffusion(schedule)
    classifier = TwoClassClassifier()
    guided = ClassifierGuidance(base_model, classifier, scale, diffusion)
    g = torch.Generator().manual_seed(1)
    x = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out = guided(x, t, labels)
    sigma = schedule.sqrt_one_minus_alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
    expected = base_model(x, t) - scale * sigma * classifier.analytic_gradient(x, t, labels)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert out.dtype == torch.float64 and out.shape == shape
    assert all(torch.equal(seen, t) for seen in classifier.timesteps)  # called with the model's timesteps


def test_classifier_guidance_is_exact_in_float64(schedule):
    diffusion = GaussianDiffusion(schedule)
    classifier = TwoClassClassifier()
    x = 0.3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.randint(0, T, (64,), generator=torch.Generator().manual_seed(3))
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(4))
    out = ClassifierGuidance(base_model, classifier, 3.0, diffusion)(x, t, labels)
    sigma = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
    expected = base_model(x, t) - 3.0 * sigma * classifier.analytic_gradient(x, t, labels)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_classifier_guidance_scale_0_is_the_model(schedule):
    x, t = inputs()
    out = ClassifierGuidance(base_model, TwoClassClassifier(), 0.0, GaussianDiffusion(schedule))(
        x, t, torch.zeros(5, dtype=torch.int64)
    )
    torch.testing.assert_close(out, base_model(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_classifier_guidance_converts_x0_and_v_outputs_consistently(schedule, prediction):
    diffusion = GaussianDiffusion(schedule, prediction)
    classifier = TwoClassClassifier()
    x, t = inputs(batch=6)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    out = ClassifierGuidance(base_model, classifier, 2.0, diffusion)(x, t, labels)
    # the model's raw output, read as `prediction`, gives eps; the guided output must give the guided eps
    eps = diffusion.prediction_to_eps_x0(base_model(x, t), x, t).eps
    sigma = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
    guided_eps, guided_x0 = diffusion.prediction_to_eps_x0(out, x, t)
    expected_eps = eps - 2.0 * sigma * classifier.analytic_gradient(x, t, labels)
    torch.testing.assert_close(guided_eps, expected_eps, rtol=1e-6, atol=1e-6)
    # and the pair still describes the same x_t
    ab = schedule.alphas_cumprod[t][:, None]
    torch.testing.assert_close(ab.sqrt() * guided_x0 + (1 - ab).sqrt() * guided_eps, x, rtol=0, atol=1e-10)


def test_classifier_guidance_passes_condition_to_conditional_model(schedule):
    seen = []

    def conditional(x, t, cond):
        seen.append(cond)
        return torch.zeros_like(x)

    labels = torch.tensor([1, 0])
    ClassifierGuidance(
        conditional, TwoClassClassifier(), 1.0, GaussianDiffusion(schedule), condition_model=True
    )(*inputs(batch=2), labels)
    assert len(seen) == 1 and torch.equal(seen[0], labels)


def test_classifier_guidance_refuses_respaced_diffusion_and_missing_labels(schedule):
    with pytest.raises(ValueError, match="needs the training diffusion"):
        ClassifierGuidance(base_model, TwoClassClassifier(), 1.0, GaussianDiffusion(respace(schedule, 10)))
    guided = ClassifierGuidance(base_model, TwoClassClassifier(), 1.0, GaussianDiffusion(schedule))
    with pytest.raises(ValueError, match="needs a target label for every sample"):
        guided(*inputs(), None)


class ExactMixtureClassifier(torch.nn.Module):
    """The Bayes classifier of the noised mixture: logits_k(x_t, t) = log w_k N(x_t; sqrt(ab) mu_k, ...)."""

    def __init__(self, mixture, schedule):
        super().__init__()
        self.mixture, self.schedule = mixture, schedule

    def forward(self, x, t):
        x = x.double().reshape(len(x), -1)
        pieces, order = [], []
        for timestep in torch.unique(t):
            index = (t == timestep).nonzero().flatten()
            noised = self.mixture.noised(self.schedule.alphas_cumprod[timestep].item())
            pieces.append(noised.component_log_probs(x[index]))
            order.append(index)
        return torch.cat(pieces)[torch.argsort(torch.cat(order))]


def test_guidance_by_the_exact_classifier_at_scale_1_is_the_conditional_oracle(schedule):
    """eps - sqrt(1 - ab) grad log p(k | x_t) = -sqrt(1 - ab) grad log q(x_t | k): the conditional eps."""
    diffusion = GaussianDiffusion(schedule)
    oracle = OptimalDenoiser(MIXTURE, schedule)
    guided = ClassifierGuidance(oracle, ExactMixtureClassifier(MIXTURE, schedule), 1.0, diffusion)
    x = torch.linspace(-6, 6, 24, dtype=torch.float64)[:, None]
    t = torch.tensor([0, 10, 100, 300, 500, 700, 900, 999] * 3)
    labels = torch.tensor([0, 1, 2] * 8)
    torch.testing.assert_close(guided(x, t, labels), oracle(x, t, labels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler_kind", ["ddpm", "ddim"])
def test_classifier_guidance_inside_a_sampler(schedule, sampler_kind):
    """Samplers run guided models with autograd available (requires_grad_for_sampling): sampling with the
    exact classifier at scale 1 draws each requested component."""
    diffusion = GaussianDiffusion(schedule)
    guided = ClassifierGuidance(
        OptimalDenoiser(MIXTURE, schedule), ExactMixtureClassifier(MIXTURE, schedule), 1.0, diffusion
    )
    assert guided.requires_grad_for_sampling
    sampler = DDPMSampler(diffusion, 50) if sampler_kind == "ddpm" else DDIMSampler(diffusion, 50)
    labels = torch.arange(3).repeat_interleave(300)
    x = sampler.sample(guided, (900, 1), cond=labels, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(x).all())
    assigned = MIXTURE.responsibilities(x).argmax(-1)
    assert (assigned == labels).double().mean().item() > 0.98
    for k in range(3):
        assert abs(x[labels == k].double().mean().item() - MIXTURE.means[k, 0].item()) < 0.15


def test_classifier_guidance_moves_samples_towards_the_class(schedule):
    diffusion = GaussianDiffusion(schedule)
    oracle = OptimalDenoiser(MIXTURE, schedule)
    sampler = DDPMSampler(diffusion, 50)
    labels = torch.ones(500, dtype=torch.int64)  # class 1 of TwoClassClassifier: negative x
    fractions = {}
    for scale in (0.0, 3.0):
        model = ClassifierGuidance(oracle, TwoClassClassifier(), scale, diffusion)
        x = sampler.sample(model, (500, 1), cond=labels, generator=torch.Generator().manual_seed(0))
        fractions[scale] = (x < -1.5).double().mean().item()
    assert fractions[3.0] > fractions[0.0] + 0.2


def test_classifier_guidance_with_labels_made_in_inference_mode(schedule):
    guided = ClassifierGuidance(base_model, TwoClassClassifier(), 1.0, GaussianDiffusion(schedule))
    with torch.inference_mode():
        x, t = inputs()
        out = guided(x, t, torch.tensor([0, 1, 0, 1, 0]))
    assert out.shape == x.shape
