"""Classifier guidance at the run level: train a noise-aware classifier, load it, guide a run with it.

::

    ddpmlab train-classifier --config configs/mnist5k_classifier.yaml        # -> runs/mnist5k_classifier
    ddpmlab sample --run runs/mnist5k_uncond --classifier runs/mnist5k_classifier --classifier-scale 3 \\
        --labels all --out grid.png

A classifier run directory is laid out like a diffusion run: ``config.yaml`` (resolved, with the
data-dependent model options ``in_channels``, ``image_size`` and ``num_classes`` filled in),
``checkpoints/last.pt`` (model, EMA, optimizer, ... from the same :class:`Trainer`, so ``--resume`` is
exact), ``metrics.jsonl`` (loss and ``accuracy`` on noised batches) and ``logs/``. Its config has the
usual sections: ``model.type`` is ``classifier`` (:class:`~ddpmlab.models.NoisyClassifier`), the
``diffusion`` section must describe the same forward process (T and schedule) as the runs it will
guide, and ``sample`` is unused.

Classifier guidance (Dhariwal & Nichol 2021) versus classifier-free guidance (Ho & Salimans 2022):
here the diffusion model can be unconditional and a *separate* classifier trained on noised images
supplies grad_{x_t} log p(y | x_t, t), which costs a backward pass through the classifier at every
step; classifier-free guidance needs a model trained with condition dropout and no classifier, and
costs a second forward pass of the model instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import Config, ConfigError
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierGuidance
from ddpmlab.runs import (
    CHECKPOINT,
    CONFIG_FILE,
    DataInfo,
    Run,
    RunError,
    _stop_keys,
    build_data,
    build_diffusion,
    prepare_run_dir,
    resolve_batch_size,
)
from ddpmlab.training.checkpoint import load_checkpoint
from ddpmlab.training.objectives import ClassifierObjective
from ddpmlab.training.trainer import Trainer, resolve_device

__all__ = [
    "ClassifierRun",
    "build_classifier_for",
    "train_classifier_run",
    "open_classifier",
    "check_classifier",
    "guide_with_classifier",
]

CLASSIFIER_TYPE = "classifier"


@dataclass
class ClassifierRun:
    """A trained noise-aware classifier loaded for guidance (EMA weights, eval mode, frozen)."""

    run_dir: Path
    config: Config
    model: torch.nn.Module
    diffusion: GaussianDiffusion
    step: int
    device: torch.device

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of the images it was trained on."""
        size = int(self.model.image_size)
        return (int(self.model.in_channels), size, size)


def build_classifier_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The classifier a config describes, with ``in_channels``, ``image_size`` and ``num_classes``
    taken from the data unless the config gives them (they must then agree with the data)."""
    from ddpmlab.models import build_model

    if config.model.type != CLASSIFIER_TYPE:
        raise ConfigError(
            f"train-classifier trains model.type {CLASSIFIER_TYPE}, got {config.model.type!r} "
            "(diffusion models are trained with `ddpmlab train`)"
        )
    if info.kind != "image":
        raise ConfigError(
            f"a noise-aware classifier needs image data; {config.data.name} is {info.kind} data"
        )
    if not info.num_classes:
        raise ConfigError(f"the {config.data.name} data has no labels to train a classifier on")
    options = dict(config.model.options)
    options.setdefault("in_channels", info.shape[0])
    options.setdefault("image_size", info.shape[-1])
    options.setdefault("num_classes", info.num_classes)
    if options["num_classes"] != info.num_classes:
        raise ConfigError(
            f"model.num_classes is {options['num_classes']} but the {config.data.name} data has "
            f"{info.num_classes} classes"
        )
    try:
        return build_model({"type": CLASSIFIER_TYPE, **options})
    except TypeError as error:
        raise ConfigError(f"model: {error}") from None


def _with_model_options(config: Config, model: torch.nn.Module) -> Config:
    """``config`` with the model options that came from the data written in, so the run describes itself."""
    raw = config.to_dict()
    raw["model"].update(
        in_channels=model.in_channels, image_size=model.image_size, num_classes=model.num_classes
    )
    return Config.from_dict(raw)


def train_classifier_run(config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train the noise-aware classifier ``config`` describes in ``run_dir``; returns the finished Trainer.

    Each batch (x0, labels) is noised to x_t = q_sample(x0, t, eps) with t uniform over the config's
    diffusion timesteps, and the classifier minimises the cross-entropy of its logits at (x_t, t)
    (:class:`~ddpmlab.training.objectives.ClassifierObjective`). Everything else (AdamW, warmup +
    cosine LR, EMA, checkpoints, exact resume, metrics) is the diffusion runs' :class:`Trainer`.
    """
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, resume)
    if resume:
        saved = Config.from_dict(load_checkpoint(run_dir / CHECKPOINT)["config"])
        # Only the stopping rule may change on resume: the rest must match what was trained.
        config = Config.from_dict(
            {**saved.to_dict(), "train": {**saved.to_dict()["train"], **_stop_keys(config)}}
        )
    config = resolve_batch_size(config)  # one process: train.global_batch_size = batch_size x grad_accum
    torch.manual_seed(config.train.seed)
    batches, info = build_data(config)
    model = build_classifier_for(config, info)
    config = _with_model_options(config, model)
    diffusion = build_diffusion(config)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    trainer = Trainer(
        model,
        diffusion,
        batches,
        config.train,
        run_dir=run_dir,
        conditional=True,  # the labels go to the objective (a classifier has no condition dropout)
        run_config=config.to_dict(),
        objective=ClassifierObjective(diffusion),
    )
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer


def open_classifier(run_dir: str | Path, device: str | torch.device = "auto") -> ClassifierRun:
    """Load a classifier run's config and EMA weights (eval mode, parameters frozen: guidance only
    needs the gradient with respect to x_t)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} is not a trained classifier run (no {CHECKPOINT})")
    from ddpmlab.models import build_model

    target = device if isinstance(device, torch.device) else resolve_device(device)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location="cpu")
    config = Config.from_dict(state["config"])
    if config.model.type != CLASSIFIER_TYPE:
        raise RunError(
            f"{run_dir} is not a classifier run (its model.type is {config.model.type}); "
            "train one with `ddpmlab train-classifier`"
        )
    model = build_model({"type": CLASSIFIER_TYPE, **config.model.options})
    model.load_state_dict(state["ema"]["model"])
    model.to(target).eval().requires_grad_(False)
    return ClassifierRun(run_dir, config, model, build_diffusion(config), int(state["step"]), target)


def _describe(diffusion: GaussianDiffusion) -> str:
    return f"T={diffusion.num_timesteps}, schedule {diffusion.schedule.name}"


def check_classifier(run: Run, classifier: ClassifierRun, labels: Any = None) -> None:
    """Raise RunError unless ``classifier`` can guide ``run`` towards ``labels`` (class indices or None):
    the same forward process (alpha_bar_t at every t), the same image shape, the same number of classes
    as the run's labelled data (if any), and labels among the classifier's classes."""
    ours, theirs = run.diffusion.schedule.alphas_cumprod, classifier.diffusion.schedule.alphas_cumprod
    if ours.shape != theirs.shape or not torch.equal(ours, theirs):
        raise RunError(
            f"the classifier {classifier.run_dir} was trained with a different diffusion "
            f"({_describe(classifier.diffusion)}) than the run {run.run_dir} ({_describe(run.diffusion)}); "
            "train it with the run's diffusion section"
        )
    if run.info.kind != "image":
        raise RunError(f"classifier guidance needs an image run; {run.run_dir} is a {run.info.kind} run")
    if tuple(run.info.shape) != classifier.shape:
        raise RunError(
            f"the classifier {classifier.run_dir} was trained on images of shape {list(classifier.shape)}, "
            f"the run {run.run_dir} makes {list(run.info.shape)}"
        )
    if run.info.num_classes and run.info.num_classes != classifier.num_classes:
        raise RunError(
            f"the classifier {classifier.run_dir} knows {classifier.num_classes} classes but the run's "
            f"data has {run.info.num_classes}"
        )
    if labels is not None:
        values = torch.as_tensor(labels)
        if values.dtype.is_floating_point or values.numel() == 0:
            raise RunError("classifier guidance needs integer class labels")
        if values.min() < 0 or values.max() >= classifier.num_classes:
            raise RunError(
                f"labels must lie in 0..{classifier.num_classes - 1} (the classifier's classes), "
                f"got {values.min().item()}..{values.max().item()}"
            )


def guide_with_classifier(
    run: Run, model: Any, classifier: ClassifierRun, scale: float, labels: Any = None
) -> ClassifierGuidance:
    """``model`` (the run's model, possibly wrapped in classifier-free guidance) guided by
    ``classifier``'s gradient with scale s, after :func:`check_classifier`. The labels given at
    sampling time go to the classifier, and to the model too when the run is conditional."""
    check_classifier(run, classifier, labels)
    return ClassifierGuidance(
        model, classifier.model, scale, run.diffusion, condition_model=run.conditional
    )
