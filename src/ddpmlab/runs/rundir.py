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
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import Config, ConfigError, load_config
from ddpmlab.data import DataInfo, build_data, describe_data
from ddpmlab.data.base import DataError
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.runs.build import CLASSIFIER_TYPE, build_diffusion, build_model_for, model_from_options
from ddpmlab.training.checkpoint import CheckpointError, load_checkpoint, load_weights, peek_checkpoint
from ddpmlab.training.guard import finite_weights

__all__ = [
    "CONFIG_FILE",
    "CHECKPOINT",
    "RunError",
    "Run",
    "ClassifierRun",
    "STOP_RULE",
    "EVALUATION_PLAN",
    "RESUMABLE",
    "prepare_run_dir",
    "saved_config",
    "resume_config",
    "stop_rule_changes",
    "with_stop_rule",
    "write_atomically",
    "truncate_metrics",
    "run_data_info",
    "open_run",
    "open_classifier",
    "open_frozen_model",
    "append_metrics",
    "read_metrics",
]

CONFIG_FILE = "config.yaml"
CHECKPOINT = Path("checkpoints") / "last.pt"
METRICS_FILE = "metrics.jsonl"
STOP_RULE = ("train.steps", "train.epochs", "train.minutes")
EVALUATION_PLAN = tuple(
    f"train.eval_{key}" for key in ("every", "num", "features", "sampler", "steps", "real_num")
)
RESUMABLE = (*STOP_RULE, *EVALUATION_PLAN)  # all a resume may change: neither changes the weights
IDENTITY = ("data", "model", "diffusion")  # what a checkpoint must share with its run's config.yaml


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


def saved_config(run_dir: Path, config: Config | None = None, state: dict[str, Any] | None = None) -> Config:
    """The config to resume ``run_dir`` with: the one its checkpoint was trained with, except the
    stopping rule (``train.steps``, ``epochs``, ``minutes``), taken from ``config`` when one is given.
    ``state`` is the checkpoint's content when already loaded (else its config is read from the
    file). A run saved before ``train.global_batch_size`` was recorded trained in one process: its
    global batch is batch_size x grad_accum.

    Raises:
        RunError: a checkpoint that is not this run's (its data, model or diffusion differ from the
            run's config.yaml), or a config.yaml that cannot be read. CheckpointError: an unreadable
            checkpoint.
    """
    state = state if state is not None else peek_checkpoint(run_dir / CHECKPOINT)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {run_dir / CHECKPOINT} is incomplete: it has no config entry")
    saved = Config.from_dict(state["config"])
    _check_belongs(run_dir, saved)
    raw = saved.to_dict()
    train = raw["train"]
    if train["global_batch_size"] is None:
        train["global_batch_size"] = train["batch_size"] * train["grad_accum"]
    return with_stop_rule(Config.from_dict(raw), config)


def with_stop_rule(saved: Config, config: Config | None) -> Config:
    """``saved`` with the stopping rule (``train.steps``, ``epochs``, ``minutes``) and the evaluation
    plan (``train.eval_*``) of ``config`` (``saved`` itself when ``config`` is None)."""
    if config is None:
        return saved
    raw = saved.to_dict()
    for key in RESUMABLE:
        name = key.split(".")[1]
        raw["train"][name] = getattr(config.train, name)
    return Config.from_dict(raw)


def resume_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """What ``ddpmlab train --resume`` continues: the run as it was saved (:func:`saved_config`),
    with dotted ``overrides`` that may change its stopping rule and evaluation plan only. Overrides that
    repeat a saved value are accepted (a resume may be typed as the first command was).

    Raises:
        RunError: nothing to resume, or an override that changes anything but ``train.steps``,
            ``train.epochs``, ``train.minutes`` or ``train.eval_*``.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"nothing to resume: {path} does not exist")
    saved = saved_config(Path(run_dir))
    wanted = saved.with_overrides(list(overrides))
    for key, was, now in _differences(saved.to_dict(), wanted.to_dict()):
        if key not in RESUMABLE:
            raise RunError(
                f"--resume continues the run as it was saved: only {', '.join(STOP_RULE)} can change, and "
                f"the evaluation (train.eval_*); not {key} ({_show(was)} -> {_show(now)})"
            )
    return wanted


def stop_rule_changes(saved: Config, config: Config) -> list[str]:
    """``['train.steps=4000 (was 2000)', ...]``: how ``config`` re-plans the run ``saved`` describes."""
    return [
        f"{key}={_show(now)} (was {_show(was)})"
        for key, was, now in _differences(saved.to_dict(), config.to_dict())
        if key in RESUMABLE
    ]


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _differences(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, before, after) for every leaf that differs between two nested dicts."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [(prefix, before, after)]
    found = []
    for key in [*before, *(k for k in after if k not in before)]:
        found += _differences(before.get(key), after.get(key), f"{prefix}.{key}" if prefix else str(key))
    return found


def _check_belongs(run_dir: Path, saved: Config) -> None:
    """Refuse a checkpoint whose data, model or diffusion are not those of the run's config.yaml (a
    checkpoint copied from another run); a run without config.yaml trusts its checkpoint."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    try:
        recorded = load_config(path)
    except ConfigError as error:
        raise RunError(
            f"{path} cannot be read ({error}); repair it, or delete it to resume from the checkpoint's config"
        ) from None
    differences = _differences(_identity(recorded), _identity(saved))
    if differences:
        key, was, now = differences[0]
        raise RunError(
            f"{run_dir / CHECKPOINT} is not this run's checkpoint: its {key} is {_show(now)}, "
            f"{path} says {_show(was)}"
        )


def _identity(config: Config) -> dict[str, Any]:
    raw = config.to_dict()
    raw["data"].pop("info", None)  # runs saved before data.info have it in config.yaml only
    return {section: raw[section] for section in IDENTITY}


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
    return load_checkpoint(run_dir / CHECKPOINT, map_location="cpu", required=("step", "config", "ema"))


def _load_ema(model: torch.nn.Module, state: dict[str, Any], run_dir: Path) -> None:
    """The checkpoint's EMA weights into ``model``; refuses weights that do not fit, or that are not
    finite (a run that diverged before checkpoints were guarded: its samples would be blank)."""
    path = run_dir / CHECKPOINT
    ema = state["ema"]
    load_weights(model, ema.get("model") if isinstance(ema, dict) else None, path, "EMA")
    if not finite_weights(list(model.state_dict().values())):
        raise RunError(f"{path} holds non-finite weights (inf or NaN): the run diverged; train it again")


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
    _load_ema(model, state, run_dir)
    model.to(target).eval()
    return Run(run_dir, config, model, build_diffusion(config), info, int(state["step"]), target)


def open_frozen_model(
    run_dir: str | Path, device: str | torch.device, model_type: str, hint: str = ""
) -> tuple[Config, torch.nn.Module, int, torch.device]:
    """(config, model, step, device) of a run whose model is built from its config's model options
    alone (a classifier, a judge): its EMA weights, in eval mode, parameters frozen.

    Raises:
        RunError: not a trained run, or a run of another ``model.type`` (the message ends with
            ``hint``). CheckpointError: a damaged checkpoint, or EMA weights that do not fit or are not
            finite.
    """
    run_dir = Path(run_dir)
    target = device if isinstance(device, torch.device) else distributed.resolve_device(device)
    state = _load(run_dir, f"{model_type} run")
    config = Config.from_dict(state["config"])
    if config.model.type != model_type:
        raise RunError(f"{run_dir} is not a {model_type} run (its model.type is {config.model.type}){hint}")
    model = model_from_options(model_type, config.model.options)
    _load_ema(model, state, run_dir)
    model.to(target).eval().requires_grad_(False)
    return config, model, int(state["step"]), target


def open_classifier(run_dir: str | Path, device: str | torch.device = "auto") -> ClassifierRun:
    """Load a classifier run's config and EMA weights (eval mode, parameters frozen: guidance only
    needs the gradient with respect to x_t). Raises RunError for a run of another kind."""
    hint = "; train one with `ddpmlab train-classifier`"
    config, model, step, target = open_frozen_model(run_dir, device, CLASSIFIER_TYPE, hint)
    return ClassifierRun(Path(run_dir), config, model, build_diffusion(config), step, target)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one JSON line to the run's ``metrics.jsonl``."""
    with open(Path(run_dir) / METRICS_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's ``metrics.jsonl`` (an empty list when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a kill never leaves half a
    file (e.g. a config.yaml a resume could not read)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` logged after ``step`` (and lines cut short by a kill), so
    that a run resumed from its checkpoint of step ``step`` logs the steps it redoes once; atomic.
    Returns how many lines were dropped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _logged_by(line, step)]
    if len(kept) < len(lines):
        write_atomically(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _logged_by(line: str, step: int) -> bool:
    """Whether a metrics line is a whole record of step ``step`` or earlier (or of no step)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    logged = record.get("step")
    return not isinstance(logged, (int, float)) or logged <= step
