"""What a config builds: the diffusion, the denoiser for its data, the noise-aware classifier.

Models take their data-dependent options (channels, image size, classes, text charset and length)
from the data's :class:`~ddpmlab.data.DataInfo` unless the config sets them; the config itself only
says what the user chose.
"""

from __future__ import annotations

from typing import Any

import torch

from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.schedules import make_schedule, schedule_names

__all__ = [
    "CLASSIFIER_TYPE",
    "build_diffusion",
    "build_model_for",
    "build_classifier_for",
    "model_from_options",
]

CLASSIFIER_TYPE = "classifier"
# the models that evaluate samples (what they are, the command that trains them)
EVALUATORS = {"judge": ("a judge", "train-judge"), "reader": ("a captcha reader", "train-reader")}


def build_diffusion(config: Config) -> GaussianDiffusion:
    """The :class:`GaussianDiffusion` of the config's ``diffusion`` section, built from numbers only:
    the list of betas when ``diffusion.schedule`` is one, else the named schedule (``linear``, ...).
    It never imports code, so opening a run cannot run any: a ``module:function`` schedule is turned
    into its betas when the user's config is read (:func:`ddpmlab.config.resolve_schedule`).

    Raises:
        ConfigError: a ``module:function`` schedule (a run trained before runs stored their schedule
            as numbers, or a config that was not resolved).
    """
    d = config.diffusion
    if not isinstance(d.schedule, list) and d.schedule not in schedule_names():
        raise ConfigError(
            f"diffusion.schedule {d.schedule!r} names code; ddpmlab imports schedule code only when it "
            "reads your config (load_config, resolve_schedule), never to open a run: retrain a run from "
            "before runs stored their schedule as numbers, or give its betas as diffusion.schedule"
        )
    schedule = make_schedule(d.schedule, d.timesteps, **d.schedule_options)
    return GaussianDiffusion(schedule, d.prediction, d.min_snr_gamma)


def model_from_options(model_type: str, options: dict[str, Any]) -> torch.nn.Module:
    """``build_model`` with a bad option reported as a ConfigError."""
    from ddpmlab.models import build_model

    try:
        return build_model({"type": model_type, **options})
    except TypeError as error:
        raise ConfigError(f"model: {error}") from None


def _unet_options(config: Config, info: DataInfo, options: dict[str, Any]) -> None:
    num_classes = info.num_classes if config.data.conditional else None
    options.setdefault("in_channels", info.shape[0])
    options.setdefault("image_size", info.shape[-1])
    if num_classes:
        options.setdefault("condition", "class")
        options.setdefault("num_classes", num_classes)
    elif config.data.conditional and info.text_charset:
        options.setdefault("condition", "text")
        options.setdefault("text_charset", info.text_charset)
        options.setdefault("text_length", info.text_length)
    if options.get("condition") != "text":
        # like the other text options, cross-attention to text and glyph images mean nothing without text
        # labels (e.g. the captcha config with data.conditional=false)
        options.pop("text_cross_attention", None)
        options.pop("text_glyph", None)
    elif options.get("text_glyph"):
        options.setdefault("text_glyph_size", list(info.shape[1:]))  # the glyph image is the data's size


def build_model_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The denoiser a config describes, with the data-dependent options filled in from ``info``.

    Raises:
        ConfigError: a classifier config (those are trained with ``train-classifier``), or a bad option.
    """
    if config.model.type == CLASSIFIER_TYPE:
        raise ConfigError(
            "model.type classifier is a noise-aware classifier, not a denoiser: train it with "
            "`ddpmlab train-classifier` and use it with `ddpmlab sample --classifier`"
        )
    if config.model.type in EVALUATORS:
        what, command = EVALUATORS[config.model.type]
        raise ConfigError(
            f"model.type {config.model.type} is {what}, not a denoiser: train it with `ddpmlab {command}` "
            f"and use it with `ddpmlab evaluate --features {config.model.type}:RUN`"
        )
    options = dict(config.model.options)
    if config.model.type == "mlp":
        options.setdefault("data_dim", info.shape[0])
        if config.data.conditional and info.num_classes:
            options.setdefault("num_classes", info.num_classes)
    elif config.model.type == "unet":
        _unet_options(config, info, options)
    return model_from_options(config.model.type, options)


def build_classifier_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The noise-aware classifier a config describes, with ``in_channels``, ``image_size`` and
    ``num_classes`` taken from the data unless the config gives them (they must then agree).

    Raises:
        ConfigError: not a classifier config, data that is not labelled images, or a bad option.
    """
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
    return model_from_options(CLASSIFIER_TYPE, options)

