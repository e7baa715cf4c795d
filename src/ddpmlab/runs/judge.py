"""Judges at the run level: train a classifier of clean real images, open it as a feature network.

::

    ddpmlab train-judge --config configs/mnist5k_judge.yaml      # -> runs/mnist5k_judge

A judge run is laid out like any run (config.yaml with ``data.info`` and the model's ``in_channels``,
``image_size`` and ``num_classes``, checkpoints, metrics.jsonl with ``accuracy`` on augmented batches).
Opened with :func:`open_judge`, it is a :class:`~ddpmlab.metrics.FeatureNetwork` (uint8 images ->
penultimate-layer features, named ``judge:<run dir>``) that also predicts classes, for the evaluation of
samples: class accuracy of conditional samples, and FD_judge / KID_judge / precision / recall /
memorisation in its features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo
from ddpmlab.runs.build import model_from_options
from ddpmlab.runs.rundir import open_frozen_model
from ddpmlab.runs.training import RunKind, train_kind_run
from ddpmlab.training.judge_objective import JudgeObjective
from ddpmlab.training.trainer import Trainer

__all__ = ["JUDGE_TYPE", "JUDGE", "JudgeRun", "build_judge_for", "train_judge_run", "open_judge"]

JUDGE_TYPE = "judge"


def build_judge_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The judge a config describes, with ``in_channels``, ``image_size`` and ``num_classes`` from the
    data. Raises ConfigError for a config of another model type or data without class labels."""
    if config.model.type != JUDGE_TYPE:
        raise ConfigError(f"train-judge trains model.type {JUDGE_TYPE}, got {config.model.type!r}")
    if info.kind != "image" or not info.num_classes:
        raise ConfigError(f"a judge needs labelled image data; {config.data.name} has none")
    options = dict(config.model.options)
    options.setdefault("in_channels", info.shape[0])
    options.setdefault("image_size", info.shape[-1])
    options.setdefault("num_classes", info.num_classes)
    return model_from_options(JUDGE_TYPE, options)


JUDGE = RunKind(build_judge_for, JudgeObjective, records_model_options=True)


def train_judge_run(config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train the judge ``config`` describes on its (real) data in ``run_dir``; returns the Trainer."""
    return train_kind_run(JUDGE, config, run_dir, resume)


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
        images = torch.as_tensor(images)
        expected = (self.model.image_size, self.model.image_size, self.model.in_channels)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.name} takes uint8 images [N, {expected[0]}, {expected[1]}, {expected[2]}], got "
                f"{images.dtype} {list(images.shape)}"
            )
        return images.to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0

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
