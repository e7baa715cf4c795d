"""What a judge (:class:`~ddpmlab.models.JudgeCNN`) minimises: the cross-entropy of clean, augmented
real images. See :mod:`ddpmlab.training.objectives` for the objective protocol.

The augmentation is what lets a judge trained on real data read generated images fairly: a CNN trained
on MNIST's perfectly black backgrounds calls almost any digit on a slightly grey or speckled background
an "8", so it would judge the background rather than the digit. Each batch is therefore moved slightly
(random affine: rotation +-12 degrees, shift +-1/7 of the image, scale 0.9..1.1) and half of it is
changed photometrically (in 0..1 pixel units p -> clamp(offset + contrast * p + sigma * noise) with
offset ~ U(0, 0.3), contrast ~ U(0.6, 1), sigma ~ U(0, 0.2) per image). All randomness comes from the
Trainer's generator, so a resumed judge run draws the same augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ddpmlab.training.objectives import classification_loss

__all__ = ["JudgeObjective", "augment_images", "degrade_images"]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def degrade_images(x: torch.Tensor, generator: torch.Generator | None, fraction: float = 0.5) -> torch.Tensor:
    """Photometric changes of ``fraction`` of a batch of images [B, C, H, W] in [-1, 1] (see the module
    docstring); the others unchanged."""
    n, device = x.shape[0], x.device
    pixels = (x + 1.0) / 2.0
    offset = 0.3 * _uniform((n, 1, 1, 1), generator, device)
    contrast = 0.6 + 0.4 * _uniform((n, 1, 1, 1), generator, device)
    sigma = 0.2 * _uniform((n, 1, 1, 1), generator, device)
    noise = torch.randn(pixels.shape, generator=generator, device=device)
    changed = (offset + contrast * pixels + sigma * noise).clamp(0.0, 1.0)
    chosen = (_uniform((n, 1, 1, 1), generator, device) < fraction).to(x.dtype)
    return (chosen * changed + (1 - chosen) * pixels) * 2.0 - 1.0


def augment_images(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A random affine move of each image [B, C, H, W] in [-1, 1] (padding with black, -1), then
    :func:`degrade_images` on half of the batch."""
    n, device = x.shape[0], x.device
    angle = (_uniform((n,), generator, device) * 2 - 1) * math.radians(12)
    scale = 0.9 + 0.2 * _uniform((n,), generator, device)
    shift = (_uniform((n, 2), generator, device) * 2 - 1) / 7.0  # +-1/7 of the half-width: 2 px of 28
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # [B, 2, 3]
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    moved = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    return degrade_images(moved, generator)


class JudgeObjective:
    """Cross-entropy (with ``label_smoothing``) of a judge's logits on augmented clean images.

    Called by the Trainer as ``objective(model, x0, labels, generator)``; ``t`` and ``noise`` are not
    used (a judge sees clean images). Metric: ``accuracy`` on the augmented batch.
    """

    def __init__(self, diffusion: Any = None, label_smoothing: float = 0.05, augment: bool = True) -> None:
        self.label_smoothing = label_smoothing
        self.augment = augment

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        labels: Any,
        generator: torch.Generator | None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not torch.is_tensor(labels):
            raise ValueError("training a judge needs integer class labels for every image")
        x = augment_images(x0, generator) if self.augment else x0
        return classification_loss(model(x), labels, self.label_smoothing)
