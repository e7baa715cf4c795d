"""Stopping training at the first non-finite loss or gradient, without a host sync per step.

A learning rate far too high, or a forward pass that overflows in fp16, makes the loss or the
gradient inf or NaN; one such optimizer step turns every weight into NaN, and training would go on to
write those weights over the last good checkpoint. :class:`NonFiniteGuard` watches every step on the
device: ``observe`` only queues a few tiny tensor operations (which step first went wrong, and what),
and ``check`` reads the result back (one host sync), raising :class:`NonFiniteError`. The Trainer
checks after every step on the CPU (where reading is free) and, on GPUs, at every log step and before
every checkpoint, so the error always names the first bad step.

With fp16 the GradScaler multiplies the loss before backward; a step whose scaled gradients overflow
is skipped by the scaler, which then lowers its scale, so such gradients are not an error (the guard
is told ``scaled_gradients=True``). A non-finite loss is always an error: the scale does not touch
the forward pass.
"""

from __future__ import annotations

import torch

from ddpmlab import distributed
from ddpmlab.config import TrainConfig

__all__ = ["NonFiniteError", "NonFiniteGuard", "finite_weights"]

LOSS, GRADIENT = 1, 2  # what went wrong, as bits


class NonFiniteError(ValueError):
    """Training produced an inf or NaN (a ValueError: the cure is a setting, e.g. a lower learning rate;
    every command reports it on one line)."""


class NonFiniteGuard:
    """The first optimizer step whose loss or gradient norm was not finite, recorded on the device.

    Args:
        device: where the loss and gradient norm live.
        config: the ``train`` section (the error's hint names its settings).
        scaled_gradients: fp16 with a GradScaler: non-finite gradients are the scaler's business (it
            skips those steps), only a non-finite loss counts.
    """

    def __init__(self, device: torch.device, config: TrainConfig, scaled_gradients: bool = False) -> None:
        self.config = config
        self.scaled_gradients = scaled_gradients
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.what = torch.zeros((), dtype=torch.int64, device=device)

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Record optimizer step ``step`` (1-based): ``loss`` its loss (a sum over micro-batches is
        fine: it is finite only if they all are), ``grad_norm`` its total gradient norm. No host sync."""
        bad = (~torch.isfinite(loss.detach())).to(torch.int64) * LOSS
        if not self.scaled_gradients:
            bad = bad + (~torch.isfinite(grad_norm.detach())).to(torch.int64) * GRADIENT
        new = (self.first_step < 0) & (bad > 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.what = torch.where(new, bad, self.what)

    def check(self, kept: str) -> None:
        """Raise :class:`NonFiniteError` if an observed step went wrong (one read from the device; with
        several processes a collective, so every rank calls it at the same steps). ``kept``: what the
        error says of the checkpoint on disk."""
        step, what = int(self.first_step), int(self.what)
        if not distributed.any_true(step >= 0):
            return
        if step < 0:
            raise self.error("a loss or gradient is not finite (inf or NaN) on another process", kept)
        names = [name for bit, name in ((LOSS, "loss"), (GRADIENT, "gradient norm")) if what & bit]
        verb = "are" if len(names) > 1 else "is"
        raise self.error(f"the {' and the '.join(names)} {verb} not finite (inf or NaN) at step {step}", kept)

    def check_weights(self, tensors: list[torch.Tensor], step: int, kept: str) -> None:
        """Raise :class:`NonFiniteError` if a weight in ``tensors`` is not finite (on any process)."""
        if distributed.any_true(not finite_weights(tensors)):
            raise self.error(f"the weights are not finite (inf or NaN) at step {step}", kept)

    def error(self, what: str, kept: str) -> NonFiniteError:
        """The one-line error: what went wrong, what happened to the checkpoint, what to try."""
        c = self.config
        hint = f"lower train.lr (now {c.lr:g})"
        if c.grad_clip is None:
            hint += " or set train.grad_clip"
        if c.precision == "fp16":
            hint += ", or train with train.precision=bf16 or fp32"
        return NonFiniteError(f"training stopped: {what}; {kept}; in a new run, {hint}")


def finite_weights(tensors: list[torch.Tensor]) -> bool:
    """Whether every floating-point tensor of ``tensors`` is finite (one host sync in all)."""
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True
