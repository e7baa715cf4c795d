"""A trained judge opened as a feature network (:func:`open_judge` -> :class:`JudgeRun`), apart from
its training (:mod:`ddpmlab.runs.judge`): what measures samples, during training too
(:mod:`ddpmlab.runs.training_eval`), must not import the training path it measures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ddpmlab.config import Config
from ddpmlab.metrics.features import network_input
from ddpmlab.runs.rundir import open_frozen_model

__all__ = ["JUDGE_TYPE", "JudgeRun", "open_judge"]

JUDGE_TYPE = "judge"


@dataclass
class JudgeRun:
    """A trained judge (EMA weights, eval mode): a feature network over uint8 images that also predicts.

    ``judge(images)`` and :meth:`features`: uint8 [B, H, W, C] -> float32 features [B, D] (on the CPU);
    :meth:`predict`: -> int64 classes [B]. ``name`` labels the numbers computed on its features.
    """

    run_dir: Path
    config: Config
    model: torch.nn.Module
    step: int
    device: torch.device
    fd_label = "FD_judge"  # a Frechet distance on a judge's features is never FID
    kid_label = "KID_judge"

    @property
    def name(self) -> str:
        return f"judge:{self.run_dir}"

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        size = int(self.model.image_size)
        return network_input(images, (int(self.model.in_channels), size, size), self.device, self.name)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(self._input(images)).float().cpu()

    __call__ = features

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._input(images)).argmax(dim=-1).cpu()


def open_judge(run_dir: str | Path, device: str | torch.device = "auto") -> JudgeRun:
    """Load a judge run (EMA weights, eval mode, frozen). Raises RunError for a run of another kind."""
    config, model, step, target = open_frozen_model(run_dir, device, JUDGE_TYPE)
    return JudgeRun(Path(run_dir), config, model, step, target)
