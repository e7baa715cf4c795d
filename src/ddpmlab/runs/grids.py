"""Sample grids written while an image run trains (``train.sample_every``): what the EMA model makes
now, one row per class (or per random string for text runs), to ``samples/`` and TensorBoard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import Config
from ddpmlab.data import DataInfo
from ddpmlab.runs.conditions import class_grid_labels, place_conditions, text_grid_labels
from ddpmlab.runs.guided import classifier_free
from ddpmlab.sampling import DDIMSampler

__all__ = ["write_training_grid", "training_grid_hook"]

MAX_GRID_STEPS = 50  # DDIM steps of a grid during training: quick enough to run every sample_every


def _grid_conditions(model: Any, info: DataInfo, config: Config, per_class: int) -> tuple[Any, int]:
    """(each sample's condition or None, grid rows)."""
    if not (config.data.conditional and (info.num_classes or info.text_charset)):
        return None, per_class
    if info.num_classes:
        rows = min(info.num_classes, 10)
        return class_grid_labels(rows, per_class), rows
    from ddpmlab.data.captcha import random_texts

    encoder = model.condition_encoder
    rows = 8
    texts = random_texts(rows, encoder.charset, info.text_length or encoder.length, config.sample.seed)
    return place_conditions(config.data, text_grid_labels(texts, per_class), config.sample.seed), rows


def write_training_grid(
    trainer: Any, run_dir: Path, info: DataInfo, config: Config, per_class: int = 8, steps: int = 50
) -> Path:
    """A grid of EMA samples (DDIM, ``steps`` steps, the run's guidance; one row per class when
    conditional, one row per random string for text runs), written to
    ``run_dir/samples/step_XXXXXXX.png`` and sent to TensorBoard; returns the path."""
    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import grid_tensor, save_grid

    model: Any = trainer.ema.model
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=trainer.device).manual_seed(config.sample.seed)
    labels, rows = _grid_conditions(model, info, config, per_class)
    if torch.is_tensor(labels):
        labels = labels.to(trainer.device)
    denoiser = classifier_free(model, config.sample.guidance) if labels is not None else model
    sampler = DDIMSampler(trainer.diffusion, min(steps, trainer.diffusion.num_timesteps), clip_x0=1.0)
    shape = (rows * per_class, *info.shape)
    images = sampler.sample(denoiser, shape, labels, generator, device=trainer.device)
    model.train(was_training)
    pixels = to_uint8(images.float().cpu())
    path = save_grid(pixels, run_dir / "samples" / f"step_{trainer.state.step:07d}.png", rows=rows)
    trainer.log_image("samples", grid_tensor(pixels, rows))
    return path


def training_grid_hook(run_dir: Path, info: DataInfo, config: Config) -> Callable[[Any], Path]:
    """A Trainer hook writing :func:`write_training_grid` with at most ``MAX_GRID_STEPS`` DDIM steps."""
    steps = min(config.sample.steps or MAX_GRID_STEPS, MAX_GRID_STEPS)
    return lambda trainer: write_training_grid(trainer, run_dir, info, config, steps=steps)
