"""The training loop, and only the loop: it receives a built model, diffusion and batch stream.

One optimizer step (Ho et al. 2020, Algorithm 1, as practitioners run it):

1. for each of ``grad_accum`` micro-batches: drop conditions to null with probability ``cond_dropout``
   (classifier-free guidance training), compute the diffusion loss (or the ``objective`` given, e.g. a
   noise-aware classifier's cross-entropy) under autocast, backpropagate loss / grad_accum;
2. clip the gradient norm, step AdamW, step the LR schedule (linear warmup then cosine decay);
3. update the EMA weights.

Every ``log_every`` steps a line goes to ``metrics.jsonl`` (and TensorBoard / W&B when enabled); every
``eval_every`` steps an injected evaluator measures the EMA model (:mod:`ddpmlab.training.evaluation`);
every ``checkpoint_every`` steps and at the end, ``checkpoints/last.pt`` is written atomically with
everything needed to resume exactly (model, EMA, optimizer, LR schedule, grad scaler, data position,
random generators). A non-finite loss or gradient stops training with
:class:`~ddpmlab.training.guard.NonFiniteError` (checked without a host sync per GPU step, see
:mod:`ddpmlab.training.guard`), and no checkpoint with non-finite weights is ever written.

Under ``torchrun`` (see :mod:`ddpmlab.distributed`) the model is wrapped in DistributedDataParallel, which
averages the gradients of the processes (skipped with ``no_sync`` on all but the last micro-batch of an
accumulated step). Every rank draws the timesteps, noise and condition dropout of the whole global
micro-batch from the same generator and keeps the rows of its own samples, so W processes with batch b
make the same updates as one process with batch W * b (up to the order of float sums), and the
optimizer, EMA and generator stay identical on every rank. Only rank 0 writes metrics, TensorBoard,
hooks' files and checkpoints; checkpoints hold the unwrapped model and do not depend on the number of
processes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import TrainConfig
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.training.checkpoint import (
    TRAINING_KEYS,
    CheckpointError,
    first_line,
    keep_recent,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from ddpmlab.training.ema import EMA
from ddpmlab.training.evaluation import Evaluator, PeriodicEvaluation
from ddpmlab.training.guard import NonFiniteGuard
from ddpmlab.training.objectives import DiffusionObjective, Objective
from ddpmlab.training.optim import lr_multiplier, make_adamw
from ddpmlab.training.writers import RunLogger, RunningMean, progress_bar

__all__ = ["Trainer", "TrainState", "lr_multiplier"]

Hook = Callable[["Trainer"], None]


@dataclass
class TrainState:
    """What the loop knows about itself; saved in checkpoints."""

    step: int = 0
    samples_seen: int = 0
    elapsed_seconds: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)
    evaluated_step: int | None = None  # the last step measured by the evaluator (train.eval_every)


TIME_CHECK_EVERY = 10  # steps between the ranks' agreements on train.minutes under torchrun


class Trainer:
    """Trains ``model`` on batches from ``batches`` with the loss of ``diffusion``.

    Args:
        model: a denoiser ``model(x_t, t, cond=None)``; its ``condition_encoder`` (if any) provides
            ``drop(cond, p, generator)`` for condition dropout.
        diffusion: the GaussianDiffusion whose ``training_loss`` is minimised (unless ``objective``
            says otherwise).
        batches: an endless stream of ``(x0, labels)`` with ``state_dict``/``load_state_dict``,
            ``epoch`` and ``batches_per_epoch`` (see :mod:`ddpmlab.data.batches`).
        config: the ``train`` section.
        run_dir: where checkpoints, logs and metrics go (None: nothing is written).
        conditional: pass labels to the model as its condition.
        run_config: the whole resolved config, stored in checkpoints so a run describes itself.
        hooks: callables run every ``sample_every`` steps and at the end (e.g. writing sample grids);
            with several processes on rank 0 only.
        objective: what to minimise, ``objective(model, x0, cond, generator, t, noise) -> (loss,
            metrics)`` (see :mod:`ddpmlab.training.objectives`); default: the diffusion loss. Its
            metrics (e.g. a classifier's ``accuracy``) are averaged and logged next to the loss.
        evaluator: ``(step, ema_model) -> metrics`` (rank 0), see :mod:`ddpmlab.training.evaluation`.
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
        objective: Objective | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.config = config
        self.evaluation = PeriodicEvaluation(evaluator, config.eval_every)
        self.objective = objective if objective is not None else DiffusionObjective(diffusion)
        self._extra_means: dict[str, RunningMean] = {}  # the objective's metrics, per logging window
        self.device = device or distributed.resolve_device(config.device)
        self.model = model.to(self.device)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        # Built before the EMA copy: DDP broadcasts rank 0's weights, so every rank starts identical.
        self.ddp = self._wrap_ddp() if self.world_size > 1 else None
        self._seed_rank(0)
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
        self.guard = NonFiniteGuard(self.device, config, scaled_gradients=self.scaler.is_enabled())
        # reading the guard is free on the CPU: stop at the bad step itself; elsewhere at log steps
        self._check_every_step = self.device.type == "cpu" and self.world_size == 1
        self.saved_step: int | None = None  # the step of the checkpoint on disk, once known
        trained = self.ddp if self.ddp is not None else self.model
        self.forward_model = torch.compile(trained) if config.compile else trained
        self.logger = RunLogger(self.run_dir, config, self.run_config, enabled=self.rank == 0)

    # ---------------------------------------------------------------------------------------------
    # Set-up.
    # ---------------------------------------------------------------------------------------------

    def _wrap_ddp(self) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

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
        return make_adamw(groups, self.config.lr)

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
            labels = self._drop_conditions(encoder, labels)
        return labels

    def _drop_conditions(self, encoder: Any, labels: Any) -> Any:
        """Condition dropout; with W processes drawn for the whole global micro-batch (as one process
        would), of which this rank keeps its rows r, r + W, ... (see :mod:`ddpmlab.data.batches`)."""
        p, world = self.config.cond_dropout, self.world_size
        if world == 1:
            return encoder.drop(labels, p, self.generator)
        if torch.is_tensor(labels):
            return encoder.drop(labels.repeat_interleave(world, dim=0), p, self.generator)[self.rank :: world]
        spread = [label for label in labels for _ in range(world)]  # row r + W i holds label i
        return list(encoder.drop(spread, p, self.generator))[self.rank :: world]

    def _global_noise(self, x0: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """With W processes, the timesteps and noise of the whole global micro-batch, drawn exactly as
        ``training_loss`` draws them in one process, of which this rank keeps its rows; (None, None)
        with one process (``training_loss`` draws them itself)."""
        world = self.world_size
        if world == 1:
            return None, None
        shape = (x0.shape[0] * world, *x0.shape[1:])
        t, noise = self.diffusion.draw_t_and_noise(shape, self.generator, x0.device, x0.dtype)
        return t[self.rank :: world], noise[self.rank :: world].contiguous()

    def _micro_step(self, iterator) -> tuple[torch.Tensor, int]:
        x0, labels = next(iterator)
        x0 = x0.to(self.device, non_blocking=True)
        cond = self._condition(labels)
        t, noise = self._global_noise(x0)
        with self._autocast():
            loss, extra = self.objective(self.forward_model, x0, cond, self.generator, t=t, noise=noise)
        for key, value in extra.items():
            self._extra_means.setdefault(key, RunningMean()).add(value)
        self.scaler.scale(loss / self.config.grad_accum).backward()
        # the loss stays a device tensor (no host sync per step); it is read once per logging window
        return loss.detach(), x0.shape[0] * self.world_size  # samples of all ranks together

    def _optimizer_step(self, step_loss: torch.Tensor) -> torch.Tensor:
        """Clip, check, step AdamW, the LR schedule and the EMA; ``step_loss``: the step's micro-batch
        losses summed (a device tensor). Returns the gradient norm (a device tensor).

        Raises:
            NonFiniteError: on the CPU, a non-finite loss or gradient, before the weights change.
        """
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters, max_norm)
        self.guard.observe(self.state.step + 1, step_loss, grad_norm)
        if self._check_every_step:
            self.stop_if_not_finite()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self.ema.update(self.model)
        return grad_norm  # a device tensor, read once per logging window like the loss

    def _should_stop(self) -> bool:
        c = self.config
        if c.steps is not None and self.state.step >= c.steps:
            return True
        if c.epochs is not None and getattr(self.batches, "batches_per_epoch", None):
            if self.batches.epoch >= c.epochs:
                return True
        if c.minutes is None:
            return False
        # elapsed_seconds is the training wall clock of this run, earlier sessions included.
        out_of_time = self.state.elapsed_seconds >= c.minutes * 60
        if self.world_size == 1:
            return out_of_time
        # Clocks differ between processes: all stop as soon as one is out of time, agreed through an
        # all-reduce. Done every step, that all-reduce would stall each GPU step on a host round trip, so
        # the ranks compare clocks every TIME_CHECK_EVERY steps (all at the same steps) and may overrun
        # the limit by fewer steps than that.
        if self.state.step % TIME_CHECK_EVERY:
            return False
        return distributed.any_true(out_of_time)

    def fit(self, until_step: int | None = None) -> TrainState:
        """Train until a stop condition is reached (or, if given, until optimizer step ``until_step``,
        as if interrupted there); returns the final state."""
        self.logger.open(resumed_at=self.state.step)
        self.model.train()
        iterator = iter(self.batches)
        started = time.perf_counter()
        elapsed_before = self.state.elapsed_seconds
        loss_mean, norm_mean = RunningMean(), RunningMean()
        window_start, window_samples = time.perf_counter(), 0
        progress = progress_bar(self.config, self.total_steps, self.state.step, enabled=self.rank == 0)
        try:
            while not self._should_stop() and (until_step is None or self.state.step < until_step):
                step_loss: float | torch.Tensor = 0.0
                for micro in range(self.config.grad_accum):
                    with self._gradient_sync(micro == self.config.grad_accum - 1):
                        loss, batch = self._micro_step(iterator)
                    loss_mean.add(loss)
                    step_loss = step_loss + loss
                    window_samples += batch
                    self.state.samples_seen += batch
                norm_mean.add(self._optimizer_step(step_loss))
                self.state.step += 1
                now = time.perf_counter()
                self.state.elapsed_seconds = elapsed_before + now - started
                if progress is not None:
                    progress.update(1)
                if self.state.step % self.config.log_every == 0:
                    metrics = self._window_metrics(loss_mean, norm_mean)
                    metrics["samples_per_s"] = window_samples / max(now - window_start, 1e-9)
                    metrics["epoch"] = getattr(self.batches, "epoch", 0)
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
            self._log(self._window_metrics(loss_mean, norm_mean))
        self.evaluation.finish(self, ended=self._should_stop())  # not after an interruption (until_step)
        self.save()
        if self.rank == 0:
            for hook in self.hooks:
                hook(self)
        self.logger.close()
        return self.state

    def _window_metrics(self, loss_mean: RunningMean, norm_mean: RunningMean) -> dict[str, float]:
        """The logging window's means (one read-back from the device), once the window is known to be
        finite (else :class:`~ddpmlab.training.guard.NonFiniteError`)."""
        self.stop_if_not_finite()
        return {
            "loss": distributed.all_mean(loss_mean.pop()),
            **self._pop_extra_metrics(),
            "grad_norm": norm_mean.pop(),
            "lr": self.lr_scheduler.get_last_lr()[0],
        }

    def _pop_extra_metrics(self) -> dict[str, float]:
        """The objective's metrics averaged over the window since the last log (over all processes)."""
        means = self._extra_means.items()
        return {key: distributed.all_mean(mean.pop()) for key, mean in means if mean.count}

    def _gradient_sync(self, sync: bool):
        """DDP all-reduces gradients in backward; on all but the last micro-batch of an accumulated step
        that is wasted traffic, so those run under ``no_sync`` (gradients accumulate locally)."""
        if self.ddp is None or sync:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def _maybe_run_hooks_and_save(self) -> None:
        c = self.config
        if c.sample_every and self.state.step % c.sample_every == 0:
            self.stop_if_not_finite()  # no grids of NaN weights (every rank: it may be a collective)
            for hook in self.hooks if self.rank == 0 else []:
                hook(self)
            self.model.train()
        self.evaluation.maybe_run(self)  # before the checkpoint, which records the evaluated step
        if c.checkpoint_every and self.state.step % c.checkpoint_every == 0:
            self.save()

    # ---------------------------------------------------------------------------------------------
    # Logging.
    # ---------------------------------------------------------------------------------------------

    def _log(self, metrics: dict[str, float]) -> None:
        self.state.last_metrics = dict(metrics)
        self.logger.log(self.state.step, metrics)

    def log_image(self, tag: str, image: torch.Tensor) -> None:
        """Send an image [C, H, W] in [0, 1] to TensorBoard / W&B (if enabled)."""
        self.logger.log_image(self.state.step, tag, image)

    # ---------------------------------------------------------------------------------------------
    # Checkpoints.
    # ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.state.step,
            "samples_seen": self.state.samples_seen,
            "elapsed_seconds": self.state.elapsed_seconds,
            "last_metrics": self.state.last_metrics,
            "evaluated_step": self.state.evaluated_step,
            "config": self.run_config,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "batches": self.batches.state_dict(),
            "rng": {"trainer": self.generator.get_state(), "torch": torch.get_rng_state()},
            **self._per_rank_state(),
        }

    def _per_rank_state(self) -> dict[str, Any]:
        """With several processes, what differs between them (each rank's data stream position, e.g.
        per-rank toy sample streams, and global RNG, e.g. dropout), gathered from all ranks: a
        collective, so every rank calls it."""
        if self.world_size == 1:
            return {}
        own = {"batches": self.batches.state_dict(), "torch": torch.get_rng_state()}
        return {"ranks": distributed.all_gather_objects(own)}

    def _seed_rank(self, step: int) -> None:
        """Ranks other than 0 draw their own dropout masks: the global RNG seeded by (seed, rank, step)."""
        if self.rank > 0:
            torch.manual_seed(self.config.seed * 1_000_003 + self.rank * 1_009 + step)

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "the checkpoint") -> None:
        """Continue from ``state`` (a checkpoint's content).

        Raises:
            CheckpointError: weights or optimizer state that do not fit this model (one line naming
                ``source``; nothing of this Trainer's own state is trusted afterwards).
        """
        load_weights(self.model, state["model"], source)
        load_weights(self.ema.model, state["ema"].get("model"), source, "EMA")  # one line if it does not fit
        self.ema.load_state_dict(state["ema"])
        if "optimizer" not in state:  # weights only (an imported run): a fresh start from them at step 0
            return
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"the optimizer state of {source} does not fit its model: {first_line(error)}"
            ) from None
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        # The checkpoint holds rank 0's data position and RNG, and with several processes every
        # rank's ("ranks"); a rank the saving run did not have starts its own streams.
        ranks = state.get("ranks") or []
        own = ranks[self.rank] if self.rank < len(ranks) else None
        self.batches.load_state_dict(own["batches"] if own is not None else state["batches"])
        self.generator.set_state(state["rng"]["trainer"].cpu())
        if own is not None or self.rank == 0:
            torch.set_rng_state((own["torch"] if own is not None else state["rng"]["torch"]).cpu())
        else:
            self._seed_rank(int(state["step"]))
        self.state = TrainState(
            step=int(state["step"]),
            samples_seen=int(state["samples_seen"]),
            elapsed_seconds=float(state["elapsed_seconds"]),
            last_metrics=dict(state.get("last_metrics") or {}),
            evaluated_step=state.get("evaluated_step"),
        )
        self.saved_step = self.state.step

    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / "last.pt"

    def save(self) -> Path | None:
        """Write ``checkpoints/last.pt`` (rank 0; with several processes every rank must call this),
        and with ``train.keep_checkpoints`` = k also keep it as ``step_XXXXXXX.pt`` (the last k).

        Raises:
            NonFiniteError: a non-finite loss, gradient or weight so far: nothing is written, the
                checkpoint on disk stays the last good one.
            CheckpointError: the file cannot be written (disk full, ...); the previous one is kept.
        """
        path = self.checkpoint_path()
        if path is None:
            return None
        self.stop_if_not_finite()
        weights = [*self.model.state_dict().values(), *self.ema.model.state_dict().values()]
        self.guard.check_weights(weights, self.state.step, self._kept())
        state = self.state_dict()
        distributed.main_first(self._write, path, state)  # rank 0 writes; its errors reach every rank
        self.saved_step = self.state.step
        return path if self.rank == 0 else None

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        save_checkpoint(path, state)
        keep_recent(path, self.state.step, self.config.keep_checkpoints)

    def stop_if_not_finite(self) -> None:
        """Raise :class:`~ddpmlab.training.guard.NonFiniteError` if a step so far had a non-finite loss
        or gradient (a read from the device; with several processes every rank calls it at the same
        steps)."""
        self.guard.check(self._kept())

    def _kept(self) -> str:
        if self.saved_step is None or self.checkpoint_path() is None:
            return "no checkpoint was written"
        return f"the last checkpoint ({self.checkpoint_path()}, step {self.saved_step}) is kept"

    def resume(self, path: str | Path | None = None) -> None:
        """Load a checkpoint (default: this run's last one) and continue from it.

        Raises:
            CheckpointError: a missing, damaged or incomplete checkpoint, or one whose weights do not
                fit this Trainer's model (one line).
        """
        path = Path(path) if path is not None else self.checkpoint_path()
        self.load_state_dict(load_checkpoint(path, map_location=self.device, required=TRAINING_KEYS), path)
