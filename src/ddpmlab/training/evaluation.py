"""Evaluation during training (``train.eval_every``): when, on which process, and where the numbers go.

What an evaluation measures is not this module's business: the Trainer is handed an ``evaluator``,
``evaluator(step, ema_model) -> {name: value}``, built at the run layer
(:mod:`ddpmlab.runs.training_eval`: samples of the EMA model with a fixed seed, measured in a feature
network's space against the real data). :class:`PeriodicEvaluation` calls it every ``eval_every``
optimizer steps and once more at the end of training (when the last step was not one of them), and
logs ``eval/<name>`` (plus ``eval/seconds``) to ``metrics.jsonl``, TensorBoard and W&B.

What it guarantees:

- training is not changed by it: the global random generators are forked around each evaluation
  (the evaluator draws its noise from generators of its own), so weights are bitwise those of the
  same run without evaluation, and a resumed run still continues exactly;
- an evaluation at step s is logged before the checkpoint of step s is written, and the checkpoint
  records the last evaluated step: a run resumed from step s does not evaluate step s again, and one
  killed in between redoes it (its line past the checkpoint is dropped on resume);
- an evaluation that fails (an exception of the evaluator) or gives non-finite numbers does not stop
  training: one line ``ddpmlab: warning: ...`` goes to stderr and the numbers that are not finite are
  left out of the record (a gap in the curve). A non-finite *loss* still stops training (the guard is
  read before every evaluation);
- under torchrun, rank 0 evaluates while the other processes wait at a barrier (within the process
  group's timeout).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.plain import one_line

__all__ = ["Evaluator", "PeriodicEvaluation", "isolated_rng"]

Evaluator = Callable[[int, torch.nn.Module], dict[str, float]]


def isolated_rng(device: torch.device) -> Any:
    """A context in which the global CPU generator (and the CUDA one of ``device``) may be used: their
    states are restored when it ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class PeriodicEvaluation:
    """Runs ``evaluator`` every ``every`` steps (0: never) and at the end of training.

    Args:
        evaluator: the measurement (on rank 0; None on the other ranks, which only wait).
        every: ``train.eval_every``.
    """

    def __init__(self, evaluator: Evaluator | None, every: int) -> None:
        self.evaluator = evaluator
        self.every = every if evaluator is not None or distributed.world_size() > 1 else 0

    def maybe_run(self, trainer: Any) -> None:
        """Evaluate if the trainer's step is an evaluation step."""
        if self.every and trainer.state.step % self.every == 0:
            self.run(trainer)

    def finish(self, trainer: Any, ended: bool = True) -> None:
        """At the end of training (``ended``: the run reached its stopping rule, rather than being
        interrupted), evaluate the last step if it was not evaluated yet; call before the final save."""
        if ended and self.every and trainer.state.evaluated_step != trainer.state.step:
            self.run(trainer)

    def run(self, trainer: Any) -> None:
        """One evaluation of the trainer's EMA model at its current step (every rank calls this)."""
        trainer.stop_if_not_finite()  # no evaluation of NaN weights (every rank: it may be a collective)
        step = trainer.state.step
        if trainer.rank == 0 and self.evaluator is not None:
            record = self._measure(trainer, step)
            if record:
                trainer.logger.log(step, record)
        trainer.state.evaluated_step = step
        distributed.barrier()

    def _measure(self, trainer: Any, step: int) -> dict[str, float]:
        model = trainer.ema.model
        was_training = model.training
        started = time.perf_counter()
        try:
            with isolated_rng(trainer.device):
                model.eval()
                values = self.evaluator(step, model)
        except Exception as error:  # a long training outlives a failed measurement
            _warn(f"the evaluation at step {step} failed, training continues: {one_line(error)}")
            return {}
        finally:
            model.train(was_training)
        bad = sorted(key for key, value in values.items() if not math.isfinite(float(value)))
        if bad:
            _warn(f"the evaluation at step {step} gave non-finite {', '.join(bad)} (left out of the log)")
        record = {f"eval/{key}": float(value) for key, value in values.items() if key not in bad}
        record["eval/seconds"] = time.perf_counter() - started
        return record


def _warn(message: str) -> None:
    print(f"ddpmlab: warning: {message}", file=sys.stderr)

