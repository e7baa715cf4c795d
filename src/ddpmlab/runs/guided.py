"""The denoiser a sampling request asks for, built in one place: the run's EMA model, wrapped in
classifier-free guidance (a conditional run with a scale w != 1) and/or classifier guidance (a
noise-aware classifier's gradient, scale s).

Classifier-free guidance (Ho & Salimans 2022) needs a model trained with condition dropout and costs a
second forward pass per step; classifier guidance (Dhariwal & Nichol 2021) works with an unconditional
model too and costs a backward pass through a separate classifier per step. Both wrappers are
denoisers (``model(x_t, t, cond)``), so every sampler takes them unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from ddpmlab.runs.rundir import ClassifierRun, Run, RunError

__all__ = ["classifier_free", "guidance_scale", "guided_denoiser", "check_classifier"]


def classifier_free(model: torch.nn.Module, scale: float) -> Any:
    """``model`` with classifier-free guidance of scale w (itself when w = 1: the conditional model).

    Raises:
        RunError: a model without a condition encoder (an unconditional run).
    """
    encoder = getattr(model, "condition_encoder", None)
    if encoder is None:
        raise RunError("this run's model has no condition encoder")
    return model if scale == 1.0 else ClassifierFreeGuidance(model, scale, encoder.null_condition)


def guidance_scale(run: Run, guidance: float | None = None) -> float | None:
    """The classifier-free guidance scale w a request for ``run`` samples with: ``guidance``, else the
    run's ``sample.guidance``; None for an unconditional run (no classifier-free guidance)."""
    if not run.conditional:
        return None
    return run.config.sample.guidance if guidance is None else guidance


def guided_denoiser(
    run: Run,
    guidance: float | None = None,
    classifier: ClassifierRun | None = None,
    classifier_scale: float = 1.0,
    labels: Any = None,
) -> Any:
    """The denoiser to sample ``run`` with: its EMA model, with classifier-free guidance of scale
    ``guidance`` (default: the run's ``sample.guidance``) when the run is conditional, then guided by
    ``classifier``'s gradient with scale ``classifier_scale`` (after :func:`check_classifier` against
    ``labels``). Labels go to the classifier, and to the model too when the run is conditional.

    Raises:
        RunError: ``guidance`` given for an unconditional run (it would do nothing), or not finite.
    """
    if guidance is not None and not run.conditional:
        raise RunError(
            "--guidance (classifier-free guidance) needs a conditional run; this run is unconditional "
            "(classifier guidance: --classifier)"
        )
    if guidance is not None and not math.isfinite(guidance):
        raise RunError(f"--guidance must be a finite number, got {guidance}")
    model: Any = run.model
    if run.conditional:
        model = classifier_free(run.model, guidance_scale(run, guidance))
    if classifier is not None:
        check_classifier(run, classifier, labels)
        model = ClassifierGuidance(
            model, classifier.model, classifier_scale, run.diffusion, condition_model=run.conditional
        )
    return model


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
