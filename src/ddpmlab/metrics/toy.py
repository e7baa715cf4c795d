"""Distances between samples of low-dimensional (toy) distributions, and the floors they hit.

Every sample-based distance is positive even for a perfect sampler, because two finite samples of
the same distribution differ. :func:`noise_floor` measures that floor (the distance between two
independent exact samples of the same size), and :func:`toy_metrics` reports each distance next to
its floor, so that "0.031" can be read as "at the floor" or "ten times the floor".

=========================  =======  ===========================================================
function                   data     what it computes (all exact on the given samples)
=========================  =======  ===========================================================
:func:`wasserstein_1d`     1-D      W1 = int |F_a(x) - F_b(x)| dx between the empirical CDFs
:func:`ks_statistic`       1-D      sup_x |F_a(x) - F_b(x)| (two samples, or a sample and a CDF)
:func:`sliced_wasserstein` any D    the mean of W1 over random one-dimensional projections
:func:`energy_distance`    any D    2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely)
=========================  =======  ===========================================================

Inputs may be tensors (any device) or arrays, [N] or [N, 1] for 1-D data and [N, D] otherwise; they
are copied to the CPU as float64 and the results are Python floats.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "wasserstein_1d",
    "ks_statistic",
    "sliced_wasserstein",
    "energy_distance",
    "noise_floor",
    "toy_metrics",
]

ArrayLike = Any  # a torch.Tensor, a NumPy array or a nested sequence of numbers
CDF = Callable[[torch.Tensor], Any]

# Work in blocks of at most this many float64 numbers (32 MiB) in the O(N^2) and O(N P) computations.
_BLOCK_ELEMENTS = 2**22


def _as_points(x: ArrayLike, label: str) -> torch.Tensor:
    """x as a float64 CPU tensor [N, D] (1-D input becomes [N, 1])."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().to("cpu", torch.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{label} must be [N] or [N, D] points, got shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{label} is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{label} contains NaN or infinity")
    return x


def _as_values(x: ArrayLike, label: str) -> torch.Tensor:
    """One-dimensional data as a float64 CPU tensor [N]."""
    x = _as_points(x, label)
    if x.shape[1] != 1:
        raise ValueError(f"{label} must be one-dimensional ([N] or [N, 1]), got shape {list(x.shape)}")
    return x[:, 0]


def _same_dim(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples of different dimensions: {a.shape[1]} and {b.shape[1]}")


# --------------------------------------------------------------------------------------------------
# One-dimensional distances.
# --------------------------------------------------------------------------------------------------


def _w1_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W1 between the empirical distributions of each row: a [P, N] and b [P, M]; returns [P].

    Equal sizes: W1 = mean_i |a_(i) - b_(i)| over the sorted rows (the optimal coupling matches order
    statistics). Otherwise W1 = int |F_a - F_b| dx, a finite sum over the gaps between the merged
    sorted points, on each of which both empirical CDFs are constant. (NumPy's vectorised sort is several
    times faster than torch's on the CPU.)
    """
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return np.abs(np.sort(a, axis=1) - np.sort(b, axis=1)).mean(axis=1)
    merged = np.concatenate([a, b], axis=1)
    order = np.argsort(merged, axis=1)
    gaps = np.diff(np.take_along_axis(merged, order, axis=1), axis=1)
    from_a = order[:, :-1] < n
    # Inside a run of tied values the counts are arbitrary, but there the gap is 0.
    cdf_a = np.cumsum(from_a, axis=1) / n
    cdf_b = np.cumsum(~from_a, axis=1) / m
    return (np.abs(cdf_a - cdf_b) * gaps).sum(axis=1)


def wasserstein_1d(a: ArrayLike, b: ArrayLike) -> float:
    """The exact 1-Wasserstein distance between two one-dimensional empirical distributions.

        W1(a, b) = int |F_a(x) - F_b(x)| dx = int_0^1 |F_a^-1(q) - F_b^-1(q)| dq,

    with F the empirical CDFs. For equal sizes this is mean_i |a_(i) - b_(i)| over the sorted samples;
    for unequal sizes the CDF integral is summed exactly over the merged sample.

    Args:
        a: [N] or [N, 1] samples.
        b: [M] or [M, 1] samples.
    """
    a, b = _as_values(a, "a").numpy(), _as_values(b, "b").numpy()
    return float(_w1_rows(a[None], b[None])[0])


def wasserstein_1d_to_cdf(
    a: ArrayLike, cdf: CDF, support: tuple[float, float], num_points: int = 400_001
) -> float:
    """W1 between the empirical distribution of samples ``a`` and a continuous distribution F:

        W1 = int |F_a(x) - F(x)| dx,

    integrated with the trapezoid rule on ``num_points`` points spanning ``support`` and the samples
    (F must be ~0 below and ~1 above ``support``). Against the true distribution there is no second
    sample's noise, so this is the lower-variance way to measure 1-D samples.

    Args:
        a: [N] or [N, 1] samples.
        cdf: a callable mapping float64 values [M] (a tensor) to F(values) [M].
        support: (low, high) outside which F is 0 and 1 to within the precision wanted.
    """
    values = np.sort(_as_values(a, "a").numpy())
    low = min(float(support[0]), float(values[0])) - 1e-9
    high = max(float(support[1]), float(values[-1])) + 1e-9
    grid = np.linspace(low, high, num_points)
    true_cdf = np.asarray(cdf(torch.from_numpy(grid)), dtype=np.float64).reshape(-1)
    empirical = np.searchsorted(values, grid, side="right") / values.size
    gap = np.abs(empirical - true_cdf)
    return float(((gap[1:] + gap[:-1]) * 0.5 * np.diff(grid)).sum())


def ks_statistic(a: ArrayLike, b: ArrayLike | CDF) -> float:
    """The Kolmogorov-Smirnov statistic D = sup_x |F_a(x) - F_b(x)|.

    Args:
        a: [N] or [N, 1] samples; F_a is their empirical CDF.
        b: either [M] or [M, 1] samples (the two-sample statistic, as ``scipy.stats.ks_2samp``) or a
            continuous CDF, a callable mapping float64 values [N] (a tensor) to F(values) [N] (the
            one-sample statistic, as ``scipy.stats.kstest``), such as ``GaussianMixture.cdf``.
    """
    a = np.sort(_as_values(a, "a").numpy())
    n = a.size
    if callable(b):
        cdf = np.asarray(b(torch.from_numpy(a)), dtype=np.float64).reshape(-1)
        if cdf.shape != a.shape:
            raise ValueError(f"the CDF returned shape {list(cdf.shape)} for {n} points")
        steps = np.arange(n + 1) / n
        # F_a jumps from (i - 1) / n to i / n at the i-th order statistic.
        return float(np.maximum(steps[1:] - cdf, cdf - steps[:-1]).max())
    b = np.sort(_as_values(b, "b").numpy())
    merged = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, merged, side="right") / n
    cdf_b = np.searchsorted(b, merged, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


# --------------------------------------------------------------------------------------------------
# Distances in any dimension.
# --------------------------------------------------------------------------------------------------


def sliced_wasserstein(
    a: ArrayLike, b: ArrayLike, num_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """The sliced 1-Wasserstein distance (sliced W1, not W2), a Monte Carlo estimate over directions:

        SW1(a, b) = E_theta [ W1(theta . a, theta . b) ],  theta uniform on the unit sphere S^{D-1},

    estimated with ``num_projections`` random directions (normalised Gaussian vectors drawn from
    ``generator``); each W1 of the projections is exact (see :func:`wasserstein_1d`). For a shift,
    SW1(a, a + s) = |s| E|theta_1|, which is 2 |s| / pi in 2-D.

    Args:
        a: [N, D] samples.
        b: [M, D] samples.
        num_projections: P, the number of directions.
        generator: the source of the directions (a CPU generator; the global one if None).
    """
    a, b = _as_points(a, "a"), _as_points(b, "b")
    _same_dim(a, b)
    if num_projections < 1:
        raise ValueError(f"num_projections must be positive, got {num_projections}")
    directions = torch.randn(num_projections, a.shape[1], generator=generator, dtype=torch.float64)
    directions = (directions / directions.norm(dim=1, keepdim=True)).numpy()
    a, b = a.numpy(), b.numpy()
    per_block = max(1, _BLOCK_ELEMENTS // (len(a) + len(b)))
    total = 0.0
    for start in range(0, num_projections, per_block):
        block = directions[start : start + per_block]
        total += float(_w1_rows(block @ a.T, block @ b.T).sum())  # projections [P_block, N], [P_block, M]
    return total / num_projections


def _pairwise_distance_sum(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """sum_{i,j} |a_i - b_j| (Euclidean) in blocks of rows; with b None, sum_{i,j} |a_i - a_j| using
    the symmetry (only blocks on and above the diagonal are computed)."""
    rows = max(1, _BLOCK_ELEMENTS // len(a if b is None else b))
    total = 0.0
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        if b is None:
            total += float(_distances(block, block).sum())
            total += 2.0 * float(_distances(block, a[start + rows :]).sum())
        else:
            total += float(_distances(block, b).sum())
    return total


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Direct differences, not the |a|^2 + |b|^2 - 2 a.b expansion, which loses digits for close points.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _energy_terms(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """The three V-statistic means: (1/(NM)) sum_ij |a_i - b_j|, (1/N^2) sum_ij |a_i - a_j| and
    (1/M^2) sum_ij |b_i - b_j|."""
    n, m = len(a), len(b)
    cross = _pairwise_distance_sum(a, b) / (n * m)
    return cross, _pairwise_distance_sum(a) / n**2, _pairwise_distance_sum(b) / m**2


def energy_distance(a: ArrayLike, b: ArrayLike, unbiased: bool = False) -> float:
    """Szekely's energy distance between two samples (the squared form, without a square root):

        E(a, b) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,   X ~ a, Y ~ b, |.| Euclidean.

    By default every expectation is the V-statistic, the plain mean over all pairs (i, j) including
    i = j: this is exactly the energy distance between the two empirical distributions, so it is >= 0
    and 0 only for identical samples, and for two independent samples of one distribution its
    expectation is E|X - X'| (1/N + 1/M). With ``unbiased`` the within-sample terms are U-statistics
    (pairs i != j), an unbiased estimate of the population value that can be slightly negative.
    (``scipy.stats.energy_distance``, 1-D only, returns sqrt of the V-statistic form.)

    The O(N M) distances are summed in blocks, never stored: 10k x 10k points take about a second.

    Args:
        a: [N, D] (or [N] for 1-D) samples.
        b: [M, D] samples.
    """
    a, b = _as_points(a, "a"), _as_points(b, "b")
    _same_dim(a, b)
    n, m = len(a), len(b)
    cross, within_a, within_b = _energy_terms(a, b)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased energy distance needs at least two points in each sample")
        within_a *= n / (n - 1)
        within_b *= m / (m - 1)
    return 2.0 * cross - within_a - within_b


# --------------------------------------------------------------------------------------------------
# Floors and the metrics of a toy run.
# --------------------------------------------------------------------------------------------------


def noise_floor(
    dataset: Any,
    n: int,
    metric: Callable[[torch.Tensor, torch.Tensor], float],
    seeds: Sequence[int] = (0, 1, 2),
) -> float:
    """The value a perfect sampler would get: the median over ``seeds`` of ``metric(x, y)`` for two
    independent exact samples x, y of size n from ``dataset``.

    Args:
        dataset: a toy dataset (anything with ``sample(n, generator)``).
        n: the sample size, the same as the samples the floor is compared with.
        metric: a function of two samples, e.g. :func:`wasserstein_1d`; wrap metrics that take more
            arguments: ``lambda x, y: sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))``.
        seeds: one pair of samples per seed (drawn with ``torch.Generator().manual_seed(seed)``).
    """
    if not seeds:
        raise ValueError("noise_floor needs at least one seed")
    values = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        values.append(float(metric(dataset.sample(n, generator), dataset.sample(n, generator))))
    return statistics.median(values)


def _kolmogorov_median(n: int) -> float:
    """The median of the one-sample KS statistic of n points under the null (the exact distribution of
    sup |F_n - F| for a continuous F, ``scipy.stats.kstwo``)."""
    from scipy.stats import kstwo

    return float(kstwo(n).median())


def toy_metrics(
    samples: ArrayLike,
    dataset: Any,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    num_projections: int = 256,
) -> dict[str, float]:
    """Distances between generated samples and a toy dataset, each with its floor for the same n.

    One-dimensional data (``dataset.dim`` = 1):
        ``w1``: W1 to the true distribution (:func:`wasserstein_1d_to_cdf`) when the dataset has a
        ``cdf``; ``w1_floor``: the same distance for an exact sample of size n (median over ``seeds``),
        what a perfect sampler would get. Without a CDF both equal the two-sample values below.
        ``w1_two_sample``: :func:`wasserstein_1d` to a fresh exact sample of size n drawn with
        ``generator``; ``w1_two_sample_floor``: its :func:`noise_floor` (median over ``seeds``);
        ``ks``: :func:`ks_statistic` against ``dataset.cdf`` when the dataset has one (else against the
        fresh sample); ``ks_floor``: the exact median of the one-sample KS statistic for n points
        (``scipy.stats.kstwo``), or the :func:`noise_floor` of the two-sample statistic.

    Two or more dimensions:
        ``sliced_w1``: :func:`sliced_wasserstein` to a fresh exact sample of size n (directions drawn
        from ``generator``); ``sliced_w1_floor``: its :func:`noise_floor`, with the same directions;
        ``energy``: :func:`energy_distance` (V-statistic) to the same fresh sample; ``energy_floor``: the
        expected value for a perfect sampler, 2 E|X - X'| / n, with E|X - X'| estimated without bias
        from the fresh sample (the expectation is exact for the V-statistic, so no extra samples are
        needed; its median is a little lower, the statistic being skewed).

    Samples with NaN or infinity (a diverged sampler) give NaN distances and the usual floors.

    Args:
        samples: [n, D] (or [n] for 1-D) generated samples.
        dataset: the toy dataset they should follow.
        generator: the source of the reference sample and the projections (seed 0 if None).

    Returns:
        a dict of floats, ready to be written to ``metrics.jsonl``.
    """
    samples = torch.as_tensor(np.asarray(samples) if not torch.is_tensor(samples) else samples)
    samples = samples.detach().to("cpu", torch.float64)
    if samples.ndim == 1 and dataset.dim == 1:
        samples = samples[:, None]
    if samples.ndim != 2 or samples.shape[1] != dataset.dim or len(samples) == 0:
        raise ValueError(f"expected samples of shape [n, {dataset.dim}], got {list(samples.shape)}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    reference = dataset.sample(len(samples), generator).double()
    if dataset.dim == 1:
        return _metrics_1d(samples, reference, dataset, seeds)
    return _metrics_nd(samples, reference, dataset, generator, seeds, num_projections)


def _metrics_1d(
    samples: torch.Tensor, reference: torch.Tensor, dataset: Any, seeds: Sequence[int]
) -> dict[str, float]:
    """:func:`toy_metrics` of one-dimensional data."""
    n, finite, nan = len(samples), bool(torch.isfinite(samples).all()), float("nan")
    cdf = getattr(dataset, "cdf", None)
    if cdf is not None:
        ks, ks_floor = (ks_statistic(samples, cdf) if finite else nan), _kolmogorov_median(n)
    else:
        ks = ks_statistic(samples, reference) if finite else nan
        ks_floor = noise_floor(dataset, n, ks_statistic, seeds)
    result = {
        "w1_two_sample": wasserstein_1d(samples, reference) if finite else nan,
        "w1_two_sample_floor": noise_floor(dataset, n, wasserstein_1d, seeds),
        "ks": ks,
        "ks_floor": ks_floor,
    }
    if cdf is None:
        result["w1"], result["w1_floor"] = result["w1_two_sample"], result["w1_two_sample_floor"]
        return result
    wide = dataset.sample(200_000, torch.Generator().manual_seed(0)).double()
    spread = float(wide.std())
    support = (float(wide.min()) - 2 * spread, float(wide.max()) + 2 * spread)

    def to_truth(x: torch.Tensor) -> float:
        return wasserstein_1d_to_cdf(x, cdf, support)

    # This floor is cheap, so it takes more seeds: W1 on separated modes is dominated by how many
    # points each mode receives, a noisy quantity.
    floor_seeds = range(max(10, len(seeds)))
    floors = [to_truth(dataset.sample(n, torch.Generator().manual_seed(s))) for s in floor_seeds]
    result["w1"] = to_truth(samples) if finite else nan
    result["w1_floor"] = statistics.median(floors)
    return result


def _metrics_nd(
    samples: torch.Tensor,
    reference: torch.Tensor,
    dataset: Any,
    generator: torch.Generator,
    seeds: Sequence[int],
    num_projections: int,
) -> dict[str, float]:
    """:func:`toy_metrics` of data in two or more dimensions."""
    n, finite, nan = len(samples), bool(torch.isfinite(samples).all()), float("nan")
    direction_seed = int(torch.randint(2**62, (), generator=generator))

    def floor_metric(x: torch.Tensor, y: torch.Tensor) -> float:
        return sliced_wasserstein(x, y, num_projections, torch.Generator().manual_seed(direction_seed))

    sliced = floor_metric(samples, reference) if finite else nan
    if finite:
        cross, within_samples, within_reference = _energy_terms(samples, reference)
        energy = 2.0 * cross - within_samples - within_reference
    else:
        energy, within_reference = nan, _pairwise_distance_sum(reference) / n**2
    mean_distance = within_reference * n / (n - 1) if n > 1 else 0.0  # U-statistic of E|X - X'|
    return {
        "sliced_w1": sliced,
        "sliced_w1_floor": noise_floor(dataset, n, floor_metric, seeds),
        "energy": energy,
        "energy_floor": 2.0 * mean_distance / n,
    }
