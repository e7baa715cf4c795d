"""The training loop, and only the loop: it receives a built model, diffusion and batch stream.

One optimizer step (Ho et al. 2020, Algorithm 1, as practitioners run it):

1. for each of ``grad_accum`` micro-batches: drop conditions to null with probability ``cond_dropout``
   (classifier-free guidance training), compute the diffusion loss under autocast, backpropagate
   loss / grad_accum;
2. clip the gradient norm, step AdamW, step the LR schedule (linear warmup then cosine decay);
3. update the EMA weights.

Every ``log_every`` steps a line goes to ``metrics.jsonl`` (and TensorBoard / W&B when enabled);
every ``checkpoint_every`` steps and at the end, ``checkpoints/last.pt`` is written atomically with
everything needed to resume exactly (model, EMA, optimizer, LR schedule, grad scaler, data position,
random generators).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import TrainConfig
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.training.checkpoint import load_checkpoint, save_checkpoint
from ddpmlab.training.ema import EMA

__all__ = ["Trainer", "TrainState", "resolve_device", "lr_multiplier"]

Hook = Callable[["Trainer"], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}") from None


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


@dataclass
class TrainState:
    """What the loop knows about itself; saved in checkpoints."""

    step: int = 0
    samples_seen: int = 0
    elapsed_seconds: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)


class _RunningMean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, value: float, count: int = 1) -> None:
        self.total += value * count
        self.count += count

    def pop(self) -> float:
        mean = self.total / max(1, self.count)
        self.total, self.count = 0.0, 0
        return mean


class Trainer:
    """Trains ``model`` on batches from ``batches`` with the loss of ``diffusion``.

    Args:
        model: a denoiser ``model(x_t, t, cond=None)``; its ``condition_encoder`` (if any) provides
            ``drop(cond, p, generator)`` for condition dropout.
        diffusion: the GaussianDiffusion whose ``training_loss`` is minimised.
        batches: an endless stream of ``(x0, labels)`` with ``state_dict``/``load_state_dict``,
            ``epoch`` and ``batches_per_epoch`` (see :mod:`ddpmlab.data.batches`).
        config: the ``train`` section.
        run_dir: where checkpoints, logs and metrics go (None: nothing is written).
        conditional: pass labels to the model as its condition.
        run_config: the whole resolved config, stored in checkpoints so a run describes itself.
        hooks: callables run every ``sample_every`` steps and at the end (e.g. writing sample grids).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        diffusion: GaussianDiffusion,
        batches: Any,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        conditional: bool = False,
        run_config: dict[str, Any] | None = None,
        hooks: list[Hook] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.device = device or resolve_device(config.device)
        self.model = model.to(self.device)
        self.diffusion = diffusion
        self.batches = batches
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.conditional = conditional
        self.run_config = run_config or {}
        self.hooks = hooks or []
        self.state = TrainState()
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup)
        self._parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._make_optimizer()
        self.total_steps = self._planned_steps()
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_multiplier(
                step, config.warmup_steps, self.total_steps, config.min_lr_ratio, config.lr_schedule
            ),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._uses_fp16())
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self._writers: list[Any] = []

    # ---------------------------------------------------------------------------------------------
    # Set-up.
    # ---------------------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if not parameter.requires_grad:
                continue
            # Norm gains and biases are not weights to shrink (the usual AdamW practice).
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # One fused kernel on CUDA; on the CPU the multi-tensor (foreach) path, which for the small
        # models trained there is several times faster than a Python loop over parameters.
        if self.device.type == "cuda":
            return torch.optim.AdamW(groups, lr=self.config.lr, fused=True)
        return torch.optim.AdamW(groups, lr=self.config.lr, foreach=True)

    def _planned_steps(self) -> int | None:
        candidates = []
        if self.config.steps is not None:
            candidates.append(self.config.steps)
        per_epoch = getattr(self.batches, "batches_per_epoch", None)
        if self.config.epochs is not None and per_epoch:
            candidates.append(self.config.epochs * per_epoch // self.config.grad_accum)
        return min(candidates) if candidates else None

    def _uses_fp16(self) -> bool:
        return self.config.precision == "fp16" and self.device.type == "cuda"

    def _autocast(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ---------------------------------------------------------------------------------------------
    # The loop.
    # ---------------------------------------------------------------------------------------------

    def _condition(self, labels: Any) -> Any:
        if not self.conditional or labels is None:
            return None
        if torch.is_tensor(labels):
            labels = labels.to(self.device, non_blocking=True)
        encoder = getattr(self.model, "condition_encoder", None)
        if encoder is not None and self.config.cond_dropout > 0:
            labels = encoder.drop(labels, self.config.cond_dropout, self.generator)
        return labels

    def _micro_step(self, iterator) -> tuple[float, int]:
        x0, labels = next(iterator)
        x0 = x0.to(self.device, non_blocking=True)
        cond = self._condition(labels)
        with self._autocast():
            loss = self.diffusion.training_loss(self.forward_model, x0, cond, generator=self.generator)
        self.scaler.scale(loss / self.config.grad_accum).backward()
        return float(loss.detach()), x0.shape[0]

    def _optimizer_step(self) -> float:
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self.ema.update(self.model)
        return float(grad_norm)

    def _should_stop(self, started: float) -> bool:
        c = self.config
        if c.steps is not None and self.state.step >= c.steps:
            return True
        if c.epochs is not None and getattr(self.batches, "batches_per_epoch", None):
            if self.batches.epoch >= c.epochs:
                return True
        if (
            c.minutes is not None
            and self.state.elapsed_seconds + (time.perf_counter() - started) >= c.minutes * 60
        ):
            return True
        return False

    def fit(self, until_step: int | None = None) -> TrainState:
        """Train until a stop condition is reached (or, if given, until optimizer step ``until_step``,
        as if interrupted there); returns the final state."""
        self._open_writers()
        self.model.train()
        iterator = iter(self.batches)
        started = time.perf_counter()
        elapsed_before = self.state.elapsed_seconds
        loss_mean, norm_mean = _RunningMean(), _RunningMean()
        window_start, window_samples = time.perf_counter(), 0
        progress = self._progress_bar()
        try:
            while not self._should_stop(started) and (until_step is None or self.state.step < until_step):
                for _ in range(self.config.grad_accum):
                    loss, batch = self._micro_step(iterator)
                    loss_mean.add(loss)
                    window_samples += batch
                    self.state.samples_seen += batch
                norm_mean.add(self._optimizer_step())
                self.state.step += 1
                if progress is not None:
                    progress.update(1)
                if self.state.step % self.config.log_every == 0:
                    now = time.perf_counter()
                    self.state.elapsed_seconds = elapsed_before + now - started
                    metrics = {
                        "loss": loss_mean.pop(),
                        "grad_norm": norm_mean.pop(),
                        "lr": self.lr_scheduler.get_last_lr()[0],
                        "samples_per_s": window_samples / max(now - window_start, 1e-9),
                        "epoch": getattr(self.batches, "epoch", 0),
                    }
                    window_start, window_samples = now, 0
                    self._log(metrics)
                    if progress is not None:
                        progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                self._maybe_run_hooks_and_save()
        finally:
            if progress is not None:
                progress.close()
        self.state.elapsed_seconds = elapsed_before + time.perf_counter() - started
        if loss_mean.count:
            self._log(
                {
                    "loss": loss_mean.pop(),
                    "grad_norm": norm_mean.pop(),
                    "lr": self.lr_scheduler.get_last_lr()[0],
                }
            )
        self.save()
        for hook in self.hooks:
            hook(self)
        self._close_writers()
        return self.state

    def _maybe_run_hooks_and_save(self) -> None:
        c = self.config
        if c.sample_every and self.state.step % c.sample_every == 0:
            for hook in self.hooks:
                hook(self)
            self.model.train()
        if c.checkpoint_every and self.state.step % c.checkpoint_every == 0:
            self.save()

    def _progress_bar(self):
        if not self.config.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True
        )

    # ---------------------------------------------------------------------------------------------
    # Logging.
    # ---------------------------------------------------------------------------------------------

    def _open_writers(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
                pass
            else:
                self._writers.append(SummaryWriter(str(self.run_dir / "logs")))
        if self.config.wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("train.wandb=true needs the wandb package: pip install wandb") from None
            wandb.init(
                project=self.config.wandb_project,
                name=self.run_config.get("name"),
                config=self.run_config,
                dir=str(self.run_dir),
                resume="allow",
            )
            self._writers.append(wandb)

    def _close_writers(self) -> None:
        for writer in self._writers:
            if hasattr(writer, "close"):
                writer.close()
            elif hasattr(writer, "finish"):
                writer.finish()
        self._writers = []

    def _log(self, metrics: dict[str, float]) -> None:
        self.state.last_metrics = dict(metrics)
        if self.run_dir is None:
            return
        record = {"step": self.state.step, **{k: float(v) for k, v in metrics.items()}}
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        for writer in self._writers:
            if hasattr(writer, "add_scalar"):
                for key, value in metrics.items():
                    writer.add_scalar(f"train/{key}", value, self.state.step)
            else:
                writer.log({f"train/{k}": v for k, v in metrics.items()}, step=self.state.step)

    def log_image(self, tag: str, image: torch.Tensor) -> None:
        """Send an image [C, H, W] in [0, 1] to TensorBoard / W&B (if enabled)."""
        for writer in self._writers:
            if hasattr(writer, "add_image"):
                writer.add_image(tag, image, self.state.step)
            else:
                writer.log({tag: writer.Image(image.permute(1, 2, 0).numpy())}, step=self.state.step)

    # ---------------------------------------------------------------------------------------------
    # Checkpoints.
    # ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.state.step,
            "samples_seen": self.state.samples_seen,
            "elapsed_seconds": self.state.elapsed_seconds,
            "last_metrics": self.state.last_metrics,
            "config": self.run_config,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "batches": self.batches.state_dict(),
            "rng": {"trainer": self.generator.get_state(), "torch": torch.get_rng_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.batches.load_state_dict(state["batches"])
        self.generator.set_state(state["rng"]["trainer"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.state = TrainState(
            step=int(state["step"]),
            samples_seen=int(state["samples_seen"]),
            elapsed_seconds=float(state["elapsed_seconds"]),
            last_metrics=dict(state.get("last_metrics") or {}),
        )

    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / "last.pt"

    def save(self) -> Path | None:
        path = self.checkpoint_path()
        if path is None:
            return None
        return save_checkpoint(path, self.state_dict())

    def resume(self, path: str | Path | None = None) -> None:
        """Load a checkpoint (default: this run's last one) and continue from it."""
        path = Path(path) if path is not None else self.checkpoint_path()
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
