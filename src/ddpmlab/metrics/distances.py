"""Distances between two sets of image features: the Frechet distance (FID) and the kernel distance (KID).

Both take features, [N, D] tensors or arrays, made by a feature network from images (the Inception
network of :mod:`ddpmlab.metrics.inception` for FID / KID; any other network, e.g. a classifier
trained on the data, gives "FD / KD in that network's features", which must not be called FID).

=====================================  ===========================================================
function                               what it computes
=====================================  ===========================================================
:func:`frechet_distance`               the Frechet (2-Wasserstein) distance between the Gaussians
                                       fitted to the two sets (Heusel et al. 2017); biased upwards
                                       at small N, so compare numbers only at equal N
:func:`kernel_inception_distance`      the unbiased squared MMD with a cubic polynomial kernel,
                                       averaged over random subsets (Binkowski et al. 2018); no bias,
                                       the number to trust at small N
=====================================  ===========================================================

Statistics are float64 whatever the features' dtype. Neither number means much alone: report it with
N, the feature network and the real-vs-real floor at the same N (:func:`ddpmlab.metrics.real_floor`,
:func:`ddpmlab.metrics.compare_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ddpmlab.metrics.arrays import ArrayLike, as_features, check_same_dim

__all__ = ["FeatureStats", "frechet_distance", "KIDResult", "kernel_inception_distance"]


# --------------------------------------------------------------------------------------------------
# Frechet distance.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """The mean and covariance of a feature set: everything the Frechet distance needs from it.

    Compute them once for a large real set and save them (:meth:`save`), then compare every run's
    samples with them (:func:`frechet_distance` takes stats or features on either side).

    Attributes:
        mean: [D] float64, mu = (1/N) sum_i x_i.
        cov: [D, D] float64, the unbiased sample covariance (1/(N-1)) sum_i (x_i - mu)(x_i - mu)^T, as
            ``numpy.cov`` and the reference FID code.
        n: N, the number of feature vectors (the Frechet distance's bias depends on it).
        network: the feature network's name ("" if unknown); two stats with different non-empty
            names cannot be compared.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int
    network: str = ""

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
            raise ValueError(f"FeatureStats needs mean [D] and cov [D, D], got {mean.shape} and {cov.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    @classmethod
    def from_features(cls, features: ArrayLike, network: str = "") -> FeatureStats:
        """Mean and covariance of features [N, D] (N >= 2), in float64 on the features' device."""
        x = as_features(features, "features")
        if len(x) < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(x)}")
        mean = x.mean(dim=0)
        centred = x - mean
        cov = (centred.T @ centred) / (len(x) - 1)
        return cls(mean.cpu().numpy(), cov.cpu().numpy(), len(x), network)

    def save(self, path: str | Path) -> Path:
        """Write the stats to an ``.npz`` file (plain arrays, no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez(handle, mean=self.mean, cov=self.cov, n=np.int64(self.n), network=np.str_(self.network))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read stats written by :meth:`save` (loaded with ``allow_pickle=False``)."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["mean"], data["cov"], int(data["n"]), str(data["network"]))


def _stats(x: FeatureStats | ArrayLike, label: str) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    try:
        return FeatureStats.from_features(x)
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from None


def _psd_eigenvalues(values: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric positive semi-definite matrix with those that are round-off set to 0.

    A computed eigenvalue carries an absolute error of about eps * lambda_max, so one below
    D * eps * lambda_max (``numpy.linalg.matrix_rank``'s tolerance) cannot be told from 0: it is set
    to 0, negative ones included. Taking square roots of them instead would turn each +-1e-14 into
    +-1e-7 and, over 2048 dimensions, add a spurious ~1e-3 to the distance.
    """
    top = float(values.max()) if values.numel() else 0.0
    tolerance = top * values.numel() * torch.finfo(values.dtype).eps
    return torch.where(values > tolerance, values, torch.zeros_like(values))


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root R of a symmetric PSD matrix S (R R = S), by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * _psd_eigenvalues(values).sqrt()) @ vectors.T


def trace_sqrt_product(cov_a: ArrayLike, cov_b: ArrayLike) -> float:
    """Tr((S_a S_b)^{1/2}) for symmetric PSD S_a, S_b [D, D], without a non-symmetric ``sqrtm``.

    S_a S_b = S_a^{1/2} (S_a^{1/2} S_b S_a^{1/2}) S_a^{-1/2} is similar to the symmetric PSD matrix
    M = S_a^{1/2} S_b S_a^{1/2} (for singular S_a by continuity), so the square root of S_a S_b with
    non-negative eigenvalues has trace sum_i sqrt(lambda_i(M)). Two symmetric eigendecompositions
    (``eigh``) give it: real eigenvalues by construction, so there is no imaginary part to discard and
    no need for the reference code's retry with eps * I added to both covariances when ``sqrtm`` of
    the product fails (pytorch-fid, torch-fidelity). Eigenvalues within round-off of 0, which a
    covariance of N < D vectors has (rank N - 1), are set to 0 (:func:`_psd_eigenvalues`).

    Computed in float64 with ``torch.linalg`` on the CPU (for D = 2048 about 1 s; NumPy's bundled
    OpenBLAS ``eigh`` was 10x slower here).
    """
    cov_a = torch.as_tensor(np.asarray(cov_a), dtype=torch.float64)
    cov_b = torch.as_tensor(np.asarray(cov_b), dtype=torch.float64)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2.0  # symmetric up to round-off; make it exactly so for eigvalsh
    return float(_psd_eigenvalues(torch.linalg.eigvalsh(middle)).sqrt().sum())


def frechet_distance(a: FeatureStats | ArrayLike, b: FeatureStats | ArrayLike) -> float:
    """The Frechet distance between the Gaussians fitted to two feature sets (Heusel et al. 2017,
    "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", eq. 6;
    the closed form of the squared 2-Wasserstein distance between Gaussians, Dowson & Landau 1982):

        FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).

    On Inception pool3 features (:func:`ddpmlab.metrics.load_inception`) this is FID. It is a squared
    distance, in squared feature units, >= 0 (a value below 0 from round-off is returned as 0).
    The plug-in estimate is biased upwards, roughly by a constant / N, so numbers at different N do not
    compare, and two samples of the same distribution give FD > 0: the real-vs-real floor at the same N
    says what "good" is. Tr((S_a S_b)^{1/2}) is computed by :func:`trace_sqrt_product`.

    Args:
        a: features [N_a, D] (N_a >= 2) or their :class:`FeatureStats`.
        b: features [N_b, D] or their :class:`FeatureStats`.

    Raises:
        ValueError: different dimensions, stats of different feature networks, fewer than 2 vectors,
            NaN or infinity.
    """
    sa, sb = _stats(a, "a"), _stats(b, "b")
    if sa.dim != sb.dim:
        raise ValueError(f"the two sets have different dimensions: {sa.dim} and {sb.dim}")
    if sa.network and sb.network and sa.network != sb.network:
        raise ValueError(f"stats of different feature networks: {sa.network!r} and {sb.network!r}")
    diff = sa.mean - sb.mean
    value = float(diff @ diff) + float(np.trace(sa.cov) + np.trace(sb.cov))
    value -= 2.0 * trace_sqrt_product(sa.cov, sb.cov)
    return max(value, 0.0)


# --------------------------------------------------------------------------------------------------
# Kernel distance.
# --------------------------------------------------------------------------------------------------


class KIDResult(NamedTuple):
    """KID over random subsets: ``mean`` (the estimate to report) and ``std``, the population
    standard deviation of the per-subset values (as torch-fidelity and torchmetrics report it; the
    subsets overlap, so std / sqrt(subsets) is not a standard error)."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def _polynomial_kernel(
    x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef0: float
) -> torch.Tensor:
    """k(x_i, y_j) = (gamma x_i.y_j + coef0)^degree for x [m, D], y [m, D] -> [m, m] (in place on x y^T)."""
    return (x @ y.T).mul_(gamma).add_(coef0).pow_(degree)


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef0: float) -> float:
    """The unbiased estimate of MMD^2 between two sets of m vectors each (Gretton et al. 2012, eq. 3,
    with the cross term over all m^2 pairs, as Binkowski et al.'s code):

        (1/(m(m-1))) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - (2/m^2) sum_{i, j} k(x_i, y_j).
    """
    m = len(x)
    k_xx = _polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = _polynomial_kernel(y, y, degree, gamma, coef0)
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    cross = _polynomial_kernel(x, y, degree, gamma, coef0).sum()
    return float(within / (m * (m - 1)) - 2.0 * cross / (m * m))


def kernel_inception_distance(
    a: ArrayLike,
    b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int | np.random.Generator = 0,
) -> KIDResult:
    """The kernel distance between two feature sets (Binkowski et al. 2018, "Demystifying MMD GANs",
    arXiv:1801.01401, section 4): the unbiased squared maximum mean discrepancy (MMD^2) with the polynomial
    kernel

        k(x, y) = (gamma x.y + coef0)^degree,   gamma = 1 / D by default,

    averaged over ``subsets`` random subsets of ``subset_size`` vectors drawn without replacement from
    each set. The estimator is unbiased, so for two samples of one distribution its expectation is 0
    (single values can be slightly negative) whatever N: the number to trust at small N, where FD's
    bias dominates. On Inception pool3 features this is KID (defaults as the paper, torch-fidelity and
    torchmetrics); computed in float64.

    Args:
        a: features [N_a, D]; b: features [N_b, D] (same D, same device).
        subsets: the number of random subsets.
        subset_size: m, vectors per subset from each set; 2 <= m <= min(N_a, N_b).
        degree, gamma, coef0: the kernel's parameters.
        seed: the subsets' randomness (an int seeds ``numpy.random.default_rng``).

    Returns:
        :class:`KIDResult` (mean, std over subsets, subsets, subset_size).

    Raises:
        ValueError: subset_size outside [2, min(N_a, N_b)], subsets < 1, different dimensions, NaN.
    """
    x, y = as_features(a, "a"), as_features(b, "b")
    check_same_dim(x, y)
    if subsets < 1:
        raise ValueError(f"subsets must be positive, got {subsets}")
    if not 2 <= subset_size <= min(len(x), len(y)):
        raise ValueError(
            f"subset_size must be in [2, min(N_a, N_b)] = [2, {min(len(x), len(y))}], got {subset_size}; "
            "pass subset_size=min(N_a, N_b) for small sets"
        )
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values = np.empty(subsets)
    for index in range(subsets):
        rows_x = torch.from_numpy(rng.choice(len(x), subset_size, replace=False)).to(x.device)
        rows_y = torch.from_numpy(rng.choice(len(y), subset_size, replace=False)).to(y.device)
        values[index] = _unbiased_mmd2(x[rows_x], y[rows_y], degree, gamma, coef0)
    return KIDResult(float(values.mean()), float(values.std()), subsets, subset_size)
