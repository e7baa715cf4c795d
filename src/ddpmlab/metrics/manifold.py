"""Precision and recall of generated samples with k-nearest-neighbour manifolds (Kynkaanniemi et al.
2019, "Improved Precision and Recall Metric for Assessing Generative Models", arXiv:1904.06991).

FD and KID mix two failures into one number; these two separate them. Each set's manifold is the
union of balls around its points, the ball of a point reaching its k-th nearest neighbour in the same
set (eq. 1 of the paper):

    f(x, S) = 1  if  |x - s| <= |s - NN_k(s, S)|  for at least one s in S,   else 0,

    precision = mean over samples g  of f(g, real)     (are the samples realistic?)
    recall    = mean over real r     of f(r, samples)  (is every kind of real image produced?)

Both are in [0, 1]. Radii grow as a set gets smaller, so both depend on the set sizes: compare at equal
N, next to the real-vs-real floor (two disjoint real sets give precision and recall below 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ddpmlab.metrics.arrays import ArrayLike, as_features, check_same_dim, squared_distance_blocks

__all__ = [
    "PrecisionRecall",
    "RealManifold",
    "precision_recall",
    "precision_recall_against",
    "knn_radii",
]


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def _knn_radii_squared(x: torch.Tensor, k: int, batch_size: int | None) -> torch.Tensor:
    """|x_i - NN_k(x_i)|^2 for every row of x [N, D], the point itself excluded -> [N]."""
    radii = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for start, d2 in squared_distance_blocks(x, x, batch_size):
        rows = torch.arange(len(d2), device=x.device)
        d2[rows, rows + start] = float("inf")  # a point is not its own neighbour
        radii[start : start + len(d2)] = d2.kthvalue(k, dim=1).values
    return radii


def knn_radii(features: ArrayLike, k: int = 3, batch_size: int | None = None) -> torch.Tensor:
    """The distance of every point to its k-th nearest neighbour in the same set (itself excluded).

    Args:
        features: [N, D] (N > k).
        k: which neighbour (k = 1: the nearest other point).
        batch_size: rows per block of the distance matrix (default: blocks of ~2^23 numbers).

    Returns:
        float32 [N], on the features' device.
    """
    x = as_features(features, "features", torch.float32)
    _check_k(k, len(x), "features")
    x = x - x.mean(dim=0)
    return _knn_radii_squared(x, k, batch_size).sqrt()


def _check_k(k: int, n: int, label: str) -> None:
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1] = [1, {n - 1}] for the {n} points of {label}, got {k}")


def precision_recall(
    real: ArrayLike, fake: ArrayLike, k: int = 3, batch_size: int | None = None
) -> PrecisionRecall:
    """Improved precision and recall (Kynkaanniemi et al. 2019, eqs. 1-2; k = 3 as in the paper).

    Distances are Euclidean in feature space, computed in float32 in blocks of rows (the
    |a|^2 + |b|^2 - 2 a.b expansion after centring both sets on the real mean), so 10,000 x 10,000
    comparisons never hold the whole matrix. A point is inside a ball when its squared distance is
    <= the squared radius; points within float32 round-off of a ball's edge may go either way.

    Args:
        real: real features [N_r, D] (N_r > k).
        fake: generated features [N_g, D] (N_g > k), same device.
        k: the neighbour whose distance is a point's radius.
        batch_size: rows per block of each distance matrix (default: blocks of ~2^23 numbers).

    Returns:
        :class:`PrecisionRecall` (precision, recall), floats in [0, 1].

    Raises:
        ValueError: k outside [1, N - 1] for either set, different dimensions, NaN or infinity.
    """
    return precision_recall_against(RealManifold.of(real, k, batch_size), fake, batch_size)


class RealManifold(NamedTuple):
    """A real set ready for :func:`precision_recall`: centred float32 points, squared k-NN radii, centre.
    Made once when several sample sets are compared with the same real set."""

    points: torch.Tensor  # [N_r, D], minus centre
    radii: torch.Tensor  # [N_r], squared
    centre: torch.Tensor  # [D]
    k: int

    @classmethod
    def of(cls, real: ArrayLike, k: int, batch_size: int | None = None) -> RealManifold:
        """The manifold of real features [N_r, D] with k-NN radii (raises ValueError for k >= N_r)."""
        r = as_features(real, "real", torch.float32)
        _check_k(k, len(r), "real")
        centre = r.mean(dim=0)
        r = r - centre
        return cls(r, _knn_radii_squared(r, k, batch_size), centre, k)


def precision_recall_against(
    manifold: RealManifold, fake: ArrayLike, batch_size: int | None = None
) -> PrecisionRecall:
    """Precision and recall (Kynkaanniemi et al. 2019) of ``fake`` [N_f, D] against a real set's
    prepared :class:`RealManifold` (so that several fake sets share one k-NN pass over the reals)."""
    r, radii_r = manifold.points, manifold.radii
    g = as_features(fake, "fake", torch.float32)
    check_same_dim(r, g, "real and fake")
    _check_k(manifold.k, len(g), "fake")
    g = g.to(r.device) - manifold.centre
    radii_g = _knn_radii_squared(g, manifold.k, batch_size)
    # One pass over the cross distances serves both: rows (fakes) for precision, columns (reals) for recall.
    fake_inside = torch.zeros(len(g), dtype=torch.bool, device=g.device)
    real_inside = torch.zeros(len(r), dtype=torch.bool, device=r.device)
    for start, d2 in squared_distance_blocks(g, r, batch_size):
        fake_inside[start : start + len(d2)] = (d2 <= radii_r[None, :]).any(dim=1)
        real_inside |= (d2 <= radii_g[start : start + len(d2), None]).any(dim=0)
    return PrecisionRecall(int(fake_inside.sum()) / len(g), int(real_inside.sum()) / len(r))
