"""A run's forward process and sampler settings as diffusers' ``DDPMScheduler`` config, and back.

Keys of ``scheduler/scheduler_config.json``, diffusers -> ours:

=============================================  ===============================================================
``num_train_timesteps``                        ``diffusion.timesteps``
``beta_schedule``, ``beta_start``,             ``diffusion.schedule`` (+ ``schedule_options``): a named
``beta_end``, ``trained_betas``                schedule where one gives the same betas (to float64 rounding:
                                               ``linear``, ``quadratic`` = diffusers' ``scaled_linear``,
                                               ``cosine`` = ``squaredcos_cap_v2``, ``sigmoid``), else the
                                               list of betas
``prediction_type``                            ``diffusion.prediction``: epsilon -> eps, sample -> x0,
                                               v_prediction -> v
``variance_type``                              ``sample.variance``: fixed_small(_log) -> fixed_small,
                                               fixed_large(_log) -> fixed_large (learned ones: ValueError)
``clip_sample`` / ``clip_sample_range``        ``sample.clip_x0`` (clip_sample false -> null; image runs then
                                               still clip to [-1, 1], as ddpmlab always does)
``timestep_spacing``                           ``sample.spacing`` (diffusers' default ``leading`` when absent)
=============================================  ===============================================================

Export writes the run's betas as a named diffusers schedule when that formula gives them (compared in
float64 to 1e-12), else as ``trained_betas``: diffusers keeps them in float32 either way. It writes
``variance_type`` and ``timestep_spacing`` from the run's ``sample`` section, ``clip_sample`` true with
the run's ``clip_x0`` (1 for images by default), and ``thresholding`` false.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ddpmlab.config import Config
from ddpmlab.models.diffusers_format import DIFFUSERS_VERSION
from ddpmlab.schedules import NoiseSchedule, ScheduleError, cosine_betas, make_schedule

__all__ = ["PREDICTIONS", "scheduler_config", "diffusers_betas", "import_schedule"]

PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # ours -> diffusers
VARIANCES = {
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
    "fixed_large_log": "fixed_large",
}
SAME_BETAS = 1e-12  # relative: the same schedule up to float64 rounding


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= SAME_BETAS * b.abs()).all())


def _named_betas(name: str, num: int, start: float, end: float) -> torch.Tensor:
    """diffusers' formula for ``beta_schedule`` ``name``, in float64."""
    if name == "linear":
        return torch.linspace(start, end, num, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(math.sqrt(start), math.sqrt(end), num, dtype=torch.float64) ** 2
    if name == "squaredcos_cap_v2":
        return cosine_betas(num)
    if name == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, num, dtype=torch.float64)) * (end - start) + start
    raise ValueError(f"diffusers beta_schedule {name!r} has no ddpmlab counterpart")


def _beta_keys(betas: torch.Tensor) -> dict[str, Any]:
    """The scheduler keys that give ``betas``: a named schedule if one does, else trained_betas."""
    num, start, end = betas.numel(), float(betas[0]), float(betas[-1])
    for name in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        if _same(_named_betas(name, num, start, end), betas):
            if name == "squaredcos_cap_v2":
                start, end = 0.0001, 0.02  # unused by that schedule: diffusers' defaults
            return {"beta_schedule": name, "beta_start": start, "beta_end": end, "trained_betas": None}
    return {"beta_schedule": "linear", "beta_start": start, "beta_end": end, "trained_betas": betas.tolist()}


def scheduler_config(schedule: NoiseSchedule, config: Config) -> dict[str, Any]:
    """``scheduler/scheduler_config.json`` (a ``DDPMScheduler``) for a run's ``schedule`` (not respaced)
    and its config's prediction and ``sample`` section."""
    sample = config.sample
    return {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": schedule.num_timesteps,
        **_beta_keys(schedule.betas),
        "variance_type": sample.variance,
        "clip_sample": True,
        "clip_sample_range": sample.clip_x0 if sample.clip_x0 is not None else 1.0,
        "prediction_type": PREDICTIONS[config.diffusion.prediction],
        "thresholding": False,
        "timestep_spacing": sample.spacing,
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }


def diffusers_betas(scheduler: Mapping[str, Any]) -> torch.Tensor:
    """The float64 betas [T] a diffusers scheduler config describes (its formula, in float64).

    Raises:
        ValueError: an unknown ``beta_schedule``, or ``rescale_betas_zero_snr`` (its last beta is 1, a
            step ddpmlab's schedules refuse).
    """
    if scheduler.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler rescale_betas_zero_snr=true makes the last beta 1, which ddpmlab refuses")
    if scheduler.get("trained_betas") is not None:
        return torch.tensor(scheduler["trained_betas"], dtype=torch.float64)
    num = int(scheduler.get("num_train_timesteps", 1000))
    start, end = float(scheduler.get("beta_start", 0.0001)), float(scheduler.get("beta_end", 0.02))
    return _named_betas(scheduler.get("beta_schedule", "linear"), num, start, end)


def _our_schedule(betas: torch.Tensor, start: float, end: float) -> tuple[Any, dict[str, float]]:
    """(diffusion.schedule, schedule_options) giving ``betas``: a named schedule if one does."""
    num = betas.numel()
    scaled = {"beta_start": start * num / 1000, "beta_end": end * num / 1000}  # ours scale by 1000 / T
    candidates = [(name, {}) for name in ("linear", "quadratic", "cosine", "sigmoid")]
    candidates += [("linear", scaled), ("quadratic", scaled), ("sigmoid", scaled)]
    for name, options in candidates:
        try:
            if _same(make_schedule(name, num, **options).betas, betas):
                return name, options
        except ScheduleError:  # e.g. endpoints too large for this T
            continue
    return betas.tolist(), {}


def import_schedule(scheduler: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``diffusion`` and ``sample`` sections of a run for a diffusers scheduler config.

    Raises:
        ValueError: a prediction type, variance type or schedule ddpmlab cannot express (learned
            variances, thresholding, zero terminal SNR).
    """
    prediction = scheduler.get("prediction_type", "epsilon")
    ours = {theirs: name for name, theirs in PREDICTIONS.items()}
    if prediction not in ours:
        raise ValueError(f"scheduler prediction_type {prediction!r} has no ddpmlab counterpart")
    variance = scheduler.get("variance_type", "fixed_small")
    if variance not in VARIANCES:
        raise ValueError(f"scheduler variance_type {variance!r}: ddpmlab samples with fixed variances only")
    if scheduler.get("thresholding"):
        raise ValueError("scheduler thresholding=true (dynamic thresholding) has no ddpmlab counterpart")
    betas = diffusers_betas(scheduler)
    start, end = float(scheduler.get("beta_start", 0.0001)), float(scheduler.get("beta_end", 0.02))
    schedule, options = _our_schedule(betas, start, end)
    diffusion = {
        "schedule": schedule,
        "timesteps": betas.numel(),
        "prediction": ours[prediction],
        "schedule_options": options,
    }
    clip = float(scheduler.get("clip_sample_range", 1.0)) if scheduler.get("clip_sample", True) else None
    sample = {
        "sampler": "ddpm",
        "variance": VARIANCES[variance],
        "clip_x0": clip,
        "spacing": scheduler.get("timestep_spacing", "leading"),
    }
    return diffusion, sample
