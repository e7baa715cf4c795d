"""Training a run: one path for diffusion models and for noise-aware classifiers.

:func:`train_run` (a denoiser: ``ddpmlab train``) and :func:`train_classifier_run` (a classifier for
classifier guidance: ``ddpmlab train-classifier``) share every step: prepare the run directory, take
the saved config on ``--resume``, settle the batch sizes, build the data (recording its description
as ``data.info``), the model and the diffusion, write ``config.yaml`` and train with the one
:class:`~ddpmlab.training.trainer.Trainer`. They differ only in what they build and minimise (a
:class:`RunKind`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo, build_data, describe_data
from ddpmlab.runs.build import build_classifier_for, build_diffusion, build_model_for
from ddpmlab.runs.rundir import CONFIG_FILE, RunError, prepare_run_dir, saved_config
from ddpmlab.training.objectives import ClassifierObjective, DiffusionObjective
from ddpmlab.training.trainer import Trainer

__all__ = [
    "RunKind",
    "DIFFUSION",
    "CLASSIFIER",
    "train_run",
    "train_classifier_run",
    "resolve_batch_size",
    "dry_run",
    "train_kind_run",
]


@dataclass(frozen=True)
class RunKind:
    """What a kind of run builds and minimises.

    Attributes:
        build_model: ``(config, info) -> model``.
        objective: ``diffusion -> objective`` (see :mod:`ddpmlab.training.objectives`).
        records_model_options: write the model's data-dependent options into the config (classifiers:
            they are opened from their model options alone).
    """

    build_model: Callable[[Config, DataInfo], torch.nn.Module]
    objective: Callable[[Any], Any]
    records_model_options: bool = False


DIFFUSION = RunKind(build_model_for, DiffusionObjective)
CLASSIFIER = RunKind(build_classifier_for, ClassifierObjective, records_model_options=True)


def train_run(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    hooks: list | None = None,
    report: bool = True,
) -> Trainer:
    """Build the denoiser ``config`` describes and train it in ``run_dir``; returns the finished Trainer.

    Image runs with ``train.sample_every`` write a sample grid that often; after training, toy runs
    get their plots and metrics (``report``). Under torchrun (after :func:`ddpmlab.distributed.init`)
    every process calls this: rank 0 prepares the run directory while the others wait, and alone
    writes into it; each process trains on its share of every global batch, on its own device.
    Resuming keeps the run's saved config (only the stopping rule may change) and its global batch
    size (``train.global_batch_size``), also with another number of processes.

    Raises:
        RunError: a run that would be overwritten, nothing to resume, or data that changed since the
            run was trained. ConfigError / DataError: a bad config or missing data.
    """
    trainer, info = _train(DIFFUSION, config, Path(run_dir), resume, hooks)
    if report and info.kind == "toy" and distributed.rank() == 0:
        from ddpmlab.runs.toy_report import write_toy_report

        from ddpmlab.runs.rundir import open_run

        write_toy_report(open_run(run_dir))
    return trainer


def train_classifier_run(config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train the noise-aware classifier ``config`` describes in ``run_dir``; returns the finished Trainer.

    Each batch (x0, labels) is noised to x_t = q_sample(x0, t, eps) with t uniform over the config's
    diffusion timesteps, and the classifier minimises the cross-entropy of its logits at (x_t, t)
    (:class:`~ddpmlab.training.objectives.ClassifierObjective`). Everything else (AdamW, warmup +
    cosine LR, EMA, checkpoints, exact resume, metrics) is the diffusion runs' path. The run's
    config.yaml records the model's ``in_channels``, ``image_size`` and ``num_classes``.
    """
    return _train(CLASSIFIER, config, Path(run_dir), resume, None)[0]


def _train(
    kind: RunKind, config: Config, run_dir: Path, resume: bool, hooks: list | None
) -> tuple[Trainer, DataInfo]:
    rank, world = distributed.rank(), distributed.world_size()
    distributed.main_first(prepare_run_dir, run_dir, resume)
    if resume:
        config = saved_config(run_dir, config)
    config = resolve_batch_size(config, world)
    if world > 1 and config.data.download:  # rank 0 fetches missing data alone, then the others read it
        distributed.main_first(lambda: _build_data(config, rank, world) and None)
    torch.manual_seed(config.train.seed)
    batches, info = _build_data(config, rank, world)
    config = _with_data_info(config, info, resume)
    hooks = list(hooks or [])
    if info.kind == "image" and config.train.sample_every and kind is DIFFUSION:
        from ddpmlab.runs.grids import training_grid_hook

        hooks.append(training_grid_hook(run_dir, info, config))
    model = kind.build_model(config, info)
    if kind.records_model_options:
        config = _with_model_options(config, model)
    diffusion = build_diffusion(config)
    if rank == 0:
        (run_dir / CONFIG_FILE).write_text(_batch_comment(config, world) + config.to_yaml())
    trainer = Trainer(
        model,
        diffusion,
        batches,
        config.train,
        run_dir=run_dir,
        conditional=config.data.conditional or kind is CLASSIFIER,  # a classifier's labels are its target
        run_config=config.to_dict(),
        hooks=hooks,
        device=distributed.local_device(config.train.device),
        objective=kind.objective(diffusion),
    )
    if resume:
        trainer.resume()
    trainer.fit()
    distributed.barrier()  # every process returns once the final checkpoint is written
    return trainer, info


def _build_data(config: Config, rank: int, world: int):
    return build_data(config.data, config.train.batch_size, config.train.seed, rank, world)


def _with_data_info(config: Config, info: DataInfo, resume: bool) -> Config:
    """``config`` with the data's description as ``data.info``; on resume it must match the saved one."""
    recorded = config.data.info
    if resume and recorded is not None and DataInfo.from_dict(recorded).to_dict() != info.to_dict():
        raise RunError(
            f"the data changed since this run was trained: it was {_summary(recorded)}, it is now "
            f"{_summary(info.to_dict())}"
        )
    raw = config.to_dict()
    raw["data"]["info"] = info.to_dict()
    return Config.from_dict(raw)


def _summary(info: dict[str, Any]) -> str:
    shape = "x".join(str(n) for n in info["shape"])
    what = f"{info['num_classes']} classes" if info["num_classes"] else "no classes"
    if info.get("text_charset"):
        what = f"text of {info['text_length']} characters of {info['text_charset']!r}"
    return f"{info['kind']} data {shape}, {what}"


def _with_model_options(config: Config, model: torch.nn.Module) -> Config:
    """``config`` with the model options that came from the data written in (a classifier run is
    opened from its model options alone)."""
    raw = config.to_dict()
    raw["model"].update(
        in_channels=model.in_channels, image_size=model.image_size, num_classes=model.num_classes
    )
    return Config.from_dict(raw)


def resolve_batch_size(config: Config, world_size: int = 1) -> Config:
    """``config`` with ``train.batch_size`` (per process) and ``train.global_batch_size`` (per optimizer
    step: batch_size x ``world_size`` processes x grad_accum) both filled in. A global batch size in
    the config decides (batch_size is derived from it); without one it follows from batch_size.

    Raises:
        ConfigError: a global batch size that does not split evenly over the processes.
    """
    train = config.train
    per_step = world_size * train.grad_accum
    if train.global_batch_size is None:
        batch, global_batch = train.batch_size, train.batch_size * per_step
    elif train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} does not split evenly over {world_size} "
            f"process(es) x grad_accum {train.grad_accum}"
        )
    else:
        batch, global_batch = train.global_batch_size // per_step, train.global_batch_size
    if (batch, global_batch) == (train.batch_size, train.global_batch_size):
        return config
    if batch != train.batch_size and distributed.is_main():
        print(
            f"ddpmlab: train.batch_size={batch} per process, for train.global_batch_size={global_batch} "
            f"over {world_size} process(es) x grad_accum {train.grad_accum}",
            file=sys.stderr,
        )
    return config.with_overrides([f"train.batch_size={batch}", f"train.global_batch_size={global_batch}"])


def _batch_comment(config: Config, world_size: int) -> str:
    t = config.train
    return (
        f"# global batch per optimizer step: {t.global_batch_size} = batch_size {t.batch_size} per process"
        f" x {world_size} process(es) x grad_accum {t.grad_accum}; lr {t.lr:g} is not scaled with it\n"
    )


def dry_run(config: Config, classifier: bool = False) -> tuple[torch.nn.Module, DataInfo]:
    """The model a config would train and the data's description, without training and, where the
    config decides the data's shape and classes (e.g. CIFAR-10), without reading the data; otherwise
    the data is built to learn them (e.g. a labelled folder's classes)."""
    info = describe_data(config.data)
    if info is None:
        info = build_data(config.data, config.train.batch_size, config.train.seed)[1]
    kind = CLASSIFIER if classifier else DIFFUSION
    return kind.build_model(config, info), info


def train_kind_run(kind: RunKind, config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train a run of any :class:`RunKind` in ``run_dir`` (the same path as :func:`train_run`, without
    sample grids or reports); e.g. a judge (:mod:`ddpmlab.runs.judge`). Returns the finished Trainer."""
    return _train(kind, config, Path(run_dir), resume, None)[0]
