"""Reporting image metrics so that a reader knows what "good" is.

A number such as "FID 12.3" says little alone: it depends on N, on the feature network, on package
versions, and even a perfect generator does not reach 0. So every figure is reported with N, the
feature network, the package versions and the real-vs-real floor, the same metric between two disjoint
real sets at the same N (:func:`real_floor`). :func:`compare_features` does all of this for FD, KID
and precision / recall; :func:`class_accuracy` scores class-conditional samples with a classifier.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

import numpy as np
import scipy
import torch

from ddpmlab.metrics.arrays import ArrayLike, as_features, check_same_dim
from ddpmlab.metrics.distances import FeatureStats, frechet_distance, kernel_inception_distance
from ddpmlab.metrics.features import network_name
from ddpmlab.metrics.manifold import RealManifold, precision_recall_against

__all__ = ["class_accuracy", "class_coverage", "package_versions", "real_floor", "compare_features"]

T = TypeVar("T")


def class_accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """The fraction of class-conditional samples that a classifier assigns to their requested class.

    Args:
        predictions: a classifier's logits or probabilities [N, C] (the argmax is the prediction), or
            predicted classes [N] (integers).
        labels: the requested classes [N] (integers).

    Returns:
        accuracy in [0, 1] (report it with N: its standard error is sqrt(a (1 - a) / N)).

    Raises:
        ValueError: shapes that do not match, no samples.
    """
    predictions = predictions if torch.is_tensor(predictions) else torch.as_tensor(np.asarray(predictions))
    labels = labels if torch.is_tensor(labels) else torch.as_tensor(np.asarray(labels))
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    elif predictions.ndim != 1 or predictions.is_floating_point():
        raise ValueError(
            f"predictions must be logits [N, C] or integer classes [N], got {predictions.dtype} "
            f"{list(predictions.shape)}"
        )
    if labels.ndim != 1 or labels.is_floating_point() or len(labels) != len(predictions):
        raise ValueError(
            f"labels must be integer classes [{len(predictions)}], got {labels.dtype} {list(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("no samples to score")
    return float((predictions.cpu() == labels.cpu()).double().mean())


def class_coverage(predictions: ArrayLike, num_classes: int) -> dict[str, Any]:
    """How evenly samples cover the classes a classifier sees in them (for unconditional models, where
    class accuracy does not apply, and for conditional ones asked for every class equally often).

    Args:
        predictions: predicted classes [N] (integers in 0..num_classes-1) or logits [N, C].
        num_classes: C.

    Returns:
        ``class_histogram`` (counts [C]), ``effective_classes``: exp of the entropy of the predicted
        class frequencies (C when every class is predicted equally often, 1 when all samples fall in one
        class), and ``classes_missing``: classes never predicted.

    Raises:
        ValueError: no predictions, or classes out of range.
    """
    predictions = predictions if torch.is_tensor(predictions) else torch.as_tensor(np.asarray(predictions))
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    predictions = predictions.cpu().long()
    if predictions.ndim != 1 or len(predictions) == 0:
        raise ValueError(f"predictions must be classes [N], N > 0, got {list(predictions.shape)}")
    if int(predictions.min()) < 0 or int(predictions.max()) >= num_classes:
        raise ValueError(f"predicted classes must lie in 0..{num_classes - 1}")
    counts = torch.bincount(predictions, minlength=num_classes)
    shares = counts.double() / counts.sum()
    entropy = -float((shares[shares > 0] * shares[shares > 0].log()).sum())
    return {
        "class_histogram": counts.tolist(),
        "effective_classes": float(np.exp(entropy)),
        "classes_missing": int((counts == 0).sum()),
    }


def package_versions() -> dict[str, str]:
    """The versions that change metric values: Python, ddpmlab, torch, numpy, scipy and, when
    installed, torch-fidelity (the Inception port)."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,  # with its build tag, e.g. 2.4.1+cu121
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    for package in ("ddpmlab", "torch-fidelity"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _split(real: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of the rows of real: (its first n rows, the rest)."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(real))).to(real.device)
    return real[order[:n]], real[order[n:]]


def real_floor(
    metric: Callable[[torch.Tensor, torch.Tensor], T],
    real: ArrayLike,
    n: int,
    seed: int = 0,
    reference_size: int | None = None,
) -> T:
    """The value of ``metric`` between two disjoint real sets: what a perfect generator would score.

    The rows of ``real`` are shuffled with ``numpy.random.default_rng(seed)``; the first n play the
    samples and the next ``reference_size`` (default n: two disjoint halves of n each) the reference:
    ``metric(real[first n], real[next reference_size])``. Compare a generator's score with the floor
    at the same n (and the same reference size).

    Args:
        metric: e.g. :func:`frechet_distance`; wrap ones with options in a lambda.
        real: real features [M, D], M >= n + reference_size.
        n: the sample size.
        seed: which split.
        reference_size: the reference set's size.

    Raises:
        ValueError: the real set is too small for the split.
    """
    x = as_features(real, "real")
    reference_size = n if reference_size is None else reference_size
    if n < 1 or reference_size < 1 or n + reference_size > len(x):
        raise ValueError(
            f"a real-vs-real floor at n = {n} with a reference of {reference_size} needs "
            f"{n + reference_size} real vectors, got {len(x)}"
        )
    held, rest = _split(x, n, seed)
    return metric(held, rest[:reference_size])


def compare_features(
    samples: ArrayLike,
    real: ArrayLike,
    network: Any,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    fd_label: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """FD, KID and precision / recall of samples against real features, each beside its real-vs-real
    floor at the same N, with N, the feature network and the package versions.

    Protocol: the real set is split (seeded) into a held-out part of N vectors, N = len(samples), and a
    reference of the other M - N. The samples and the held-out real vectors are each compared with the
    same reference, so the only difference between a metric and its ``_floor`` is "generated" versus
    "real" (for FD the reference statistics are computed once and reused).

    Args:
        samples: generated features [N, D].
        real: real features [M, D] of the same network; M - N must exceed k (and be >= 2).
        network: the feature network (its ``name``) or its name, e.g. ``INCEPTION_NAME``.
        k: precision / recall's neighbour.
        kid_subsets, kid_subset_size: KID's subsets (the size is capped at min(N, M - N)).
        seed: the real split and KID's subsets.
        fd_label: "FID" on the standard Inception features (default: the network's ``fd_label`` if it
            has one, "FID" if its name is :data:`~ddpmlab.metrics.INCEPTION_NAME`, else "FD").
        batch_size: rows per block of the distance computations.

    Returns:
        a JSON-ready dict: ``n``, ``n_reference``, ``feature_network``, ``feature_dim``, ``fd_label``,
        ``fd``, ``fd_floor``, ``kid_label`` (the network's ``kid_label``, else "KID"), ``kid``,
        ``kid_std``, ``kid_floor``, ``kid_floor_std``, ``kid_subsets``, ``kid_subset_size``,
        ``precision``, ``recall``, ``precision_floor``, ``recall_floor``, ``k``, ``seed``, ``versions``.
    """
    from ddpmlab.metrics.inception import INCEPTION_NAME

    name = network if isinstance(network, str) else network_name(network)
    label = fd_label or getattr(network, "fd_label", None) or ("FID" if name == INCEPTION_NAME else "FD")
    kid_label = getattr(network, "kid_label", None) or "KID"
    fake, x = as_features(samples, "samples"), as_features(real, "real")
    check_same_dim(fake, x, "samples and real")
    n = len(fake)
    if len(x) - n < max(2, k + 1):
        raise ValueError(
            f"the real set ({len(x)}) must be larger than the samples ({n}) by more than k = {k}: "
            "N real vectors are held out for the floor and the rest is the reference"
        )
    held, reference = _split(x, n, seed)
    reference_stats = FeatureStats.from_features(reference, name)
    subset_size = min(kid_subset_size, n, len(reference))
    kid = kernel_inception_distance(fake, reference, kid_subsets, subset_size, seed=seed)
    kid_floor = kernel_inception_distance(held, reference, kid_subsets, subset_size, seed=seed)
    manifold = RealManifold.of(reference, k, batch_size)  # the reference's k-NN radii, computed once
    pr = precision_recall_against(manifold, fake, batch_size)
    pr_floor = precision_recall_against(manifold, held, batch_size)
    return {
        "n": n,
        "n_reference": len(reference),
        "feature_network": name,
        "feature_dim": int(fake.shape[1]),
        "fd_label": label,
        "fd": frechet_distance(fake, reference_stats),
        "fd_floor": frechet_distance(held, reference_stats),
        "kid_label": kid_label,
        "kid": kid.mean,
        "kid_std": kid.std,
        "kid_floor": kid_floor.mean,
        "kid_floor_std": kid_floor.std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset_size,
        "precision": pr.precision,
        "recall": pr.recall,
        "precision_floor": pr_floor.precision,
        "recall_floor": pr_floor.recall,
        "k": k,
        "seed": seed,
        "versions": package_versions(),
    }
