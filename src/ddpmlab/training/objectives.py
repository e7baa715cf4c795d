"""What the Trainer minimises: an objective turns one micro-batch into a loss (and extra metrics).

An objective is any callable ``objective(model, x0, cond, generator, t=None, noise=None) -> (loss,
metrics)``:

- ``model``: the model being trained (possibly ``torch.compile``d), called inside the Trainer's
  autocast;
- ``x0``: the batch [B, ...] on the training device;
- ``cond``: the labels / conditions of the batch as the Trainer prepares them (None unless the Trainer
  is ``conditional``; after condition dropout when the model has a condition encoder);
- ``generator``: the Trainer's generator, the only source of randomness (saved in checkpoints, so that
  a resumed run draws the same t and noise);
- ``t``, ``noise``: the timesteps [B] and noise (like x0) to use, or None to draw them from
  ``generator`` as ``GaussianDiffusion.training_loss`` does (t first, then the noise). The Trainer
  passes them when it trains on several processes (each keeps its rows of the global batch's draws);
- ``loss``: a scalar tensor to backpropagate; ``metrics``: extra numbers (floats or 0-d tensors) that
  the Trainer averages over each logging window and logs next to the loss (e.g. ``accuracy``).

:class:`DiffusionObjective` (the default) is the DDPM loss; :class:`ClassifierObjective` trains a
noise-aware classifier p(y | x_t, t) for classifier guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ddpmlab.diffusion import GaussianDiffusion

__all__ = ["Objective", "DiffusionObjective", "ClassifierObjective", "classification_loss"]

Objective = Callable[..., tuple[torch.Tensor, dict[str, Any]]]


class DiffusionObjective:
    """The diffusion loss, ``diffusion.training_loss(model, x0, cond, generator)`` (no extra metrics)."""

    def __init__(self, diffusion: GaussianDiffusion) -> None:
        self.diffusion = diffusion

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        cond: Any,
        generator: torch.Generator | None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = self.diffusion.training_loss(model, x0, cond, generator=generator, t=t, noise=noise)
        return loss, {}


class ClassifierObjective:
    """Cross-entropy of a noise-aware classifier on noised data (Dhariwal & Nichol 2021, section 4).

    For each sample: t ~ U{0, ..., T-1}, eps ~ N(0, I) (both from ``generator`` unless given),
    x_t = q_sample(x0, t, eps); the loss is the mean cross-entropy of ``model(x_t, t)`` (logits [B, K],
    called with the original timesteps) against the labels [B]. Metric: ``accuracy``, the fraction of
    the noised batch classified correctly (averaged over all noise levels, so well below the accuracy
    on clean data).

    Use with a ``conditional`` Trainer, so that the labels reach the objective as ``cond``.
    """

    def __init__(self, diffusion: GaussianDiffusion) -> None:
        self.diffusion = diffusion

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
            raise ValueError("training a classifier needs integer class labels for every sample")
        t, noise = self.diffusion.draw_t_and_noise(x0.shape, generator, x0.device, x0.dtype, t, noise)
        x_t = self.diffusion.q_sample(x0, t, noise)
        return classification_loss(model(x_t, self.diffusion.model_timesteps(t)), labels)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean cross-entropy of ``logits`` [B, K] against class indices ``labels`` [B] (in float32), and
    the batch's ``accuracy`` (a 0-d tensor, no host sync) as the objective's metric."""
    labels = labels.to(device=logits.device, dtype=torch.int64)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
    return loss, {"accuracy": accuracy}
