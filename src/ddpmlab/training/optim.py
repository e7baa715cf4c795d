"""The optimizer and its learning-rate plan: AdamW (fused where torch has a kernel for it) and linear
warmup followed by cosine decay."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_multiplier", "make_adamw"]


def lr_multiplier(
    step: int, warmup_steps: int, total_steps: int | None, min_ratio: float, schedule: str
) -> float:
    """The LR factor after ``step`` optimizer steps: linear warmup over ``warmup_steps``, then cosine
    decay to ``min_ratio`` at ``total_steps`` (constant when the schedule is constant or the total is
    unknown, e.g. training by wall-clock time only)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps is None or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    """AdamW as one fused kernel over all parameters where torch has one for their device (CUDA; the
    CPU since torch 2.4: 4x faster than the multi-tensor path for the 1.7M-parameter MNIST UNet, 6.5x
    for a 28M one, measured), else the multi-tensor (foreach) path."""
    try:  # copies of the groups: a refused optimizer has already written its defaults into them
        return torch.optim.AdamW([dict(group) for group in groups], lr=lr, fused=True)
    except RuntimeError:  # torch < 2.4 on the CPU, or a device without a fused kernel
        return torch.optim.AdamW([dict(group) for group in groups], lr=lr, foreach=True)
