"""Evaluation during training (``train.eval_every``): the evaluator a run's Trainer is handed.

Every ``eval_every`` steps and at the end (see :mod:`ddpmlab.training.evaluation` for when, on which
process, and what survives a failure), ``eval_num`` samples of the EMA model are drawn as ``ddpmlab
sample`` draws them: the ``sample`` section's sampler, steps and guidance (``train.eval_sampler`` /
``eval_steps`` override the first two), classes in turn for class-conditional runs, and the fixed seed
``sample.seed``, so that every evaluation starts from the same noise and the curve compares like with
like. They are measured as ``ddpmlab evaluate`` measures them (:func:`evaluate_images`, without the
memorisation report) against up to ``eval_real_num`` real images of the run's data, in the features
``eval_features`` names (``judge:RUN``, ``reader:RUN``, ``inception[:WEIGHTS]``: anything
:func:`load_feature_network` opens). Logged as ``eval/<metric>`` (:data:`METRICS`), each beside its
real-vs-real floor, and ``eval/seconds``. The final line equals ``ddpmlab evaluate --run RUN --num
eval_num --features F --real-num eval_real_num --seed sample.seed`` (with the same sampler and steps)
on the finished run, apart from the memorisation report.

Everything that can fail does so before step 1, before anything is written: :func:`check_evaluation`
(in dry runs too) refuses evaluation of toy data or of classifiers, a sampler that cannot work and a
feature network that cannot be opened; :func:`training_evaluator` then reads the real images and
computes their features once (images the network cannot take, or too few of them for the floors,
are refused there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo
from ddpmlab.metrics import extract_features
from ddpmlab.plain import one_line
from ddpmlab.runs.evaluate import RealData, evaluate_images, load_feature_network, real_data
from ddpmlab.runs.rundir import Run
from ddpmlab.runs.sampling import make_run_sampler, sample_images
from ddpmlab.sampling import Sampler
from ddpmlab.training.evaluation import isolated_rng

__all__ = ["METRICS", "TrainingEvaluator", "check_evaluation", "evaluation_plan", "training_evaluator"]

# What each evaluation logs (as eval/<name>); class accuracy only for class-conditional runs with a
# feature network that predicts classes (a judge), reading accuracy only for text-conditional runs with
# a reader (one sample per random string).
METRICS = (
    "fd", "fd_floor", "kid", "kid_std", "kid_floor", "precision", "precision_floor", "recall",
    "recall_floor", "class_accuracy", "class_accuracy_floor", "read_exact", "read_chars",
    "read_exact_floor", "read_chars_floor",
)
PR_NEIGHBOUR = 3  # precision / recall's k: the reference must hold more than k real images


def evaluation_plan(config: Config) -> str | None:
    """One line saying what ``train.eval_every`` will do (None when it is off), for dry runs."""
    t, s = config.train, config.sample
    if not t.eval_every:
        return None
    steps = t.eval_steps or s.steps or config.diffusion.timesteps
    return (
        f"every {t.eval_every} steps and at the end: {t.eval_num} EMA samples ({t.eval_sampler or s.sampler},"
        f" {steps} steps, seed {s.seed}) against up to {t.eval_real_num} real images in the features of "
        f"{t.eval_features}"
    )


def check_evaluation(
    config: Config, info: DataInfo, diffusion: Any, denoiser: bool, device: str = "cpu"
) -> tuple[Any, Sampler] | None:
    """Check the evaluation plan of ``config`` (None when ``train.eval_every`` is 0): image data, a
    denoiser (``denoiser``: the run trains one), a sampler that can run, a feature network that opens.
    Returns (the feature network, on ``device``; the sampler).

    Raises:
        ConfigError: one line naming the setting at fault.
    """
    t = config.train
    if not t.eval_every:
        return None
    if not denoiser:
        raise ConfigError("train.eval_every measures a denoiser's samples: it applies to train, not here")
    if info.kind != "image":
        raise ConfigError(f"train.eval_every measures image runs; {config.data.name} is {info.kind} data")
    run = Run(Path("."), config, None, diffusion, info, 0, torch.device(device))  # type: ignore[arg-type]
    try:
        sampler = make_run_sampler(run, t.eval_sampler, t.eval_steps)
    except ValueError as error:
        raise ConfigError(
            f"the evaluation's sampler cannot work (train.eval_sampler={t.eval_sampler}, train.eval_steps="
            f"{t.eval_steps}, diffusion.timesteps={config.diffusion.timesteps}): {one_line(error)}"
        ) from None
    return _network(t.eval_features, device), sampler


def _network(spec: str, device: str) -> Any:
    try:
        return load_feature_network(spec, device)
    except (ValueError, OSError) as error:  # RunError and CheckpointError included
        raise ConfigError(f"train.eval_features={spec}: {one_line(error)}") from None


@dataclass
class TrainingEvaluator:
    """``evaluator(step, ema_model) -> {metric: value}``: what the Trainer calls (see the module
    docstring); the real images and their features are read once, when it is built."""

    run_dir: Path
    config: Config
    info: DataInfo
    diffusion: Any
    device: torch.device
    network: Any
    sampler: Sampler
    real: RealData
    real_features: torch.Tensor

    def __call__(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        run = Run(self.run_dir, self.config, model, self.diffusion, self.info, step, self.device)
        t, seed = self.config.train, self.config.sample.seed
        images, labels = sample_images(run, t.eval_num, self.sampler, seed=seed)
        result = evaluate_images(
            images, labels, self.real, self.network, seed, real_features=self.real_features,
            memorisation=False,
        )
        return {key: float(result[key]) for key in METRICS if key in result}


def training_evaluator(
    config: Config, info: DataInfo, diffusion: Any, run_dir: Path, device: torch.device, denoiser: bool = True
) -> TrainingEvaluator | None:
    """The evaluator of a run about to train (None when ``train.eval_every`` is 0, and on ranks other
    than 0 under torchrun, where rank 0 builds it and its errors reach every rank). The global random
    generators are left as they were: training is the same with evaluation as without.

    Raises:
        ConfigError: see :func:`check_evaluation`; the network cannot take the run's images, or the
            real data is too small for ``eval_num`` samples and their floors.
        RunError: the real data cannot be read.
    """
    if not config.train.eval_every:
        return None
    built: dict[str, TrainingEvaluator] = {}

    def build() -> None:
        with isolated_rng(device):
            built["evaluator"] = _build(config, info, diffusion, run_dir, device, denoiser)

    distributed.main_first(build)  # only rank 0 holds one; every rank raises rank 0's error
    return built.get("evaluator")


def _build(
    config: Config, info: DataInfo, diffusion: Any, run_dir: Path, device: torch.device, denoiser: bool
) -> TrainingEvaluator:
    t = config.train
    network, sampler = check_evaluation(config, info, diffusion, denoiser, str(device)) or (None, None)
    probe = Run(run_dir, config, None, diffusion, info, 0, device)  # type: ignore[arg-type]
    real = real_data(probe, t.eval_real_num, config.sample.seed)
    if len(real.images) - t.eval_num <= PR_NEIGHBOUR:
        raise ConfigError(
            f"train.eval_num={t.eval_num} needs more than {t.eval_num + PR_NEIGHBOUR} real images (the "
            f"floors hold {t.eval_num} out of the reference); {len(real.images)} were read "
            f"(train.eval_real_num={t.eval_real_num})"
        )
    try:
        real_features = extract_features(real.images, network)
    except ValueError as error:
        raise ConfigError(f"train.eval_features={t.eval_features}: {one_line(error)}") from None
    return TrainingEvaluator(
        run_dir, config, info, diffusion, device, network, sampler, real, real_features
    )
