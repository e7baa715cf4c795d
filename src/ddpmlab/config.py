"""One configuration for every command: typed sections, YAML files, dotted command-line overrides.

A config file has five sections; everything has a default, so a file only says what differs::

    name: mog1d
    data:      {name: mog1d, means: [-3, 0, 4]}      # dataset name + that dataset's own options
    model:     {type: mlp, hidden: 256}              # model type + the model's own options
    diffusion: {schedule: linear, timesteps: 1000, prediction: eps}
    train:     {steps: 3000, batch_size: 512, lr: 1e-3}
    sample:    {sampler: ddpm, steps: null, num: 10000}

Overrides on the command line use dotted keys and YAML values: ``train.steps=3000``,
``data.means=[-3,0,4]``, ``diffusion.schedule=cosine``. The typed sections (diffusion, train, sample)
refuse unknown keys with the list of the allowed ones; ``data`` and ``model`` pass their extra keys
to the dataset and model builders, which refuse what they do not know.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddpmlab.diffusion import PREDICTION_TYPES
from ddpmlab.plain import (
    FlowList,
    PlainDataError,
    did_you_mean,
    one_line,
    read_plain_yaml,
    short_repr,
    typed_value,
    write_plain_yaml,
)
from ddpmlab.samplers import SAMPLERS
from ddpmlab.sampling import VARIANCE_TYPES
from ddpmlab.schedules import MAX_TIMESTEPS, SPACINGS, ScheduleError, make_schedule, schedule_names

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "DiffusionConfig",
    "TrainConfig",
    "SampleConfig",
    "load_config",
    "resolve_schedule",
    "parse_overrides",
    "apply_overrides",
]

PRECISIONS = ("fp32", "bf16", "fp16")
MAX_SEED = 2**32 - 1  # sampling seeds (each seed block's generator is seeded with seed x 1,000,003 + block)
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """A configuration that cannot be used (unknown key, bad value, unreadable file)."""


def _check_choice(section: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{key} must be one of {', '.join(allowed)}; got {value!r}")


def _check_positive(
    section: str, key: str, value: Any, allow_none: bool = False, integer: bool = False
) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    infinite = isinstance(value, float) and not math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, kind) or infinite or value <= 0:
        what = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{section}.{key} must be {what}{' or null' if allow_none else ''}; got {value!r}")


@dataclass
class DataConfig:
    """Which data to train on. Keys not listed here are the dataset's own options (``options``).

    ``info`` is not set by users: training records the data's description there
    (:class:`ddpmlab.data.DataInfo`: shape, classes, text charset, value range), so that a trained run
    can be opened and sampled without its data. Training rebuilds it from the data every time.
    """

    name: str = "mog1d"
    conditional: bool = False
    image_size: int | None = None
    root: str | None = None
    download: bool = False
    hflip: bool = False
    num_workers: int = 0
    info: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("data.name must be a dataset name")
        if self.info is not None and not isinstance(self.info, dict):
            raise ConfigError("data.info is the description a run records of its data; leave it out")
        _check_positive("data", "image_size", self.image_size, allow_none=True, integer=True)


@dataclass
class ModelConfig:
    """Which denoiser. Keys other than ``type`` are the model's own options (``options``)."""

    type: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise ConfigError("model.type must be a model type")


@dataclass
class DiffusionConfig:
    """The forward process: schedule, T and the prediction target.

    ``schedule`` is a name or 'module:function' (see :func:`ddpmlab.schedules.make_schedule`), or the
    list of the T betas themselves (what ``ddpmlab import-diffusers`` writes for a scheduler that no
    named schedule reproduces); ``timesteps`` must then be the list's length. A 'module:function'
    schedule is turned into that list when your config is read (:func:`resolve_schedule`, the one
    time ddpmlab imports schedule code), so a run stores its schedule as numbers and opening it never
    imports anything.
    """

    schedule: str | list[float] = "linear"
    timesteps: int = 1000
    prediction: str = "eps"
    min_snr_gamma: float | None = None
    schedule_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check_positive("diffusion", "timesteps", self.timesteps, integer=True)
        if self.timesteps > MAX_TIMESTEPS:
            raise ConfigError(f"diffusion.timesteps must be at most {MAX_TIMESTEPS:,}; got {self.timesteps}")
        if not self.schedule:
            raise ConfigError("diffusion.schedule must be a schedule name or a list of betas")
        if isinstance(self.schedule, list):
            count, steps = len(self.schedule), self.timesteps
            if count != steps:
                raise ConfigError(f"diffusion.schedule has {count} betas; diffusion.timesteps is {steps}")
            bad = next((b for b in self.schedule if not 0.0 < b < 1.0), None)
            if bad is not None:
                raise ConfigError(f"diffusion.schedule's betas must lie in (0, 1); got {bad!r}")
        _check_choice("diffusion", "prediction", self.prediction, PREDICTION_TYPES)
        _check_positive("diffusion", "min_snr_gamma", self.min_snr_gamma, allow_none=True)


@dataclass
class TrainConfig:
    """The optimisation. Training stops at the first of ``steps``, ``epochs`` and ``minutes`` reached.

    ``batch_size`` is per process and per micro-batch. ``global_batch_size`` is what one optimizer step
    sees: batch_size x processes (torchrun) x grad_accum. Left null it follows from batch_size; set, it
    decides and batch_size is derived from it (it must divide evenly). A run records the value it used
    in its config.yaml, so resuming with another number of processes keeps the global batch. The
    learning rate is never scaled with the batch: ``lr`` is the rate used.

    A checkpoint (``checkpoints/last.pt``) is written every ``checkpoint_every`` steps and at the end;
    ``keep_checkpoints`` = k > 0 also keeps the last k of them as ``checkpoints/step_XXXXXXX.pt``.

    ``eval_every`` = n > 0 (0: off) measures ``eval_num`` EMA samples every n steps and at the end, in
    the features ``eval_features`` names (see :mod:`ddpmlab.runs.training_eval`); ``eval_sampler`` /
    ``eval_steps`` default to the ``sample`` section, ``eval_real_num`` caps the real images read.
    """

    steps: int | None = 2000
    epochs: int | None = None
    minutes: float | None = None
    batch_size: int = 256
    global_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    ema_warmup: bool = True
    cond_dropout: float = 0.1
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    checkpoint_every: int | None = 1000
    keep_checkpoints: int = 0
    sample_every: int | None = None
    eval_every: int = 0
    eval_num: int = 500
    eval_features: str | None = None
    eval_sampler: str | None = None
    eval_steps: int | None = None
    eval_real_num: int = 10_000
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "ddpmlab"
    progress: bool = True

    def validate(self) -> None:
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise ConfigError("train needs at least one of steps, epochs or minutes")
        _check_positive("train", "steps", self.steps, allow_none=True, integer=True)
        _check_positive("train", "epochs", self.epochs, allow_none=True, integer=True)
        _check_positive("train", "minutes", self.minutes, allow_none=True)
        _check_positive("train", "batch_size", self.batch_size, integer=True)
        _check_positive("train", "global_batch_size", self.global_batch_size, allow_none=True, integer=True)
        _check_positive("train", "lr", self.lr)
        _check_positive("train", "grad_accum", self.grad_accum, integer=True)
        _check_positive("train", "grad_clip", self.grad_clip, allow_none=True)
        _check_positive("train", "log_every", self.log_every, integer=True)
        _check_positive("train", "checkpoint_every", self.checkpoint_every, allow_none=True, integer=True)
        if isinstance(self.keep_checkpoints, bool) or not isinstance(self.keep_checkpoints, int):
            raise ConfigError(f"train.keep_checkpoints must be an integer; got {self.keep_checkpoints!r}")
        if self.keep_checkpoints < 0:
            raise ConfigError(f"train.keep_checkpoints must be >= 0; got {self.keep_checkpoints}")
        _check_positive("train", "sample_every", self.sample_every, allow_none=True, integer=True)
        self._validate_evaluation()
        _check_choice("train", "precision", self.precision, PRECISIONS)
        _check_choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1); got {self.ema_decay!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ConfigError(f"train.cond_dropout must be in [0, 1); got {self.cond_dropout!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError("train.warmup_steps and train.weight_decay must be >= 0")

    def _validate_evaluation(self) -> None:
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every must be >= 0 (0: no evaluation); got {self.eval_every}")
        for key in ("eval_num", "eval_real_num", "eval_steps"):
            _check_positive("train", key, getattr(self, key), allow_none=key == "eval_steps", integer=True)
        if self.eval_sampler is not None:
            _check_choice("train", "eval_sampler", self.eval_sampler, tuple(SAMPLERS))
        if self.eval_every and not self.eval_features:
            raise ConfigError(
                f"train.eval_every={self.eval_every} needs train.eval_features "
                "(judge:RUN, reader:RUN or inception)"
            )


@dataclass
class SampleConfig:
    """Defaults of ``ddpmlab sample`` for a run (each can be changed on the command line)."""

    sampler: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    variance: str = "fixed_small"
    spacing: str = "trailing"
    guidance: float = 1.0
    clip_x0: float | None = None
    num: int = 10000
    batch_size: int = 1000
    seed: int = 0

    def validate(self) -> None:
        _check_choice("sample", "sampler", self.sampler, tuple(SAMPLERS))
        _check_choice("sample", "variance", self.variance, VARIANCE_TYPES)
        _check_choice("sample", "spacing", self.spacing, SPACINGS)
        _check_positive("sample", "steps", self.steps, allow_none=True, integer=True)
        _check_positive("sample", "num", self.num, integer=True)
        _check_positive("sample", "batch_size", self.batch_size, integer=True)
        _check_positive("sample", "clip_x0", self.clip_x0, allow_none=True)
        if self.eta < 0:
            raise ConfigError(f"sample.eta must be >= 0; got {self.eta!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"sample.seed must be from 0 to {MAX_SEED}; got {self.seed!r}")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}
# Sections whose unknown keys are another builder's options rather than mistakes.
OPEN_SECTIONS = {"data": "options", "model": "options"}


@dataclass
class Config:
    """The whole configuration of a run."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        for section in SECTIONS:
            _check_finite(section, getattr(self, section))
            getattr(self, section).validate()

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Config:
        """Build and validate a Config from nested plain data (as read from YAML)."""
        raw = copy.deepcopy(raw or {})
        if not isinstance(raw, dict):
            raise ConfigError("a config must be a mapping of sections")
        _check_keys("the config", raw)
        unknown = sorted(set(raw) - set(SECTIONS) - {"name"})
        if unknown:
            raise ConfigError(
                f"unknown config section {unknown[0]!r}{did_you_mean(unknown[0], ['name', *SECTIONS])}; "
                f"sections are name, {', '.join(SECTIONS)}"
            )
        sections = {key: _build_section(key, {} if raw.get(key) is None else raw[key]) for key in SECTIONS}
        name = raw.get("name", "run")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string; got {short_repr(name)}")
        return cls(name=name, **sections)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data, with each open section's options flattened back into the section."""
        result: dict[str, Any] = {"name": self.name}
        for key in SECTIONS:
            section = dataclasses.asdict(getattr(self, key))
            extra_key = OPEN_SECTIONS.get(key)
            if extra_key:
                section.update(section.pop(extra_key))
            result[key] = section
        return result

    def to_yaml(self) -> str:
        """The config as YAML (a schedule given as betas on one line)."""
        raw = self.to_dict()
        if isinstance(raw["diffusion"]["schedule"], list):
            raw["diffusion"]["schedule"] = FlowList(raw["diffusion"]["schedule"])
        return write_plain_yaml(raw)

    def with_overrides(self, overrides: list[str]) -> Config:
        return Config.from_dict(apply_overrides(self.to_dict(), parse_overrides(overrides)))


def _check_keys(where: str, mapping: dict) -> None:
    bad = next((key for key in mapping if not isinstance(key, str)), None)
    if bad is not None:
        raise ConfigError(f"keys in {where} must be names (strings); got {short_repr(bad)}")


def _build_section(key: str, values: Any) -> Any:
    cls = SECTIONS[key]
    if not isinstance(values, dict):
        raise ConfigError(f"config section {key!r} must be a mapping, got {type(values).__name__}")
    _check_keys(f"section {key}", values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra_key = OPEN_SECTIONS.get(key)
    try:
        known = {
            k: typed_value(f"{key}.{k}", str(fields[k].type), v)
            for k, v in values.items()
            if k in fields and k != extra_key
        }
    except PlainDataError as error:
        raise ConfigError(str(error)) from None
    extra = {k: v for k, v in values.items() if k not in fields}
    if extra_key:
        own = values.get(extra_key) or {}
        if not isinstance(own, dict):
            raise ConfigError(f"{key}.{extra_key} must be a mapping; got {short_repr(own)}")
        _check_keys(f"{key}.{extra_key}", own)
        known[extra_key] = {**own, **extra}
    elif extra:
        first = sorted(extra)[0]
        allowed = ", ".join(sorted(fields))
        raise ConfigError(
            f"unknown key(s) {', '.join(k if k.isprintable() else repr(k) for k in sorted(extra))} in {key}"
            f"{did_you_mean(first, list(fields))}; "
            f"allowed: {allowed}"
        )
    return cls(**known)


def _check_finite(key: str, section: Any) -> None:
    """Refuse .inf and .nan (YAML reads both) in every float of a section: no setting means either."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}.{f.name} must be a finite number; got {value!r}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.steps=3000", "data.means=[-3,0,4]"]`` -> ``{"train.steps": 3000, "data.means": [-3, 0, 4]}``.

    Values are parsed as YAML (numbers, lists, null, true/false); a value YAML cannot parse stays a
    string, but a tag (``!!python/...``) or an alias is an error, as in config files.
    """
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"an override must look like section.key=value, got {item!r}")
        try:
            parsed[key] = read_plain_yaml(value) if value.strip() else None
        except PlainDataError as error:
            if error.refused:
                raise ConfigError(f"override {item!r}: {error}") from None
            parsed[key] = value
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key in a copy of the nested dict ``raw``."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in SECTIONS and dotted != "name":
            raise ConfigError(
                f"unknown config section in override {dotted!r}"
                f"{did_you_mean(parts[0], ['name', *SECTIONS])}; sections: name, {', '.join(SECTIONS)}"
            )
        node = result
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
            node = node[part]
        node[parts[-1]] = value
    return result


def resolve_schedule(config: Config) -> Config:
    """Record a ``module:function`` schedule as numbers (its betas become ``diffusion.schedule``):
    reading a user's config is the one time ddpmlab imports schedule code, so that a run stores its
    schedule as numbers and opening it never imports anything. Named schedules stay names (checked
    here, built later).

    Raises:
        ConfigError: an unknown schedule name (with the closest one), a module that cannot be
            imported, bad schedule options or betas.
    """
    d = config.diffusion
    if isinstance(d.schedule, list) or d.schedule in schedule_names():
        return config
    if ":" not in d.schedule:
        raise ConfigError(
            f"unknown schedule {d.schedule!r}{did_you_mean(d.schedule, list(schedule_names()))}; "
            f"choose one of {', '.join(schedule_names())} or give 'package.module:function'"
        )
    try:
        with torch.device("cpu"):  # numbers for the config, whatever the caller's default device
            schedule = make_schedule(d.schedule, d.timesteps, **d.schedule_options)
    except (ScheduleError, TypeError) as error:
        raise ConfigError(f"diffusion.schedule {d.schedule!r}: {str(error).splitlines()[0]}") from None
    raw = config.to_dict()
    raw["diffusion"]["schedule"] = schedule.betas.tolist()
    return Config.from_dict(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply overrides and
    resolve the schedule (:func:`resolve_schedule`).

    A config without a ``name`` takes the file's stem (``configs/mog1d.yaml`` -> ``mog1d``).

    Raises:
        ConfigError: a missing or unreadable file, YAML that is not plain data, or a bad value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {path}: {one_line(error)}") from None
        try:
            raw = read_plain_yaml(text) or {}
        except PlainDataError as error:
            raise ConfigError(f"cannot parse {path}: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, not a {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, parse_overrides(overrides or []))
    return resolve_schedule(Config.from_dict(raw))
