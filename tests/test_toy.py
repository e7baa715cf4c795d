"""Toy datasets: exact samplers against analytic moments, densities against their samplers, the registry."""

from __future__ import annotations

import math

import pytest
import torch

from ddpmlab.data.toy import (
    Circles,
    GaussianMixture,
    NoisyCurves,
    OptimalDenoiser,
    ToyDataset,
    circles,
    make_toy_dataset,
    mog1d,
    mog2d,
    moons,
    swiss_roll,
    toy_dataset_names,
)
from ddpmlab.schedules import make_schedule

NAMES = ("mog1d", "mog2d", "moons", "swiss_roll", "circles")
EXPECTED = {  # name: (dim, num_classes)
    "mog1d": (1, 3),
    "mog2d": (2, 8),
    "moons": (2, 2),
    "swiss_roll": (2, 0),
    "circles": (2, 2),
}


def draw(dataset: ToyDataset, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, labels = dataset.sample(n, torch.Generator().manual_seed(seed), return_labels=True)
    return x.double(), labels


def assert_close_to(sample_values: torch.Tensor, expected: float, sigmas: float = 5.0) -> None:
    """The sample mean of ``sample_values`` [N] lies within ``sigmas`` standard errors of ``expected``."""
    error = float(sample_values.std()) / math.sqrt(sample_values.numel())
    mean = float(sample_values.mean())
    assert abs(mean - expected) < sigmas * error, (mean, expected)


# --------------------------------------------------------------------------------------------------
# Registry, shapes, errors, reproducibility.
# --------------------------------------------------------------------------------------------------


def test_registry_lists_every_dataset() -> None:
    assert toy_dataset_names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_dataset_interface(name: str) -> None:
    dataset = make_toy_dataset(name)
    dim, num_classes = EXPECTED[name]
    assert isinstance(dataset, ToyDataset)
    assert (dataset.name, dataset.dim, dataset.num_classes) == (name, dim, num_classes)
    assert dataset.has_density
    x = dataset.sample(64, torch.Generator().manual_seed(0))
    x2, labels = dataset.sample(64, torch.Generator().manual_seed(0), return_labels=True)
    assert x.shape == (64, dim) and x.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert torch.equal(x, x2)  # asking for labels does not change the points
    if num_classes:
        assert 0 <= int(labels.min()) and int(labels.max()) < num_classes
    else:
        assert not labels.any()
    log_p = dataset.log_prob(x)
    assert log_p.shape == (64,) and bool(torch.isfinite(log_p).all())


@pytest.mark.parametrize("name", NAMES)
def test_generator_reproducibility(name: str) -> None:
    dataset = make_toy_dataset(name)
    global_state = torch.random.get_rng_state()
    a, labels_a = dataset.sample(500, torch.Generator().manual_seed(3), return_labels=True)
    b, labels_b = dataset.sample(500, torch.Generator().manual_seed(3), return_labels=True)
    c = dataset.sample(500, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(labels_a, labels_b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # the global generator is untouched


def test_unknown_name_lists_allowed_ones() -> None:
    allowed = "mog1d, mog2d, moons, swiss_roll, circles"
    with pytest.raises(ValueError, match=rf"unknown toy dataset 'spiral'; choose one of {allowed}"):
        make_toy_dataset("spiral")


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'sigma' for toy dataset 'moons'; allowed: noise"):
        make_toy_dataset("moons", sigma=0.1)
    with pytest.raises(ValueError, match=r"unknown options 'a', 'b'"):
        make_toy_dataset("circles", a=1, b=2)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("moons", {"noise": -0.1}, "noise must be a finite number >= 0"),
        ("swiss_roll", {"noise": float("nan")}, "noise must be a finite number >= 0"),
        ("circles", {"factor": 1.5}, r"factor .* must lie in \(0, 1\)"),
        ("mog2d", {"num_components": 0}, r"num_components must be positive \(at least 1\)"),
        ("mog2d", {"num_components": 2.5}, "num_components must be an integer"),
        ("mog2d", {"std": 0.0}, "std must be a finite number > 0"),
        ("mog1d", {"means": [[0.0, 1.0]], "stds": [1.0], "weights": [1.0]}, "flat list"),
        ("mog1d", {"stds": [1.0, 2.0]}, "one std and one weight per component"),
    ],
)
def test_bad_option_values(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_toy_dataset(name, **options)


def test_bad_sample_sizes() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        moons().sample(0)
    with pytest.raises(ValueError, match="must be an integer"):
        mog1d().sample(2.5)


def test_log_prob_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected points of shape \[N, 2\]"):
        moons().log_prob(torch.zeros(5, 3))


# --------------------------------------------------------------------------------------------------
# Exact samplers against analytic moments.
# --------------------------------------------------------------------------------------------------


def test_mog1d_default_and_moments() -> None:
    dataset = mog1d()
    assert isinstance(dataset, GaussianMixture)
    assert dataset.means.flatten().tolist() == [-3.0, 0.0, 4.0]
    assert dataset.stds.tolist() == [0.5, 1.0, 0.3]
    assert torch.allclose(dataset.weights, torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64))
    x, labels = draw(dataset, 200_000)
    x = x[:, 0]
    mean = 0.3 * -3.0 + 0.2 * 4.0
    variance = 0.3 * (9 + 0.25) + 0.5 * 1.0 + 0.2 * (16 + 0.09) - mean**2
    assert float(dataset.mean()) == pytest.approx(mean)
    assert float(dataset.variance()) == pytest.approx(variance)
    assert_close_to(x, mean)
    assert_close_to((x - mean) ** 2, variance)
    components = zip([-3.0, 0.0, 4.0], [0.5, 1.0, 0.3], [0.3, 0.5, 0.2], strict=True)
    for k, (mu, std, weight) in enumerate(components):
        mine = x[labels == k]
        # labels are the component each point was drawn from: its mean and width
        assert abs(len(mine) / len(x) - weight) < 5 * math.sqrt(weight * (1 - weight) / len(x))
        assert_close_to(mine, mu)
        assert_close_to((mine - mu) ** 2, std**2)


def test_mog2d_ring() -> None:
    dataset = mog2d(num_components=8, radius=4.0, std=0.3)
    x, labels = draw(dataset, 80_000)
    squared_radius = x.square().sum(-1)
    assert_close_to(squared_radius, 16.0 + 2 * 0.3**2)  # E|mu + s eps|^2 = r^2 + D s^2
    assert torch.bincount(labels, minlength=8).min() > 0.9 * len(x) / 8
    for k in range(8):
        angle = 2 * math.pi * k / 8
        mine = x[labels == k]
        assert_close_to(mine[:, 0], 4.0 * math.cos(angle))
        assert_close_to(mine[:, 1], 4.0 * math.sin(angle))
        assert_close_to((mine - mine.mean(0)).square().sum(-1), 2 * 0.3**2)


def test_moons_moments() -> None:
    noise = 0.05
    x, labels = draw(moons(noise), 100_000)
    s = 4.0 / 3.0
    upper_mean = (s * -0.5, s * (2 / math.pi - 0.25))  # E cos u = 0, E sin u = 2 / pi on [0, pi]
    second_x = s**2 * 0.75 + noise**2  # E (cos u - 1/2)^2 = 1/2 + 1/4
    second_y = s**2 * (0.5625 - 1 / math.pi) + noise**2  # E (sin u - 1/4)^2 = 1/2 - 1/pi + 1/16
    for label, sign in ((0, 1.0), (1, -1.0)):
        mine = x[labels == label]
        assert abs(len(mine) / len(x) - 0.5) < 0.01
        assert_close_to(mine[:, 0], sign * upper_mean[0])
        assert_close_to(mine[:, 1], sign * upper_mean[1])
        assert_close_to(mine[:, 0] ** 2, second_x)
        assert_close_to(mine[:, 1] ** 2, second_y)
        centre = torch.tensor([-2 / 3, -1 / 3], dtype=torch.float64) * sign
        assert_close_to((mine - centre).square().sum(-1), s**2 + 2 * noise**2)  # each moon has radius 4/3
        # the radial part of the noise is N(0, noise^2) (up to O(noise^2 / radius) curvature terms)
        assert float((mine - centre).norm(dim=-1).std()) == pytest.approx(noise, rel=0.02)
    assert float(x[:, 0].abs().max()) < 2.0 + 6 * noise  # spans about [-2, 2]


def test_swiss_roll_moments() -> None:
    noise = 0.25
    dataset = swiss_roll(noise)
    x, labels = draw(dataset, 100_000)
    a, b = 1.5 * math.pi, 4.5 * math.pi
    # t ~ U[a, b]: E t^2 = (b^3 - a^3) / (3 (b - a));
    # int t cos t dt = t sin t + cos t and int t sin t dt = sin t - t cos t give the mean.
    assert_close_to(x.square().sum(-1), (b**3 - a**3) / (3 * (b - a)) / 25 + 2 * noise**2)
    assert_close_to(x[:, 0], 6 * math.pi / (b - a) / 5)
    assert_close_to(x[:, 1], 2 / (b - a) / 5)
    assert dataset.num_classes == 0 and not labels.any()


def test_circles_radii() -> None:
    noise = 0.05
    x, labels = draw(circles(factor=0.5, noise=noise), 100_000)
    for label, radius in ((0, 2.0), (1, 1.0)):
        mine = x[labels == label]
        assert abs(len(mine) / len(x) - 0.5) < 0.01
        assert_close_to(mine.square().sum(-1), radius**2 + 2 * noise**2)
        assert float(mine.norm(dim=-1).std()) == pytest.approx(noise, rel=0.02)  # radial noise
        assert_close_to(mine[:, 0], 0.0)
        assert_close_to(mine[:, 1], 0.0)


@pytest.mark.parametrize("name", ["circles", "moons"])
def test_noiseless_curves_have_no_density(name: str) -> None:
    dataset = make_toy_dataset(name, noise=0.0)
    x, labels = draw(dataset, 1000)
    if name == "circles":  # exactly on the circles of radius 2 and 1
        assert torch.allclose(x.norm(dim=-1), torch.where(labels == 0, 2.0, 1.0).double(), atol=1e-6)
    else:  # exactly on the arcs of radius 4/3 around (-2/3, -1/3) and (2/3, 1/3)
        centre = torch.tensor([-2 / 3, -1 / 3], dtype=torch.float64) * (1 - 2 * labels[:, None])
        assert torch.allclose((x - centre).norm(dim=-1), torch.full((1000,), 4 / 3).double(), atol=1e-6)
    assert not dataset.has_density
    with pytest.raises(NotImplementedError, match="no density"):
        dataset.log_prob(x)


# --------------------------------------------------------------------------------------------------
# Densities: normalised, consistent with the samplers.
# --------------------------------------------------------------------------------------------------


def test_mog1d_density_integrates_to_one_and_matches_cdf() -> None:
    dataset = mog1d()
    h = 0.002
    grid = torch.arange(-10.0, 10.0, h, dtype=torch.float64) + h / 2
    density = dataset.prob(grid[:, None])
    assert float(density.sum() * h) == pytest.approx(1.0, abs=1e-9)
    # the CDF is the integral of the density (midpoint rule, error O(h^2))
    cumulative = torch.cumsum(density, 0) * h
    assert torch.allclose(dataset.cdf(grid + h / 2), cumulative, atol=1e-6)
    with pytest.raises(ValueError, match="one-dimensional"):
        mog2d().cdf(torch.zeros(3))


# name: (half-width of the square grid, spacing). A spacing <= noise / 2 resolves every bump, and the
# 8 x 8 coarse bins below hold whole fine cells (2 half-width / spacing is a multiple of 8).
GRIDS = {
    "mog2d": (6.4, 0.05),
    "moons": (2.5, 0.025),
    "swiss_roll": (4.8, 0.1),
    "circles": (2.5, 0.025),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_2d_density_integrates_to_one_and_matches_sampler(name: str) -> None:
    dataset = make_toy_dataset(name)
    half_width, h = GRIDS[name]
    axis = torch.arange(-half_width, half_width, h, dtype=torch.float64) + h / 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    mass = dataset.prob(grid) * h * h
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-9)

    # The sampler and the density describe the same distribution: counts of samples in 8 x 8 coarse
    # bins match the integrated density within binomial error.
    n, bins = 40_000, 8
    x, _ = draw(dataset, n, seed=11)
    edges = torch.linspace(-half_width, half_width, bins + 1, dtype=torch.float64)
    cell = lambda points: (  # noqa: E731
        torch.bucketize(points[:, 0].contiguous(), edges[1:-1]) * bins
        + torch.bucketize(points[:, 1].contiguous(), edges[1:-1])
    )
    expected = torch.zeros(bins * bins, dtype=torch.float64).index_add_(0, cell(grid), mass) * n
    counts = torch.bincount(cell(x), minlength=bins * bins).double()
    tolerance = 5 * (expected * (1 - expected / n)).sqrt() + 3
    assert bool(((counts - expected).abs() <= tolerance).all()), (counts - expected).abs().max()


def test_circles_closed_form_matches_quadrature() -> None:
    dataset = circles(factor=0.3, noise=0.1)
    assert isinstance(dataset, Circles)
    points = torch.cat([draw(dataset, 500)[0], torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.5, -0.4]])])
    exact = dataset.log_prob(points)
    quadrature = NoisyCurves.log_prob(dataset, points)
    assert torch.allclose(exact, quadrature, rtol=0, atol=1e-8)


# --------------------------------------------------------------------------------------------------
# Mixtures: labels, existing API and the exact denoiser.
# --------------------------------------------------------------------------------------------------


def test_gaussian_mixture_api_is_kept() -> None:
    mixture = GaussianMixture([[0.0, 0.0], [3.0, 0.0]], [1.0, 0.5])
    assert (mixture.name, mixture.num_components, mixture.num_classes, mixture.dim) == ("mog", 2, 2, 2)
    assert torch.allclose(mixture.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert isinstance(mixture.noised(0.5), GaussianMixture)
    x = torch.tensor([[0.0, 0.0]])
    assert float(mixture.log_prob(x)) == pytest.approx(
        math.log(0.5 / (2 * math.pi) + 0.5 / (2 * math.pi * 0.25) * math.exp(-9 / (2 * 0.25)))
    )


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_optimal_denoiser_convenience(prediction: str) -> None:
    dataset = mog1d()
    schedule = make_schedule("linear", 100)
    model = dataset.optimal_denoiser(schedule, prediction=prediction)
    assert isinstance(model, OptimalDenoiser) and model.mixture is dataset
    x_t = torch.linspace(-5, 5, 11, dtype=torch.float64)[:, None]
    t = torch.full((11,), 40)
    alpha_bar = float(schedule.alphas_cumprod[40])
    eps = -math.sqrt(1 - alpha_bar) * dataset.noised(alpha_bar).score(x_t)  # Tweedie
    x0 = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    expected = {"eps": eps, "x0": x0, "v": math.sqrt(alpha_bar) * eps - math.sqrt(1 - alpha_bar) * x0}
    assert torch.allclose(model(x_t, t), expected[prediction], atol=1e-10)


def test_optimal_denoiser_rejects_unknown_prediction() -> None:
    with pytest.raises(ValueError, match="unknown prediction 'score'; choose one of eps, x0, v"):
        mog2d().optimal_denoiser(make_schedule("linear", 100), prediction="score")
