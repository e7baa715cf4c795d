"""Denoisers: every model here satisfies ``model(x_t, t, cond=None) -> Tensor`` shaped like ``x_t``.

- :class:`MLPDenoiser` for low-dimensional data [B, D];
- :class:`UNet` for images [B, C, H, W] (Ho et al. 2020);
- :class:`NoisyClassifier`, not a denoiser: ``classifier(x_t, t) -> logits [B, num_classes]``, the
  UNet's encoder half, for classifier guidance (type ``classifier``);
- :class:`JudgeCNN`, not a denoiser: ``judge(x0) -> logits``, ``judge.features(x0)``, a classifier of clean
  images that evaluates samples (type ``judge``);
- :class:`CaptchaReader`, not a denoiser: ``reader(x0) -> per-column CTC logits``, ``reader.read(x0) ->
  strings``, a CRNN that reads text-conditional samples (type ``reader``);
- condition encoders (:class:`ClassEmbedding`, :class:`TextEmbedding`) exposed as
  ``model.condition_encoder`` (None for unconditional models), with ``null_condition`` and
  ``drop(cond, p, generator)`` for classifier-free guidance;
- :func:`build_model` from a plain config dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from ddpmlab.models.classifier import NoisyClassifier
from ddpmlab.models.embeddings import (
    ClassEmbedding,
    ConditionEncoder,
    TextEmbedding,
    TimestepEmbedding,
    build_condition_encoder,
    sinusoidal_embedding,
)
from ddpmlab.models.judge import JudgeCNN
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.reader import CaptchaReader
from ddpmlab.models.unet import UNet, count_parameters

__all__ = [
    "build_model",
    "MODEL_TYPES",
    "MLPDenoiser",
    "UNet",
    "NoisyClassifier",
    "JudgeCNN",
    "CaptchaReader",
    "count_parameters",
    "sinusoidal_embedding",
    "TimestepEmbedding",
    "ConditionEncoder",
    "ClassEmbedding",
    "TextEmbedding",
    "build_condition_encoder",
]

MODEL_TYPES: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "mlp": MLPDenoiser,
    "classifier": NoisyClassifier,
    "judge": JudgeCNN,
    "reader": CaptchaReader,
}


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Build a model from a plain dict: ``{"type": "unet" | "mlp" | "classifier", **constructor_arguments}``.

    Example: ``build_model({"type": "mlp", "data_dim": 2, "hidden": 128})``. Unknown types and unknown
    options raise ValueError listing the allowed ones.
    """
    options = dict(config)
    kind = options.pop("type", None)
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r}; choose one of {', '.join(MODEL_TYPES)}")
    model_class = MODEL_TYPES[kind]
    allowed = [name for name in inspect.signature(model_class).parameters]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model type {kind!r}; allowed: {', '.join(allowed)}"
        )
    return model_class(**options)
