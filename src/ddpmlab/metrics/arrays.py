"""Shared helpers of the image metrics: input checks and blocked squared distances.

Feature sets are [N, D] tensors or arrays. Tensors stay on their device, so CUDA tensors are compared
on the GPU (only the CPU path is tested); arrays and nested sequences go to the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # a torch.Tensor, a NumPy array or a nested sequence of numbers

# Distances are computed in blocks of rows holding at most this many numbers (32 MiB of float32), so
# 10,000 x 10,000 comparisons never hold the whole 10,000 x 10,000 matrix.
BLOCK_ELEMENTS = 2**23


def as_features(
    x: ArrayLike, label: str, dtype: torch.dtype = torch.float64, flatten: bool = False
) -> torch.Tensor:
    """x as a [N, D] tensor of ``dtype`` on its own device (CPU for arrays).

    Args:
        x: [N, D] features; with ``flatten``, [N, ...] (e.g. uint8 images [N, H, W, C]) flattened to
            [N, H * W * C].
        label: the argument's name, for error messages.

    Raises:
        ValueError: wrong shape, no rows, NaN or infinity.
    """
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    x = x.detach()
    if flatten and x.ndim >= 2:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise ValueError(f"{label} must be [N, D] features, got shape {list(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{label} is empty (shape {list(x.shape)})")
    x = x.to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{label} contains NaN or infinity")
    return x


def check_same_dim(a: torch.Tensor, b: torch.Tensor, labels: str = "the two sets") -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{labels} have different dimensions: {a.shape[1]} and {b.shape[1]}")


def block_rows(columns: int, batch_size: int | None) -> int:
    """Rows per block of a [rows, columns] distance matrix: ``batch_size``, or as many as fit in
    :data:`BLOCK_ELEMENTS`."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return int(batch_size)
    return max(1, BLOCK_ELEMENTS // max(1, columns))


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """|x_i|^2 for each row of x [N, D] -> [N]."""
    return (x * x).sum(dim=1)


def squared_distance_blocks(
    a: torch.Tensor, b: torch.Tensor, batch_size: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, D2) for consecutive blocks of rows of a: D2[i, j] = |a_{start+i} - b_j|^2.

    Uses the expansion |a|^2 + |b|^2 - 2 a.b (one matrix product per block, the fast way), clamped at 0
    because round-off can make it slightly negative. Callers centre both sets on a common point first:
    distances do not change, but the norms, and with them the round-off of the expansion, shrink.

    Args:
        a: [N, D]; b: [M, D], the same dtype and device.
        batch_size: rows per block (default: blocks of about :data:`BLOCK_ELEMENTS` numbers).
    """
    b_sq = squared_norms(b)
    rows = block_rows(len(b), batch_size)
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        d2 = squared_norms(block)[:, None] + b_sq[None, :] - 2.0 * (block @ b.T)
        yield start, d2.clamp_min_(0.0)
