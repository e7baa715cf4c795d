"""What a captcha reader (:class:`~ddpmlab.models.CaptchaReader`) minimises: the CTC loss (Graves et al.
2006) of its per-column logits against the text of clean real renders, ``torch.nn.CTCLoss`` with blank
0. See :mod:`ddpmlab.training.objectives` for the objective protocol.

The renders already vary: every item draws its own font size, rotation, warp, spacing, noise dots and
curve (see :mod:`ddpmlab.data.captcha`). With ``augment`` (the default) each image is also moved a
little (shift up to 2 pixels each way, scale 0.92..1.08, edges repeated) and given Gaussian pixel noise
(sigma up to 0.1 in [-1, 1] units), from the Trainer's generator, so that a resumed run draws the same
changes. Measured on the shipped config's data (30,000 renders, 2,200 steps of 64, two runs side by side
on the shared CPU): 98.1% of 1,000 held-out renders read exactly without it (and 99.95% of its last
training batches: it learns the renders themselves), 98.8% with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.models.reader import BLANK, best_path, encode_texts

__all__ = ["ReaderObjective", "exact_matches", "augment_renders"]


def augment_renders(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] moved and noised as the module docstring says."""
    n, device = x.shape[0], x.device
    h, w = x.shape[-2:]
    uniform = torch.rand((n, 4), generator=generator, device=device) * 2 - 1  # in [-1, 1)
    scale = 1.0 + 0.08 * uniform[:, 0]
    shift_x, shift_y = uniform[:, 1] * 4.0 / w, uniform[:, 2] * 4.0 / h  # 2 pixels (the grid spans 2)
    zero = torch.zeros_like(scale)
    theta = torch.stack(
        [torch.stack([1 / scale, zero, shift_x], 1), torch.stack([zero, 1 / scale, shift_y], 1)], 1
    )  # [B, 2, 3]
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sigma = 0.05 * (uniform[:, 3] + 1).view(n, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return (moved + sigma * noise).clamp(-1.0, 1.0)


def exact_matches(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Whether each row's greedy reading (:func:`~ddpmlab.models.reader.best_path` of logits [B, T, K])
    is its target (classes [B, T], -1 past ``lengths`` [B]): bool [B], without host synchronisation."""
    decoded, decoded_lengths = best_path(logits)
    return (decoded_lengths == lengths) & (decoded == targets).all(dim=1)


class ReaderObjective:
    """CTC loss of a reader's logits on clean images and their strings.

    Called by the Trainer as ``objective(model, x0, texts, generator)``; ``t`` and ``noise`` are not
    used, the generator only with ``augment``. Metric: ``accuracy``, the fraction of the (augmented)
    batch read exactly (greedy decoding).
    """

    def __init__(self, diffusion: Any = None, augment: bool = True) -> None:
        self.ctc = nn.CTCLoss(blank=BLANK, reduction="mean", zero_infinity=True)
        self.augment = augment

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        texts: Any,
        generator: torch.Generator | None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(texts, (list, tuple)) or not all(isinstance(text, str) for text in texts):
            raise ValueError("training a reader needs the text of every image (text data, conditional)")
        reader = getattr(model, "module", model)  # DistributedDataParallel keeps the model as .module
        logits = model(augment_renders(x0, generator) if self.augment else x0)  # [B, T, K]
        targets, lengths = encode_texts(texts, reader.charset, logits.shape[1])
        targets, lengths = targets.to(logits.device), lengths.to(logits.device)
        log_probs = logits.float().log_softmax(dim=-1).transpose(0, 1)  # [T, B, K], as CTCLoss takes it
        columns = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.int64, device=logits.device)
        loss = self.ctc(log_probs, targets.clamp(min=0), columns, lengths)
        accuracy = exact_matches(logits.detach(), targets, lengths).float().mean()
        return loss, {"accuracy": accuracy}
