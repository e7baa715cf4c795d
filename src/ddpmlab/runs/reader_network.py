"""A trained captcha reader opened as a feature network that reads (:func:`open_reader` ->
:class:`ReaderRun`), and its held-out renders, apart from its training (:mod:`ddpmlab.runs.reader`):
what measures samples, during training too (:mod:`ddpmlab.runs.training_eval`), must not import the
training path it measures (as :mod:`ddpmlab.runs.judge_network` for judges)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import Config
from ddpmlab.data.base import to_uint8
from ddpmlab.metrics.features import network_input
from ddpmlab.metrics.reading import reading_accuracy
from ddpmlab.runs.rundir import RunError, open_frozen_model

__all__ = [
    "READER_TYPE",
    "HELDOUT_SEED",
    "HELDOUT_NUM",
    "HELDOUT_FILE",
    "ReaderRun",
    "reader_source_options",
    "open_reader",
    "heldout_renders",
    "heldout_accuracy",
    "read_heldout",
]

READER_TYPE = "reader"
HELDOUT_SEED = 1_000_003  # the captcha seed of held-out renders; no reader trains on it
HELDOUT_NUM = 2000  # held-out renders read after training
HELDOUT_FILE = "heldout.json"
READ_BATCH = 256


def reader_source_options(config: Config) -> dict[str, Any]:
    """The captcha source's options of a config: its defaults under the config's ``data`` keys."""
    from ddpmlab.data.captcha import SOURCES

    options = {**SOURCES["captcha"].options, **config.data.options}
    if options["charset"] is None:
        from ddpmlab.data.captcha import DEFAULT_CHARSET

        options["charset"] = DEFAULT_CHARSET
    return options


@dataclass
class ReaderRun:
    """A trained reader (EMA weights, eval mode): a feature network over uint8 images that also reads.

    ``reader(images)`` and :meth:`features`: uint8 [B, H, W, C] -> float32 features [B, D] (on the
    CPU, the column features averaged); :meth:`read`: -> B strings. ``heldout``: the run's
    ``heldout.json`` (None if it has none).
    """

    run_dir: Path
    config: Config
    model: torch.nn.Module
    step: int
    device: torch.device
    heldout: dict[str, Any] | None = None
    fd_label = "FD_reader"  # distances on a reader's features are never FID
    kid_label = "KID_reader"

    @property
    def name(self) -> str:
        return f"reader:{self.run_dir}"

    @property
    def charset(self) -> str:
        return str(self.model.charset)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The images it reads, (C, H, W)."""
        return (int(self.model.in_channels), int(self.model.height), int(self.model.width))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return network_input(images, self.shape, self.device, self.name)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(self._input(images)).float().cpu()

    __call__ = features

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> list[str]:
        """uint8 images [N, H, W, C] -> N strings (greedy CTC decoding), in batches."""
        texts: list[str] = []
        for start in range(0, len(images), READ_BATCH):
            texts += self.model.read(self._input(images[start : start + READ_BATCH]))
        return texts

    def check_run(self, run: Any) -> None:
        """Refuse (ValueError, one line) a run whose images or strings this reader cannot read; warn
        when the run's real data is the reader's own training data (its floor would be flattered)."""
        info = run.info
        c, h, w = self.shape
        if info.kind != "image" or tuple(info.shape) != (c, h, w) or not info.text_charset:
            what = f"{'x'.join(map(str, info.shape))} {info.kind} data"
            what += "" if info.text_charset else " without text"
            raise ValueError(f"{self.name} reads {c}x{h}x{w} text images; {run.run_dir} has {what}")
        outside = sorted(set(info.text_charset) - set(self.charset))
        if outside or (info.text_length or 0) > self.model.max_length:
            raise ValueError(
                f"{self.name} reads up to {self.model.max_length} characters of {self.charset!r}; "
                f"{run.run_dir} has text of {info.text_length} characters of {info.text_charset!r}"
            )
        mine, theirs = reader_source_options(self.config), run.config.data.options
        if run.config.data.name == "captcha" and theirs.get("seed", 0) == mine["seed"]:
            warnings.warn(
                f"{self.name} was trained on captcha renders of data.seed {mine['seed']}, the seed of "
                f"{run.run_dir}'s data: its reading floor is measured on images it has seen",
                stacklevel=2,
            )


def open_reader(run_dir: str | Path, device: str | torch.device = "auto") -> ReaderRun:
    """Load a reader run (EMA weights, eval mode, frozen). Raises RunError for a run of another kind."""
    hint = "; train one with `ddpmlab train-reader`"
    config, model, step, target = open_frozen_model(run_dir, device, READER_TYPE, hint)
    return ReaderRun(Path(run_dir), config, model, step, target, read_heldout(run_dir))


def read_heldout(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``heldout.json`` (None when it has none or it cannot be read as a JSON object)."""
    try:
        found = json.loads((Path(run_dir) / HELDOUT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def heldout_renders(config: Config, num: int, seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, list[str]]:
    """``num`` captchas of a reader config's source rendered with ``seed`` (not the training seed),
    none of whose strings is a training string: (uint8 images [num, H, W, C], their strings).

    Raises:
        RunError: ``seed`` is the training seed, or too few strings are left that training did not use.
    """
    from ddpmlab.data.captcha import CaptchaDataset

    options = reader_source_options(config)
    if seed == options["seed"]:
        raise RunError(f"held-out renders need another seed than the training data's ({seed})")
    shared = {key: options[key] for key in ("length", "charset", "height", "width", "channels")}
    training = CaptchaDataset(num_items=options["num_items"], seed=options["seed"], cache=False, **shared)
    seen = set(training.texts)
    fresh = CaptchaDataset(num_items=2 * num + 100, seed=seed, cache=False, **shared)
    chosen = [i for i, text in enumerate(fresh.texts) if text not in seen][:num]
    if len(chosen) < num:
        raise RunError(
            f"only {len(chosen)} of {len(fresh)} held-out strings are new to the reader; need {num}"
        )
    images = to_uint8(torch.stack([fresh[i][0] for i in chosen]))
    return images, [fresh.texts[i] for i in chosen]


def heldout_accuracy(reader: ReaderRun, num: int | None = None, seed: int = HELDOUT_SEED) -> dict[str, Any]:
    """The reader's exact-string and per-character accuracy on ``num`` (default :data:`HELDOUT_NUM`)
    held-out renders (:func:`heldout_renders`): ``{"n", "seed", "step", "exact", "chars"}``."""
    num = HELDOUT_NUM if num is None else num
    images, texts = heldout_renders(reader.config, num, seed)
    scores = reading_accuracy(reader.read(images), texts)
    return {"n": num, "seed": seed, "step": reader.step, **scores}
