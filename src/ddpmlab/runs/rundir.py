"""The run directory: what it holds, how it is prepared, and how a trained run is opened.

A run directory is the unit a user keeps::

    runs/NAME/config.yaml          the resolved config, with data.info (everything later commands need)
    runs/NAME/checkpoints/last.pt  model, EMA, optimizer, ... (see ddpmlab.training.checkpoint)
    runs/NAME/metrics.jsonl        one JSON line per log step, plus evaluation records
    runs/NAME/logs/                TensorBoard
    runs/NAME/plots/, samples/     pictures

Opening a run (:func:`open_run`, :func:`open_classifier`) reads the config stored in the checkpoint and
the EMA weights; it never reads the training data: the data's description (image shape, classes, text
charset and length, value range) was recorded as ``data.info`` when the run was trained. Runs trained
before that record existed are opened by rebuilding their data once, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo, build_data, describe_data
from ddpmlab.data.base import DataError
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.runs.build import CLASSIFIER_TYPE, build_diffusion, build_model_for, model_from_options
from ddpmlab.training.checkpoint import load_checkpoint

__all__ = [
    "CONFIG_FILE",
    "CHECKPOINT",
    "RunError",
    "Run",
    "ClassifierRun",
    "prepare_run_dir",
    "saved_config",
    "run_data_info",
    "open_run",
    "open_classifier",
    "append_metrics",
    "read_metrics",
]

CONFIG_FILE = "config.yaml"
CHECKPOINT = Path("checkpoints") / "last.pt"


class RunError(ValueError):
    """A run directory that cannot be used as asked (missing, of another kind, or would be overwritten)."""


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run that already has checkpoints (unless resuming); create the folder."""
    has_checkpoint = (run_dir / CHECKPOINT).exists()
    if resume and not has_checkpoint:
        raise RunError(f"nothing to resume: {run_dir / CHECKPOINT} does not exist")
    if not resume and has_checkpoint:
        raise RunError(
            f"{run_dir} already holds a trained run; pass --resume to continue it "
            "or --run to choose another directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def saved_config(run_dir: Path, config: Config) -> Config:
    """The config to resume ``run_dir`` with: the one its checkpoint was trained with, except the
    stopping rule (``train.steps``, ``epochs``, ``minutes``), which is taken from ``config``. A run
    saved before ``train.global_batch_size`` was recorded trained in one process: its global batch is
    batch_size x grad_accum."""
    saved = Config.from_dict(load_checkpoint(run_dir / CHECKPOINT)["config"]).to_dict()
    train = saved["train"]
    if train["global_batch_size"] is None:
        train["global_batch_size"] = train["batch_size"] * train["grad_accum"]
    stop = {key: config.to_dict()["train"][key] for key in ("steps", "epochs", "minutes")}
    return Config.from_dict({**saved, "train": {**train, **stop}})


def run_data_info(config: Config, where: Path | str = "the run") -> DataInfo:
    """The data description of a trained run's config: ``data.info`` (toy runs also get their
    distribution back, which needs no files). A run saved before ``data.info`` existed has its data
    rebuilt; if that fails the error says why the data is needed."""
    if config.data.info is not None:
        dataset = None
        if config.data.info.get("kind") == "toy":
            dataset = describe_data(config.data).dataset  # the exact distribution: no file is read
        try:
            return DataInfo.from_dict(config.data.info, dataset)
        except ValueError as error:
            raise RunError(f"{where}: its config.yaml has a damaged data.info ({error})") from None
    try:
        return build_data(config.data, config.train.batch_size, config.train.seed)[1]
    except (DataError, ConfigError) as error:
        raise RunError(
            f"{where} was trained before runs recorded their data (data.info), so opening it needs its "
            f"data: {error}"
        ) from None


@dataclass
class Run:
    """A trained run loaded for sampling: its config, EMA model, diffusion and data description."""

    run_dir: Path
    config: Config
    model: torch.nn.Module
    diffusion: GaussianDiffusion
    info: DataInfo
    step: int
    device: torch.device

    @property
    def conditional(self) -> bool:
        return self.config.data.conditional

    @property
    def text_encoder(self) -> Any:
        """The model's :class:`~ddpmlab.models.embeddings.TextEmbedding` (its ``charset`` and
        ``length``) when the run is conditioned on text, else None."""
        from ddpmlab.models.embeddings import TextEmbedding

        encoder = getattr(self.model, "condition_encoder", None)
        return encoder if self.conditional and isinstance(encoder, TextEmbedding) else None


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


def _load(run_dir: Path, what: str) -> dict[str, Any]:
    if not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} is not a trained {what} (no {CHECKPOINT})")
    return load_checkpoint(run_dir / CHECKPOINT, map_location="cpu")


def open_run(run_dir: str | Path, device: str = "auto") -> Run:
    """Load a run directory's config and EMA weights onto ``device`` (``auto``: see
    :func:`ddpmlab.distributed.local_device`), without reading its training data.

    Raises:
        RunError: not a trained run; CheckpointError: an unreadable checkpoint; ConfigError: a
            classifier run (those are opened with :func:`open_classifier`).
    """
    run_dir = Path(run_dir)
    target = distributed.local_device(device)
    state = _load(run_dir, "run")
    config = Config.from_dict(state["config"])
    info = run_data_info(config, run_dir)
    model = build_model_for(config, info)
    model.load_state_dict(state["ema"]["model"])
    model.to(target).eval()
    return Run(run_dir, config, model, build_diffusion(config), info, int(state["step"]), target)


def open_classifier(run_dir: str | Path, device: str | torch.device = "auto") -> ClassifierRun:
    """Load a classifier run's config and EMA weights (eval mode, parameters frozen: guidance only
    needs the gradient with respect to x_t). Raises RunError for a run of another kind."""
    run_dir = Path(run_dir)
    target = device if isinstance(device, torch.device) else distributed.resolve_device(device)
    state = _load(run_dir, "classifier run")
    config = Config.from_dict(state["config"])
    if config.model.type != CLASSIFIER_TYPE:
        raise RunError(
            f"{run_dir} is not a classifier run (its model.type is {config.model.type}); "
            "train one with `ddpmlab train-classifier`"
        )
    model = model_from_options(CLASSIFIER_TYPE, config.model.options)
    model.load_state_dict(state["ema"]["model"])
    model.to(target).eval().requires_grad_(False)
    return ClassifierRun(run_dir, config, model, build_diffusion(config), int(state["step"]), target)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one JSON line to the run's ``metrics.jsonl``."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's ``metrics.jsonl`` (an empty list when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
