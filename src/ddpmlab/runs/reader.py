"""Captcha readers at the run level: train a CRNN + CTC reader on real renders, measure it on held-out
renders, open it as a feature network that also reads.

::

    ddpmlab train-reader --config configs/captcha_reader.yaml      # -> runs/captcha_reader
    ddpmlab evaluate --run runs/captcha --features reader:runs/captcha_reader --num 500

A reader run is laid out like any run (config.yaml with ``data.info`` and the model's data options:
``charset``, ``max_length``, ``in_channels``, ``height``, ``width``; checkpoints; metrics.jsonl with
``loss`` and ``accuracy``, the fraction of training batches read exactly). It trains only on real
renders of the ``captcha`` source (``data.name: captcha``): items fixed by (``data.seed``, index), so a
reader's training data is known exactly. After training, :func:`heldout_accuracy` reads
:data:`HELDOUT_NUM` fresh renders of the same source with the seed :data:`HELDOUT_SEED` (which no reader
may train on), whose strings are none of the training strings, and ``heldout.json`` in the run records
exact-string and per-character accuracy (:mod:`ddpmlab.metrics.reading`).

Opened with :func:`open_reader`, it is a :class:`~ddpmlab.metrics.FeatureNetwork` (uint8 images ->
the pooled penultimate features, named ``reader:<run dir>``; a Frechet distance on them is
``FD_reader``, KID ``KID_reader``) with :meth:`ReaderRun.read` (uint8 images -> strings).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo
from ddpmlab.runs.build import model_from_options
from ddpmlab.runs.reader_network import (
    HELDOUT_FILE,
    HELDOUT_NUM,
    HELDOUT_SEED,
    READER_TYPE,
    ReaderRun,
    heldout_accuracy,
    heldout_renders,
    open_reader,
    read_heldout,
    reader_source_options,
)
from ddpmlab.runs.rundir import write_atomically
from ddpmlab.runs.training import RunKind, train_kind_run
from ddpmlab.training.reader_objective import ReaderObjective
from ddpmlab.training.trainer import Trainer

__all__ = [
    "READER_TYPE",
    "READER",
    "HELDOUT_SEED",
    "HELDOUT_NUM",
    "HELDOUT_FILE",
    "ReaderRun",
    "build_reader_for",
    "train_reader_run",
    "open_reader",
    "heldout_renders",
    "heldout_accuracy",
    "read_heldout",
]


def build_reader_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The reader a config describes, with ``charset``, ``max_length``, ``in_channels``, ``height`` and
    ``width`` from the data. Raises ConfigError for a config of another model type, data other than
    captcha renders with their text, or the held-out seed."""
    if config.model.type != READER_TYPE:
        raise ConfigError(f"train-reader trains model.type {READER_TYPE}, got {config.model.type!r}")
    if config.data.name != "captcha" or not info.text_charset or not config.data.conditional:
        raise ConfigError(
            "a reader trains on renders of the captcha source with their text (data.name: captcha, "
            f"data.conditional: true); got data.name {config.data.name}, conditional "
            f"{str(config.data.conditional).lower()}"
        )
    if reader_source_options(config)["seed"] == HELDOUT_SEED:
        raise ConfigError(
            f"data.seed {HELDOUT_SEED} draws the readers' held-out renders; train on another seed"
        )
    options = dict(config.model.options)
    options.setdefault("charset", info.text_charset)
    options.setdefault("max_length", info.text_length)
    options.setdefault("in_channels", info.shape[0])
    options.setdefault("height", info.shape[1])
    options.setdefault("width", info.shape[2])
    return model_from_options(READER_TYPE, options)


def _record_heldout(run_dir: Path, info: DataInfo) -> None:
    """After training: read the held-out renders and write ``heldout.json`` into the run."""
    result = heldout_accuracy(open_reader(run_dir))
    write_atomically(run_dir / HELDOUT_FILE, json.dumps(result, indent=2) + "\n")


READER = RunKind(build_reader_for, ReaderObjective, records_model_options=True, finish=_record_heldout)


def train_reader_run(config: Config, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Train the reader ``config`` describes on real renders in ``run_dir``, then record its held-out
    accuracy (``heldout.json``); returns the Trainer."""
    return train_kind_run(READER, config, run_dir, resume)
