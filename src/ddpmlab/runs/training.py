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
from ddpmlab.runs.lock import RunLock
from ddpmlab.runs.rundir import (
    CHECKPOINT,
    CONFIG_FILE,
    Run,
    RunError,
    prepare_run_dir,
    saved_config,
    stop_rule_changes,
    truncate_metrics,
    with_stop_rule,
    write_atomically,
)
from ddpmlab.runs.sampling import make_run_sampler
from ddpmlab.runs.training_eval import check_evaluation, training_evaluator
from ddpmlab.training.checkpoint import TRAINING_KEYS, load_checkpoint, remove_temporaries
from ddpmlab.training.objectives import ClassifierObjective, DiffusionObjective
from ddpmlab.training.trainer import Trainer

__all__ = [
    "RunKind",
    "DIFFUSION",
    "CLASSIFIER",
    "train_run",
    "train_classifier_run",
    "resolve_batch_size",
    "check_sampling_plan",
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
        finish: ``(run_dir, info) -> None``, run by rank 0 after training, before the run directory
            is let go (e.g. a reader's held-out accuracy); None for nothing.
    """

    build_model: Callable[[Config, DataInfo], torch.nn.Module]
    objective: Callable[[Any], Any]
    records_model_options: bool = False
    finish: Callable[[Path, DataInfo], None] | None = None


DIFFUSION = RunKind(build_model_for, DiffusionObjective)
CLASSIFIER = RunKind(build_classifier_for, ClassifierObjective, records_model_options=True)


def train_run(
    config: Config | None,
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
    Resuming keeps the run's saved config and its global batch size (``train.global_batch_size``),
    also with another number of processes; only the stopping rule (``train.steps``, ``epochs``,
    ``minutes``) is taken from ``config`` (None: the saved one), and a change is printed. One process
    at a time trains in a run directory (a lock, see :mod:`ddpmlab.runs.lock`); a kill at any moment,
    even during a checkpoint write, leaves a run that ``resume=True`` continues to the weights an
    uninterrupted run would have.

    Raises:
        RunError: a run that would be overwritten, nothing to resume, another process training in
            ``run_dir``, a checkpoint of another run, or data that changed since the run was trained.
        CheckpointError: a damaged or incomplete checkpoint, one whose weights do not fit its config,
            or one that cannot be written. ConfigError / DataError: a bad config (e.g. a sampler its
            diffusion cannot run) or missing data. NonFiniteError: the loss or gradient became inf or
            NaN (the last good checkpoint is kept).
    """
    finish = _toy_report if report else None
    return _train(DIFFUSION, config, Path(run_dir), resume, hooks, finish)[0]


def _toy_report(run_dir: Path, info: DataInfo) -> None:
    if info.kind == "toy":
        from ddpmlab.runs.rundir import open_run
        from ddpmlab.runs.toy_report import write_toy_report

        write_toy_report(open_run(run_dir))


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
    kind: RunKind,
    config: Config | None,
    run_dir: Path,
    resume: bool,
    hooks: list | None,
    finish: Callable[[Path, DataInfo], None] | None = None,
) -> tuple[Trainer, DataInfo]:
    """Claim the run directory (rank 0: its lock), check and build everything, and only then write
    into it (config.yaml, metrics.jsonl cut back to the checkpoint's step), train, and ``finish``
    (rank 0, e.g. the toy report) before letting the directory go."""
    if config is None and not resume:
        raise RunError("training needs a config unless it resumes a run")
    lock = RunLock(run_dir)  # held by rank 0 only, until training ends
    created = not run_dir.exists()
    distributed.main_first(_claim, run_dir, resume, lock)
    try:
        try:
            trainer, info, config = _build(kind, config, run_dir, resume, hooks)
        except BaseException:
            if created and lock.held:  # a start refused before training leaves no folder behind
                lock.remove_folder()
            raise
        if distributed.rank() == 0:
            header = _batch_comment(config, distributed.world_size())
            write_atomically(run_dir / CONFIG_FILE, header + config.to_yaml())
            truncate_metrics(run_dir, trainer.state.step)  # what a killed session logged past it
            remove_temporaries(run_dir / CHECKPOINT)  # what a kill during a save left
        trainer.fit()
        distributed.barrier()  # every process returns once the final checkpoint is written
        if finish is not None and distributed.rank() == 0:
            finish(run_dir, info)
    finally:
        lock.release()
    return trainer, info


def _claim(run_dir: Path, resume: bool, lock: RunLock) -> None:
    """Check the run directory can be used as asked, create it, take its lock, and check again (a
    process that held the lock until now may have written a checkpoint)."""
    prepare_run_dir(run_dir, resume)
    lock.acquire()
    try:
        prepare_run_dir(run_dir, resume)
    except RunError:
        lock.release()
        raise


def _build(
    kind: RunKind, config: Config | None, run_dir: Path, resume: bool, hooks: list | None
) -> tuple[Trainer, DataInfo, Config]:
    """The Trainer of the run, resumed when asked; nothing is written to the run directory. Every
    check that can run before training runs here: the checkpoint's integrity, that it belongs to
    this run and fits its model, the data, the run's default sampler, the evaluation plan (its feature
    network opened and the real data's features computed: ``train.eval_every``)."""
    rank, world = distributed.rank(), distributed.world_size()
    state = None
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT, required=TRAINING_KEYS)
        config = _resumed_config(run_dir, config, state)
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
    if kind is DIFFUSION:
        check_sampling_plan(config, info, model, diffusion)
    device = distributed.local_device(config.train.device)
    evaluator = training_evaluator(config, info, diffusion, run_dir, device, denoiser=kind is DIFFUSION)
    trainer = Trainer(
        model,
        diffusion,
        batches,
        config.train,
        run_dir=run_dir,
        conditional=config.data.conditional or kind is CLASSIFIER,  # a classifier's labels are its target
        run_config=config.to_dict(),
        hooks=hooks,
        device=device,
        objective=kind.objective(diffusion),
        evaluator=evaluator,
    )
    if state is not None:
        trainer.load_state_dict(state, run_dir / CHECKPOINT)
    return trainer, info, config


def _resumed_config(run_dir: Path, config: Config | None, state: dict[str, Any]) -> Config:
    """The saved config with the stopping rule of ``config`` (if given); a change is printed."""
    saved = saved_config(run_dir, None, state)
    resumed = with_stop_rule(saved, config)
    changes = stop_rule_changes(saved, resumed)
    if changes and distributed.is_main():
        print(f"ddpmlab: resuming with {', '.join(changes)}", file=sys.stderr)
    return resumed


def check_sampling_plan(config: Config, info: DataInfo, model: torch.nn.Module, diffusion: Any) -> None:
    """Build the run's default sampler (the ``sample`` section against the diffusion), as sampling
    the trained run (and a toy run's report) will: a plan that cannot work is refused before training.

    Raises:
        ConfigError: e.g. ``sample.steps`` larger than ``diffusion.timesteps``.
    """
    run = Run(Path("."), config, model, diffusion, info, 0, torch.device("cpu"))
    try:
        make_run_sampler(run)
    except ValueError as error:  # ScheduleError included
        raise ConfigError(
            f"the run's sampler cannot work (sample.sampler={config.sample.sampler}, sample.steps="
            f"{config.sample.steps}, diffusion.timesteps={config.diffusion.timesteps}): {error}"
        ) from None


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
    opened from its model options alone): the model's ``data_options`` if it has them, else its
    ``in_channels``, ``image_size`` and ``num_classes``."""
    raw = config.to_dict()
    options = getattr(model, "data_options", None)
    if options is None:
        options = {
            "in_channels": model.in_channels, "image_size": model.image_size, "num_classes": model.num_classes
        }
    raw["model"].update(options)
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


def dry_run(
    config: Config, classifier: bool = False, kind: RunKind | None = None
) -> tuple[torch.nn.Module, DataInfo]:
    """The model a config would train (a denoiser; a classifier with ``classifier``; any
    :class:`RunKind` with ``kind``, e.g. a judge) and the data's description, without training and,
    where the config decides the data's shape and classes (e.g. CIFAR-10), without reading the data;
    otherwise the data is built to learn them (e.g. a labelled folder's classes). An evaluation plan
    (``train.eval_every``) is checked and its feature network opened, on the CPU."""
    info = describe_data(config.data)
    if info is None:
        info = build_data(config.data, config.train.batch_size, config.train.seed)[1]
    kind = kind or (CLASSIFIER if classifier else DIFFUSION)
    model = kind.build_model(config, info)
    diffusion = build_diffusion(config)
    if kind is DIFFUSION:
        check_sampling_plan(config, info, model, diffusion)
    check_evaluation(config, info, diffusion, denoiser=kind is DIFFUSION)
    return model, info


def train_kind_run(kind: RunKind, config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train a run of any :class:`RunKind` in ``run_dir`` (the same path as :func:`train_run`, without
    sample grids; then the kind's ``finish``); e.g. a judge (:mod:`ddpmlab.runs.judge`) or a reader
    (:mod:`ddpmlab.runs.reader`). Returns the finished Trainer."""
    return _train(kind, config, Path(run_dir), resume, None, kind.finish)[0]
