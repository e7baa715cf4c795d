"""Memorisation: is a generated sample a copy of a training image?

A model that memorises its training set scores well on FD, KID and precision, so it is measured apart:
for each sample, its nearest training image, compared with how close real images the model never saw
(a held-out set) come to the training set. Distances are Euclidean in whatever space the inputs are
given: classifier ("judge") features, or pixels (uint8 images [N, H, W, C] are flattened; distances
are then in 0..255 units). Feature distances say "the same digit drawn the same way", pixel distances
"the same image".

- :func:`nearest_neighbours`: for each query its nearest reference (distance and index).
- :func:`memorisation_report`: the threshold from held-out images, the fraction of samples below it.
- :func:`plot_closest_pairs`: the closest pairs, each sample above its nearest training image.

Why it matters for diffusion models: Carlini et al. 2023 ("Extracting Training Data from Diffusion
Models") found near-copies of training images among samples, more often for small training sets. The
threshold is calibrated on real images the model never saw, in the spirit of the "authenticity" of
Alaa et al. 2022 ("How Faithful is your Synthetic Data?"): a sample is suspicious when it is closer to
the training set than real images typically are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ddpmlab.metrics.arrays import ArrayLike, as_features, check_same_dim, squared_distance_blocks

__all__ = [
    "NearestNeighbours",
    "nearest_neighbours",
    "MemorisationReport",
    "memorisation_report",
    "plot_closest_pairs",
]

# The float32 search keeps this many candidates per query; their exact distances pick the nearest.
_CANDIDATES = 4


class NearestNeighbours(NamedTuple):
    distances: torch.Tensor  # [N] float64, on the CPU
    indices: torch.Tensor  # [N] int64, on the CPU


def _flat(x: ArrayLike) -> torch.Tensor:
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return x.detach().reshape(x.shape[0], -1) if x.ndim >= 2 else x.detach()


def nearest_neighbours(
    queries: ArrayLike, references: ArrayLike, batch_size: int | None = None
) -> NearestNeighbours:
    """For each query, its nearest reference in Euclidean distance.

    The search runs in float32 on the inputs' device, in blocks of query rows (the expansion
    |q|^2 + |r|^2 - 2 q.r after centring both sets on the references' mean); the exact distances of the
    4 best candidates are then recomputed in float64 from the differences q - r, and the smallest wins.
    So an exact copy has distance exactly 0, and round-off can only confuse references whose distances
    agree to about 1e-6 relative beyond the 4 best.

    Args:
        queries: [N, D] features or [N, ...] images (e.g. uint8 [N, H, W, C]), flattened to [N, D].
        references: [M, D] or [M, ...], the same D after flattening, same device.
        batch_size: query rows per block (default: blocks of ~2^23 distances).

    Returns:
        :class:`NearestNeighbours`: distances [N] float64 (in the inputs' units) and indices [N] int64
        into ``references``, both on the CPU.

    Raises:
        ValueError: different dimensions, no rows, NaN or infinity.
    """
    q = as_features(queries, "queries", torch.float32, flatten=True)
    r = as_features(references, "references", torch.float32, flatten=True)
    check_same_dim(q, r, "queries and references")
    q_raw, r_raw = _flat(queries).to(q.device), _flat(references).to(r.device)
    centre = r.mean(dim=0)
    q, r = q - centre, r - centre
    candidates = min(_CANDIDATES, len(r))
    distances = torch.empty(len(q), dtype=torch.float64)
    indices = torch.empty(len(q), dtype=torch.int64)
    for start, d2 in squared_distance_blocks(q, r, batch_size):
        stop = start + len(d2)
        best = d2.topk(candidates, dim=1, largest=False).indices  # [B, candidates]
        block = q_raw[start:stop].to(torch.float64)
        exact = torch.stack(
            [(block - r_raw[best[:, j]].to(torch.float64)).square().sum(dim=1) for j in range(candidates)],
            dim=1,
        )
        value, which = exact.min(dim=1)
        distances[start:stop] = value.sqrt().cpu()
        indices[start:stop] = best.gather(1, which[:, None])[:, 0].cpu()
    return NearestNeighbours(distances, indices)


@dataclass(frozen=True, eq=False)
class MemorisationReport:
    """What :func:`memorisation_report` found.

    Attributes:
        distances: [N] float64, each sample's distance to its nearest training item.
        indices: [N] int64, that training item's index.
        heldout_distances: [M] float64, each held-out real item's distance to its nearest training item.
        quantile: q, the held-out quantile that sets the threshold.
        threshold: the q-quantile of ``heldout_distances``.
        flagged: [N] bool, distances <= threshold (closer to the training set than all but a fraction
            q of real images the model never saw).
        n_train: the number of training items searched.
    """

    distances: torch.Tensor
    indices: torch.Tensor
    heldout_distances: torch.Tensor
    quantile: float
    threshold: float
    flagged: torch.Tensor
    n_train: int

    @property
    def fraction(self) -> float:
        """The fraction of samples flagged."""
        return float(self.flagged.double().mean())

    @property
    def heldout_fraction(self) -> float:
        """The same fraction for the held-out real images: about q by construction, the real-vs-real
        floor. A model that does not copy gets about this; one that copies gets more."""
        return float((self.heldout_distances <= self.threshold).double().mean())

    def summary(self) -> dict[str, float | int]:
        """The numbers to report (JSON-ready): sizes, threshold, both fractions, median and smallest
        distances."""
        return {
            "n_samples": len(self.distances),
            "n_heldout": len(self.heldout_distances),
            "n_train": self.n_train,
            "quantile": self.quantile,
            "threshold": self.threshold,
            "fraction_flagged": self.fraction,
            "heldout_fraction_flagged": self.heldout_fraction,
            "median_distance": float(self.distances.median()),
            "heldout_median_distance": float(self.heldout_distances.median()),
            "min_distance": float(self.distances.min()),
        }


def memorisation_report(
    samples: ArrayLike,
    train: ArrayLike,
    heldout: ArrayLike,
    quantile: float = 0.05,
    batch_size: int | None = None,
) -> MemorisationReport:
    """Nearest training item of every sample, and the fraction of samples suspiciously close to one.

    The threshold is calibrated on real data: the ``quantile`` (q, default 5%) quantile of the distances
    from held-out real items (never trained on) to their nearest training item. A sample is flagged
    when its own nearest distance is <= that threshold. For samples that behave like fresh real images
    the expected fraction flagged is q (``heldout_fraction``, the floor); memorised samples (copies,
    distance ~0) push it towards 1. A value well above q says "look at the closest pairs"
    (:func:`plot_closest_pairs`); it does not prove copying by itself.

    Args:
        samples: generated items [N, D] or images [N, ...] (flattened), e.g. judge features or pixels.
        train: the model's training items [M_train, ...] in the same space.
        heldout: real items [M_held, ...] from the same distribution, not in ``train``.
        quantile: q in (0, 1).
        batch_size: rows per block of the distance computations.

    Raises:
        ValueError: q outside (0, 1), different dimensions, no rows, NaN or infinity.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    found = nearest_neighbours(samples, train, batch_size)
    heldout_distances = nearest_neighbours(heldout, train, batch_size).distances
    threshold = float(np.quantile(heldout_distances.numpy(), quantile))
    return MemorisationReport(
        distances=found.distances,
        indices=found.indices,
        heldout_distances=heldout_distances,
        quantile=float(quantile),
        threshold=threshold,
        flagged=found.distances <= threshold,
        n_train=len(train),
    )


def _display_images(images: ArrayLike, label: str) -> np.ndarray:
    """uint8 [N, H, W], [N, H, W, 1] or [N, H, W, 3] -> [N, H, W] (grey) or [N, H, W, 3]."""
    images = np.asarray(images.cpu() if torch.is_tensor(images) else images)
    if images.dtype != np.uint8:
        raise ValueError(f"{label} must be uint8 images, got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"{label} must be [N, H, W], [N, H, W, 1] or [N, H, W, 3], got {list(images.shape)}")
    return images


def plot_closest_pairs(
    samples: ArrayLike,
    train: ArrayLike,
    distances: ArrayLike,
    indices: ArrayLike,
    path: str | Path,
    num: int = 8,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw the ``num`` samples closest to the training set, each above its nearest training image.

    Columns are sorted by distance, closest first; each is captioned with the sample's index, the
    training image's index and their distance, in red when the distance is <= ``threshold``.

    Args:
        samples: uint8 images [N, H, W, C] (C = 1 or 3) or [N, H, W].
        train: uint8 training images [M, H, W, C] or [M, H, W].
        distances: [N], each sample's nearest distance (e.g. ``MemorisationReport.distances``).
        indices: [N], each sample's nearest training index (``MemorisationReport.indices``).
        path: the picture to write (PNG, JPG, PDF, ...).
        threshold: e.g. ``MemorisationReport.threshold``; None marks nothing.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, train = _display_images(samples, "samples"), _display_images(train, "train")
    distances = np.asarray(distances.cpu() if torch.is_tensor(distances) else distances, dtype=np.float64)
    indices = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices, dtype=np.int64)
    if distances.shape != (len(samples),) or indices.shape != (len(samples),):
        raise ValueError(
            f"distances and indices must be [{len(samples)}], got {distances.shape} and {indices.shape}"
        )
    order = np.argsort(distances, kind="stable")[: max(1, num)]
    cmap = "gray" if samples.ndim == 3 else None
    fig, axes = plt.subplots(2, len(order), figsize=(1.5 * len(order) + 0.6, 4.4), squeeze=False)
    for column, i in enumerate(order):
        close = threshold is not None and distances[i] <= threshold
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(samples[i], cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        bottom.imshow(train[indices[i]], cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        top.set_title(f"sample {i}", fontsize=8)
        bottom.set_xlabel(
            f"train {indices[i]}\nd = {distances[i]:.3g}", fontsize=8, color="red" if close else "black"
        )
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("sample", fontsize=9)
    axes[1, 0].set_ylabel("nearest\ntraining image", fontsize=9)
    fig.suptitle(title or "generated samples closest to the training set", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
