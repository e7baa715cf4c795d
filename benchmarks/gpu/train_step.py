"""The training step the GPU benchmark times (sections ``train``, ``loss`` and ``memory``).

A :class:`TrainRow` is a model with its optimizer and EMA, trained with one row's settings
(:class:`~benchmarks.gpu.common.Speedups`): ``diffusion.training_loss`` (t and noise from a device
generator) under bf16 autocast when asked, backward, gradient clipping at 1.0, AdamW (fused or
foreach), EMA update: what the library's ``Trainer`` does per step, without its logging. The platform
flags, channels_last and torch.compile are set here, around the unchanged model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks import harness
from benchmarks.gpu.common import Speedups, load, set_flags
from benchmarks.gpu.denoisers import compile_module
from benchmarks.gpu.report import Context
from ddpmlab.runs import build_diffusion
from ddpmlab.training.ema import EMA


def make_adamw(parameters: list[nn.Parameter], lr: float, fused: bool) -> torch.optim.Optimizer:
    if fused:
        return torch.optim.AdamW(parameters, lr=lr, fused=True)
    return torch.optim.AdamW(parameters, lr=lr, foreach=True)


def steps_per_round(seconds_per_step: float, args) -> int:
    """Steps that fill ``--round-seconds``, within [--min-steps, --max-steps]."""
    wanted = int(args.round_seconds / max(seconds_per_step, 1e-6))
    return max(args.min_steps, min(args.max_steps, wanted))


class TrainRow:
    """A model with its optimizer and EMA, trained with one row's settings.

    A step: ``diffusion.training_loss`` (t and noise from a device generator) under autocast when bf16,
    backward, gradient clipping at 1.0, AdamW, EMA update: what ``Trainer`` does per step, without its
    logging (the Trainer row measures the library's loop itself)."""

    def __init__(
        self,
        key: str,
        label: str,
        net: nn.Module,
        speedups: Speedups,
        ctx: Context,
        lr: float,
        config="cifar10",
    ):
        self.key, self.label, self.speedups, self.ctx = key, label, speedups, ctx
        self.model = net.to(ctx.device)
        if speedups.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_adamw(self.parameters, lr, speedups.fused_adamw)
        self.ema = EMA(self.model, 0.9999)
        backend = ctx.args.compile_backend
        self.forward = compile_module(self.model, backend) if speedups.compile else self.model
        self.generator = torch.Generator(ctx.device).manual_seed(ctx.args.seed)
        self.diffusion = build_diffusion(load(config, ctx.args))
        self.step_seconds: list[float] = []
        self.first_step_s = self.warmup_s = 0.0
        self.round_steps = ctx.args.min_steps

    def activate(self) -> None:
        set_flags(self.speedups.tf32, self.speedups.cudnn_benchmark)

    def step(self, x0: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.speedups.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.ctx.device.type, torch.bfloat16, enabled=self.speedups.bf16):
            loss = self.diffusion.training_loss(self.forward, x0, cond, self.generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        return loss.detach()

    def timed_steps(self, x0: torch.Tensor, steps: int, cond: Any = None) -> float:
        """Seconds for ``steps`` steps, between device synchronisations."""
        return harness.timed(lambda: self.step(x0, cond), steps, self.ctx.device)

    def warm_up(self, x0: torch.Tensor, steps: int) -> float:
        """Untimed steps (the first compiles); returns an estimate of the seconds per step."""
        self.activate()
        self.first_step_s = self.timed_steps(x0, 1)
        rest = self.timed_steps(x0, max(steps - 1, 1)) / max(steps - 1, 1)
        self.warmup_s = self.first_step_s + rest * max(steps - 1, 1)
        return rest

    def timed_round(self, x0: torch.Tensor, steps: int) -> float:
        self.activate()
        seconds = self.timed_steps(x0, steps) / steps
        self.step_seconds.append(seconds)
        return seconds
