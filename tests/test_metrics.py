"""Toy metrics: exact values on constructed cases, parity with SciPy and brute force, floors."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.stats
import torch

import ddpmlab.metrics.toy as toy_metrics_module
from ddpmlab.data.toy import make_toy_dataset, mog1d
from ddpmlab.metrics import (
    energy_distance,
    ks_statistic,
    noise_floor,
    sliced_wasserstein,
    toy_metrics,
    wasserstein_1d,
)


def normal(n: int, seed: int, dim: int | None = None, shift: float = 0.0) -> torch.Tensor:
    shape = (n,) if dim is None else (n, dim)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# --------------------------------------------------------------------------------------------------
# Wasserstein-1 in one dimension.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(5, 5), (3, 7)])
def test_w1_of_point_masses_is_their_distance(n: int, m: int) -> None:
    assert wasserstein_1d(torch.zeros(n), torch.full((m,), 3.0)) == pytest.approx(3.0, abs=1e-12)


def test_w1_of_unit_shift_of_normals() -> None:
    # W1(N(0,1), N(1,1)) = 1; the estimate from 20k + 20k points is within a few times sqrt(2 / n).
    value = wasserstein_1d(normal(20_000, 0), normal(20_000, 1, shift=1.0))
    assert value == pytest.approx(1.0, abs=0.04)


def test_w1_shift_invariance_symmetry_and_identity() -> None:
    a, b = normal(500, 0), normal(300, 1, shift=0.4)
    assert wasserstein_1d(a + 7.0, b + 7.0) == pytest.approx(wasserstein_1d(a, b), abs=1e-12)
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_1d(b, a), abs=1e-12)
    assert wasserstein_1d(a, a + 2.5) == pytest.approx(2.5, abs=1e-12)  # a shift moves every point by 2.5
    assert wasserstein_1d(a, a[torch.randperm(500)]) == 0.0
    assert wasserstein_1d(a[:, None], b) == pytest.approx(wasserstein_1d(a, b))  # [N, 1] is accepted


@pytest.mark.parametrize(("n", "m", "integers"), [(400, 400, False), (300, 457, False), (120, 75, True)])
def test_w1_matches_scipy(n: int, m: int, integers: bool) -> None:
    a, b = normal(n, 2) * 3, normal(m, 3, shift=0.5) * 2
    if integers:  # many ties
        a, b = a.round(), b.round()
    expected = scipy.stats.wasserstein_distance(a.numpy(), b.numpy())
    assert wasserstein_1d(a, b) == pytest.approx(expected, rel=1e-12)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        wasserstein_1d(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN or infinity"):
        ks_statistic(torch.tensor([0.0, float("nan")]), torch.zeros(3))
    with pytest.raises(ValueError, match="different dimensions"):
        energy_distance(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="empty"):
        sliced_wasserstein(torch.zeros(0, 2), torch.zeros(4, 2))


# --------------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "integers"), [(500, 500, False), (300, 457, False), (200, 90, True)])
def test_ks_two_sample_matches_scipy(n: int, m: int, integers: bool) -> None:
    a, b = normal(n, 4), normal(m, 5, shift=0.2)
    if integers:
        a, b = (2 * a).round(), (2 * b).round()
    expected = scipy.stats.ks_2samp(a.numpy(), b.numpy()).statistic
    assert ks_statistic(a, b) == pytest.approx(expected, abs=1e-12)
    assert ks_statistic(b, a) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", [7, 1000])
@pytest.mark.parametrize("shift", [-0.3, 0.0, 0.3])
def test_ks_against_a_cdf_matches_scipy_kstest(n: int, shift: float) -> None:
    dataset = mog1d()
    x = dataset.sample(n, torch.Generator().manual_seed(0)).double()[:, 0] + shift
    expected = scipy.stats.kstest(x.numpy(), lambda v: dataset.cdf(torch.from_numpy(v)).numpy()).statistic
    assert ks_statistic(x, dataset.cdf) == pytest.approx(expected, abs=1e-12)


def test_ks_grows_with_a_shift() -> None:
    dataset = mog1d()
    x = dataset.sample(1000, torch.Generator().manual_seed(0)).double()[:, 0]
    assert ks_statistic(x + 1.0, dataset.cdf) > 5 * ks_statistic(x, dataset.cdf)
    assert ks_statistic(x, x.flip(0)) == 0.0


# --------------------------------------------------------------------------------------------------
# Sliced Wasserstein.
# --------------------------------------------------------------------------------------------------


def test_sliced_w1_of_a_shift_is_mean_absolute_projection() -> None:
    a = normal(2000, 0, dim=2)
    shift = torch.tensor([1.5, -2.0], dtype=torch.float64)  # |shift| = 2.5
    value = sliced_wasserstein(a, a + shift, num_projections=64, generator=torch.Generator().manual_seed(9))
    # exactly: every projected W1 is |theta . shift|, for the same 64 directions
    directions = torch.randn(64, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    assert value == pytest.approx(float((directions @ shift).abs().mean()), abs=1e-12)
    # and in expectation |shift| E|cos phi| = 2 |shift| / pi (std of |cos phi| is 0.31)
    many = sliced_wasserstein(a, a + shift, num_projections=4000, generator=torch.Generator().manual_seed(1))
    assert many == pytest.approx(2 * 2.5 / math.pi, abs=4 * 2.5 * 0.31 / math.sqrt(4000))


def test_sliced_w1_properties() -> None:
    a, b = normal(400, 0, dim=2), normal(250, 1, dim=2, shift=0.3)
    seeded = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert sliced_wasserstein(a, b, generator=seeded()) == pytest.approx(
        sliced_wasserstein(b, a, generator=seeded()), abs=1e-12
    )
    assert sliced_wasserstein(a, a.flip(0), generator=seeded()) == 0.0
    # in one dimension every direction is +-1, so sliced W1 is W1
    assert sliced_wasserstein(a[:, :1], b[:, :1], num_projections=5) == pytest.approx(
        wasserstein_1d(a[:, 0], b[:, 0]), abs=1e-12
    )


def test_sliced_w1_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = normal(300, 0, dim=3), normal(200, 1, dim=3)
    whole = sliced_wasserstein(a, b, 50, torch.Generator().manual_seed(0))
    monkeypatch.setattr(toy_metrics_module, "_BLOCK_ELEMENTS", 3000)  # 6 projections per block
    assert sliced_wasserstein(a, b, 50, torch.Generator().manual_seed(0)) == pytest.approx(whole, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Energy distance.
# --------------------------------------------------------------------------------------------------


def brute_force_energy(a: np.ndarray, b: np.ndarray, unbiased: bool) -> float:
    def mean_distance(x: np.ndarray, y: np.ndarray, same: bool) -> float:
        distances = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
        pairs = len(x) * (len(x) - 1) if same and unbiased else len(x) * len(y)
        return distances.sum() / pairs

    return 2 * mean_distance(a, b, False) - mean_distance(a, a, True) - mean_distance(b, b, True)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("dim", [1, 3])
def test_energy_matches_brute_force(monkeypatch: pytest.MonkeyPatch, dim: int, unbiased: bool) -> None:
    a, b = normal(90, 0, dim=dim), normal(70, 1, dim=dim, shift=0.3)
    expected = brute_force_energy(a.numpy(), b.numpy(), unbiased)
    assert energy_distance(a, b, unbiased=unbiased) == pytest.approx(expected, rel=1e-10)
    monkeypatch.setattr(toy_metrics_module, "_BLOCK_ELEMENTS", 500)  # blocks of 5-7 rows
    assert energy_distance(a, b, unbiased=unbiased) == pytest.approx(expected, rel=1e-10)


def test_energy_matches_scipy_in_one_dimension() -> None:
    a, b = normal(300, 0), normal(200, 1, shift=0.5)
    # SciPy returns the square root of the V-statistic energy distance.
    assert energy_distance(a, b) == pytest.approx(scipy.stats.energy_distance(a.numpy(), b.numpy()) ** 2)


def test_energy_separates_distributions() -> None:
    a, b, c = normal(2000, 0, dim=2), normal(2000, 1, dim=2), normal(2000, 2, dim=2, shift=0.3)
    assert energy_distance(a, a) == 0.0
    same, different = energy_distance(a, b), energy_distance(a, c)
    # same distribution: about the expected floor E|X - X'| (2 / n) = sqrt(pi) * 2 / 2000
    assert 0 < same < 3 * math.sqrt(math.pi) * 2 / 2000
    assert different > 10 * same


def test_energy_floor_is_the_expected_v_statistic() -> None:
    # For two independent samples of size n, E[V] = 2 E|X - X'| / n: check by Monte Carlo.
    dataset = make_toy_dataset("moons")
    n = 400
    samples = [dataset.sample(2 * n, torch.Generator().manual_seed(seed)) for seed in range(40)]
    values = [energy_distance(x[:n], x[n:]) for x in samples]
    reference = dataset.sample(20_000, torch.Generator().manual_seed(99)).double()
    mean_distance = float(torch.pdist(reference[:4000]).mean())
    assert statistics.mean(values) == pytest.approx(2 * mean_distance / n, rel=0.2)


# --------------------------------------------------------------------------------------------------
# Floors and toy_metrics.
# --------------------------------------------------------------------------------------------------


def test_noise_floor_is_the_median_over_seeds() -> None:
    dataset = mog1d()
    floor = noise_floor(dataset, 500, wasserstein_1d, seeds=(0, 1, 2))
    values = []
    for seed in (0, 1, 2):
        generator = torch.Generator().manual_seed(seed)
        values.append(wasserstein_1d(dataset.sample(500, generator), dataset.sample(500, generator)))
    assert floor == statistics.median(values)
    assert noise_floor(dataset, 500, wasserstein_1d, seeds=(0, 1, 2)) == floor  # deterministic
    # the floor falls like 1 / sqrt(n)
    assert noise_floor(dataset, 20_000, wasserstein_1d) < noise_floor(dataset, 200, wasserstein_1d) / 4


def test_toy_metrics_1d() -> None:
    dataset = mog1d()
    exact = dataset.sample(5000, torch.Generator().manual_seed(42))
    metrics = toy_metrics(exact, dataset, torch.Generator().manual_seed(0))
    assert set(metrics) == {"w1", "w1_floor", "w1_two_sample", "w1_two_sample_floor", "ks", "ks_floor"}
    assert metrics["ks_floor"] == pytest.approx(scipy.stats.kstwo(5000).median())
    assert metrics["w1_two_sample_floor"] == noise_floor(dataset, 5000, wasserstein_1d)
    # the floor to the truth is about 1/sqrt(2) of the two-sample floor (one sample's noise instead of two)
    assert 0.3 < metrics["w1_floor"] / metrics["w1_two_sample_floor"] < 1.2
    # exact samples sit near the floors; shifted ones far above them
    assert metrics["w1"] < 4 * metrics["w1_floor"] and metrics["ks"] < 4 * metrics["ks_floor"]
    shifted = toy_metrics(exact[:, 0] + 1.0, dataset, torch.Generator().manual_seed(0))  # [n] is accepted
    assert shifted["w1"] > 5 * shifted["w1_floor"] and shifted["ks"] > 5 * shifted["ks_floor"]
    assert shifted["w1"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("name", ["mog2d", "moons"])
def test_toy_metrics_2d(name: str) -> None:
    dataset = make_toy_dataset(name)
    exact = dataset.sample(3000, torch.Generator().manual_seed(42))
    metrics = toy_metrics(exact, dataset, torch.Generator().manual_seed(0))
    assert set(metrics) == {"sliced_w1", "sliced_w1_floor", "energy", "energy_floor"}
    assert all(isinstance(value, float) and value > 0 for value in metrics.values())
    assert metrics["sliced_w1"] < 4 * metrics["sliced_w1_floor"]
    assert metrics["energy"] < 4 * metrics["energy_floor"]
    # energy_floor = 2 E|X - X'| / n, E|X - X'| here from an independent sample
    independent = dataset.sample(4000, torch.Generator().manual_seed(7)).double()
    mean_distance = float(torch.pdist(independent).mean())
    assert metrics["energy_floor"] == pytest.approx(2 * mean_distance / 3000, rel=0.03)
    worse = toy_metrics(1.2 * exact, dataset, torch.Generator().manual_seed(0))  # 20% too wide
    assert worse["sliced_w1"] > 3 * worse["sliced_w1_floor"] and worse["energy"] > 5 * worse["energy_floor"]
    # the same generator gives the same numbers
    assert toy_metrics(exact, dataset, torch.Generator().manual_seed(0)) == metrics


def test_toy_metrics_of_diverged_samples_are_nan() -> None:
    dataset = make_toy_dataset("circles")
    samples = dataset.sample(200, torch.Generator().manual_seed(0))
    samples[3, 1] = float("inf")
    metrics = toy_metrics(samples, dataset)
    assert math.isnan(metrics["sliced_w1"]) and math.isnan(metrics["energy"])
    assert metrics["sliced_w1_floor"] > 0 and metrics["energy_floor"] > 0


def test_toy_metrics_checks_the_dimension() -> None:
    with pytest.raises(ValueError, match=r"expected samples of shape \[n, 2\]"):
        toy_metrics(torch.zeros(10, 3), make_toy_dataset("moons"))


def test_wasserstein_to_cdf_matches_a_huge_reference_sample():
    """W1(samples, F) equals W1 to a very large exact sample from F (which converges to F)."""
    from ddpmlab.data.toy import mog1d
    from ddpmlab.metrics import wasserstein_1d, wasserstein_1d_to_cdf

    data = mog1d()
    x = data.sample(2000, torch.Generator().manual_seed(0))
    exact = wasserstein_1d_to_cdf(x, data.cdf, (-8.0, 8.0))
    huge = data.sample(2_000_000, torch.Generator().manual_seed(1))
    assert exact == pytest.approx(wasserstein_1d(x, huge), rel=0.03)
    y = data.sample(100_000, torch.Generator().manual_seed(2))
    own = wasserstein_1d_to_cdf(y, data.cdf, (-8.0, 8.0))
    shifted = wasserstein_1d_to_cdf(y + 0.5, data.cdf, (-8.0, 8.0))
    # W1(F shifted by 0.5, F) = 0.5 exactly, so by the triangle inequality |shifted - 0.5| <= W1(y, F)
    assert abs(shifted - 0.5) <= own + 1e-4
