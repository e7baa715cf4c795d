"""``ddpmlab compare``: several runs, or one run with several sampling settings, side by side.

An *entry* is a run directory optionally followed by comma-separated ``key=value`` settings::

    RUN[,label=NAME][,sampler=NAME][,steps=K][,eta=E][,guidance=W][,classifier=RUN][,classifier_scale=S]

e.g. ``runs/mnist5k``, ``runs/mnist5k,guidance=3,sampler=dpm++2m,steps=20`` or
``runs/mnist5k_uncond,classifier=runs/mnist5k_classifier,classifier_scale=3,label=CG s=3``. Settings
left out take the run's ``sample`` section, as ``ddpmlab sample`` does; ``guidance`` (classifier-free)
applies to conditional runs, ``classifier`` (classifier guidance) to unconditional ones.

Every entry is sampled with the same seed, so sample i starts from the same noise in every entry, and
with the same requested labels: classes 0, 1, ..., C-1 in turn for class-conditional runs and for
classifier guidance, none for unconditional runs; for text runs, random strings fixed by the seed that
are not among the run's training strings (:func:`~ddpmlab.runs.conditions.unseen_texts`, the same for
every entry of the same data), which a reader's features (``reader:RUN``) also read back. Each
entry is measured against its run's real data with :func:`ddpmlab.runs.evaluate.evaluate_images`; the
real set and its features are read once per distinct dataset. With a feature network that predicts
classes (a judge), every entry also gets the histogram of predicted classes and how evenly it covers
them (:func:`ddpmlab.metrics.class_coverage`), the measure that applies to unconditional samples where
class accuracy does not. :mod:`ddpmlab.runs.compare_report` writes the report.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmlab.data.base import to_uint8
from ddpmlab.metrics import class_coverage, extract_features
from ddpmlab.plain import did_you_mean
from ddpmlab.runs.conditions import unseen_texts
from ddpmlab.runs.evaluate import RealData, check_network, evaluate_images, real_data
from ddpmlab.runs.guided import check_classifier, guidance_scale
from ddpmlab.runs.rundir import (
    CHECKPOINT,
    ClassifierRun,
    Run,
    RunError,
    open_classifier,
    open_run,
    read_metrics,
)
from ddpmlab.runs.sampling import default_seed_block, make_run_sampler, sample_run
from ddpmlab.runs.sweep import network_evaluations
from ddpmlab.samplers import SAMPLERS
from ddpmlab.sampling import Sampler

__all__ = [
    "ENTRY_SETTINGS",
    "EntrySpec",
    "Entry",
    "Comparison",
    "parse_entry",
    "open_entries",
    "compare_entries",
    "training_summary",
    "config_differences",
]

# The settings an entry takes after its run directory, and their types.
ENTRY_SETTINGS: dict[str, type] = {
    "label": str,
    "sampler": str,
    "steps": int,
    "eta": float,
    "guidance": float,
    "classifier": str,
    "classifier_scale": float,
}
NOT_THE_IMAGES = ("info", "hflip", "num_workers", "download", "conditional", "layout")  # data keys
MIN_REFERENCE = 4  # compare_features holds N real vectors out and needs more than k = 3 left over


@dataclass(frozen=True)
class EntrySpec:
    """One entry as written on the command line (see the module docstring), checked but not opened."""

    text: str
    run: str
    label: str | None = None
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance: float | None = None
    classifier: str | None = None
    classifier_scale: float | None = None
    given: tuple[tuple[str, str], ...] = ()  # (key, value as written) of each setting but the label

    def settings(self) -> dict[str, Any]:
        """The settings given (all but the label), in the order of :data:`ENTRY_SETTINGS`."""
        return {
            key: getattr(self, key)
            for key in ENTRY_SETTINGS
            if key != "label" and getattr(self, key) is not None
        }


def _setting(key: str, raw: str, where: str) -> Any:
    """One setting's value, checked: counts positive, scales finite, eta >= 0, a known sampler."""
    kind = ENTRY_SETTINGS[key]
    if kind is str:
        if key == "sampler" and raw not in SAMPLERS:
            raise RunError(
                f"{where}: unknown sampler {raw!r}{did_you_mean(raw, list(SAMPLERS))}; "
                f"choose from {', '.join(SAMPLERS)}"
            )
        return raw
    try:
        value = kind(raw)
    except ValueError:
        raise RunError(
            f"{where}: {key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise RunError(f"{where}: {key} must be a finite number, got {raw!r}")
    if key == "steps" and value <= 0:
        raise RunError(f"{where}: steps must be positive, got {raw}")
    if key == "eta" and value < 0:
        raise RunError(f"{where}: eta must be >= 0, got {raw}")
    return value


def _raw_settings(parts: list[str]) -> list[tuple[str, str]]:
    pairs = [part.partition("=") for part in parts]
    return [(key.strip().replace("-", "_"), raw.strip()) for key, _, raw in pairs]


def parse_entry(text: str) -> EntrySpec:
    """Read one entry, ``RUN[,key=value...]`` (module docstring). Raises RunError, one line naming the
    entry: no run directory, a part that is not key=value, an unknown or repeated key, a bad value, or
    ``classifier_scale`` without ``classifier``. Whether the run exists is checked by :func:`open_entries`."""
    where = f"compare: entry {text!r}"
    run, *parts = [part.strip() for part in text.split(",")]
    if not run or (run.partition("=")[0].replace("-", "_") in ENTRY_SETTINGS and "=" in run):
        raise RunError(
            f"{where}: an entry starts with its run directory, then key=value settings, "
            "e.g. runs/mnist5k,guidance=3"
        )
    values: dict[str, Any] = {}
    for part in parts:
        key, equals, raw = part.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not equals or not key:
            raise RunError(f"{where}: {part!r} is not key=value (settings: {', '.join(ENTRY_SETTINGS)})")
        if key not in ENTRY_SETTINGS:
            raise RunError(
                f"{where}: unknown setting {key!r}{did_you_mean(key, list(ENTRY_SETTINGS))}; "
                f"settings: {', '.join(ENTRY_SETTINGS)}"
            )
        if key in values:
            raise RunError(f"{where}: {key} is given twice")
        if not raw:
            raise RunError(f"{where}: {key} has no value")
        values[key] = _setting(key, raw, where)
    if "classifier_scale" in values and "classifier" not in values:
        raise RunError(
            f"{where}: classifier_scale needs classifier=RUN (a run of `ddpmlab train-classifier`)"
        )
    given = tuple((key, raw) for key, raw in _raw_settings(parts) if key != "label")
    return EntrySpec(text, run, **values, given=given)


@dataclass
class Entry:
    """An opened entry: its run, sampler, guidance and the labels every labelled entry asks for.

    Attributes:
        guidance: the classifier-free guidance scale used (conditional runs; None otherwise).
        labels: each sample's requested class (int64 [num]) or None (unconditional, text runs).
        num_classes: the classes the labels cycle through (None without labels).
    """

    spec: EntrySpec
    label: str
    run: Run
    sampler_name: str
    sampler: Sampler
    guidance: float | None
    classifier: ClassifierRun | None
    labels: torch.Tensor | None
    num_classes: int | None

    @property
    def classifier_scale(self) -> float:
        return 1.0 if self.spec.classifier_scale is None else self.spec.classifier_scale

    def sampling(self) -> dict[str, Any]:
        """The sampling settings in force (JSON-ready)."""
        used: dict[str, Any] = {"sampler": self.sampler_name, "steps": self.sampler.num_steps}
        if getattr(self.sampler, "eta", None) is not None:
            used["eta"] = self.sampler.eta
        if self.guidance is not None:
            used["guidance"] = self.guidance
        if self.classifier is not None:
            used.update(classifier=str(self.classifier.run_dir), classifier_scale=self.classifier_scale)
        return used


def _default_label(spec: EntrySpec) -> str:
    """``mnist5k``, ``mnist5k guidance=3``, ``mnist5k_uncond classifier=mnist5k_classifier
    classifier_scale=3``: the run's name, then the settings as written (a classifier by its name)."""
    settings = [f"{key}={Path(raw).name if key == 'classifier' else raw}" for key, raw in spec.given]
    return " ".join([Path(spec.run).name or spec.run, *settings])


def _labels(specs: list[EntrySpec]) -> list[str]:
    """Each entry's column label: its own, else made from the run and settings; unique (given labels
    that repeat are refused; made ones that repeat get #2, #3, ...)."""
    given = [spec.label for spec in specs if spec.label]
    repeated = sorted({label for label in given if given.count(label) > 1})
    if repeated:
        raise RunError(f"compare: label={repeated[0]} names two entries; labels must differ")
    labels: list[str] = []
    for spec in specs:
        base = spec.label or _default_label(spec)
        label, count = base, 1
        while label in labels or (not spec.label and label in given):
            count += 1
            label = f"{base} #{count}"
        labels.append(label)
    return labels


def _open_entry(spec: EntrySpec, label: str, num: int, device: str) -> Entry:
    where = f"compare: entry {spec.text!r}"
    run = open_run(spec.run, device)
    if run.info.kind != "image":
        raise RunError(f"{where}: {spec.run} is a {run.info.kind} run; compare measures image runs")
    if spec.guidance is not None and not run.conditional:
        raise RunError(
            f"{where}: guidance (classifier-free) needs a conditional run; {spec.run} is "
            "unconditional (classifier guidance: classifier=RUN)"
        )
    if spec.classifier is not None and run.conditional:
        raise RunError(
            f"{where}: classifier= guides an unconditional run; {spec.run} is conditional "
            "(use guidance=W for classifier-free guidance)"
        )
    name = spec.sampler or run.config.sample.sampler
    if spec.eta is not None and name != "ddim":
        raise RunError(f"{where}: eta applies to the ddim sampler; this entry uses {name}")
    if spec.steps is not None and spec.steps > run.diffusion.num_timesteps:
        raise RunError(f"{where}: steps must be at most the run's {run.diffusion.num_timesteps} timesteps")
    classifier = None
    if spec.classifier is not None:
        classifier = open_classifier(spec.classifier, run.device)
        check_classifier(run, classifier)
    sampler = make_run_sampler(run, spec.sampler, spec.steps, spec.eta)
    classes = classifier.num_classes if classifier is not None else None
    if run.conditional and run.text_encoder is None:
        classes = run.info.num_classes
    labels = torch.arange(num) % classes if classes else None
    guidance = guidance_scale(run, spec.guidance)
    return Entry(spec, label, run, name, sampler, guidance, classifier, labels, classes)


def open_entries(specs: list[EntrySpec], num: int, device: str = "auto") -> list[Entry]:
    """Open every entry's run (and classifier) and check that its settings apply, before anything is
    sampled. Raises RunError (and what opening a run raises) in one line naming the entry."""
    if not specs:
        raise RunError("compare needs at least one entry (a run directory)")
    if num <= 0:
        raise RunError(f"--num must be positive, got {num}")
    return [_open_entry(spec, label, num, device) for spec, label in zip(specs, _labels(specs))]


def dataset_key(run: Run) -> str:
    """What decides a run's real images: its data section less the keys that do not change them (a
    conditional and an unconditional run of the same data share their real images)."""
    data = run.config.to_dict()["data"]
    kept = {key: value for key, value in data.items() if key not in NOT_THE_IMAGES}
    return json.dumps(kept, sort_keys=True, default=str)


def _real_sets(entries: list[Entry], network: Any, num: int, limit: int, seed: int) -> dict[str, tuple]:
    """(real images, their features) per distinct dataset, each read once; checked large enough."""
    reals: dict[str, tuple[RealData, torch.Tensor]] = {}
    for entry in entries:
        key = dataset_key(entry.run)
        if key in reals and (reals[key][0].labels is not None or not entry.run.info.num_classes):
            continue  # read already (with the labels, when this run's data has classes)
        real = real_data(entry.run, limit, seed)
        if len(real.images) < num + MIN_REFERENCE:
            raise RunError(
                f"compare: --num {num} needs at least {num + MIN_REFERENCE} real images (N are held out "
                f"for the floors); the data of {entry.run.run_dir} gives {len(real.images)} with "
                f"--real-num {limit}: lower --num or raise --real-num"
            )
        reals[key] = (real, extract_features(real.images, network))
    return reals


def _coverage(images: torch.Tensor, real: RealData, network: Any, seed: int) -> dict[str, Any]:
    """:func:`class_coverage` of the network's predictions on the samples, and its floor on as many
    real images chosen at random (the real set may be stored class by class); {} without predictions."""
    classes = getattr(network, "num_classes", None)
    if not hasattr(network, "predict") or not classes or real.labels is None:
        return {}
    count = min(len(images), len(real.images))
    chosen = torch.from_numpy(np.random.default_rng(seed + 2).permutation(len(real.images))[:count])
    return {
        "class_coverage": class_coverage(network.predict(images), classes),
        "class_coverage_floor": class_coverage(network.predict(real.images[chosen]), classes),
    }


def _asked(entry: Entry, reals: dict, num: int, seed: int) -> Any:
    """What an entry asks for: its labels (classes in turn, or None); for a text run the ``num`` random
    strings it did not train on, as ``ddpmlab evaluate`` asks (the same for entries of the same data)."""
    if entry.run.text_encoder is None:
        return entry.labels
    real = reals[dataset_key(entry.run)][0]
    return unseen_texts(entry.run, num, real.texts or frozenset(), seed)


def _measure(
    entry: Entry, asked: Any, reals: dict, network: Any, num: int, seed: int, progress: bool
) -> dict[str, Any]:
    """Sample one entry asking for ``asked``, time it, measure it; a JSON-ready row with the images
    under ``images``. One seed block is sampled first, untimed, so that no entry pays for the first
    call's set-up."""
    real, features = reals[dataset_key(entry.run)]

    def draw(count: int) -> tuple[torch.Tensor, Any]:
        labels = None if asked is None else asked[:count]
        return sample_run(
            entry.run, count, entry.sampler, entry.spec.guidance, labels, seed,
            progress=progress and count == num, classifier=entry.classifier,
            classifier_scale=entry.classifier_scale,
        )  # fmt: skip

    draw(min(num, default_seed_block(entry.run)))
    started = time.perf_counter()
    samples, used = draw(num)
    seconds = time.perf_counter() - started
    images = to_uint8(samples)
    labels = used if torch.is_tensor(used) or entry.run.text_encoder is not None else None
    result = evaluate_images(images, labels, real, network, seed, real_features=features)
    result.update(_coverage(images, real, network, seed))
    evaluations = network_evaluations(entry.sampler, entry.guidance, entry.run.conditional)
    row = {
        "label": entry.label,
        "entry": entry.spec.text,
        "run": str(entry.run.run_dir),
        "step": entry.run.step,
        "conditional": entry.run.conditional,
        "sampling": entry.sampling(),
        "nfe": evaluations,
        "classifier_gradients": evaluations if entry.classifier is not None else 0,
        "seconds_per_image": seconds / num,
        "labels": _labels_used(entry),
        "result": result,
        "images": images,
        "sample_labels": used,
        "num_classes": entry.num_classes,
    }
    if entry.classifier is not None:
        row["classifier"] = {
            "run": str(entry.classifier.run_dir),
            "step": entry.classifier.step,
            "parameters": sum(p.numel() for p in entry.classifier.model.parameters()),
        }
    return row


def _labels_used(entry: Entry) -> str | None:
    if entry.num_classes:
        return f"classes 0..{entry.num_classes - 1} in turn"
    return "random strings the run did not train on" if entry.run.text_encoder is not None else None


def training_summary(run: Run) -> dict[str, Any]:
    """A run's training budget and size: steps trained (and asked), minutes trained (and the limit),
    the global batch, images seen, parameters."""
    from ddpmlab.training.checkpoint import peek_checkpoint

    state = peek_checkpoint(run.run_dir / CHECKPOINT)
    elapsed, seen = state.get("elapsed_seconds"), state.get("samples_seen")
    train = run.config.train
    return {
        "run": str(run.run_dir),
        "steps": run.step,
        "steps_limit": train.steps,
        "minutes": float(elapsed) / 60 if isinstance(elapsed, (int, float)) else None,
        "minutes_limit": train.minutes,
        "batch_size": train.global_batch_size or train.batch_size * train.grad_accum,
        "images_seen": int(seen) if isinstance(seen, int) else None,
        "parameters": sum(p.numel() for p in run.model.parameters()),
    }


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(runs: list[Run]) -> list[dict[str, Any]]:
    """The config keys whose values differ between ``runs`` (``name`` and the recorded ``data.info``
    left out): one ``{"key", "values"}`` per key, values in the order of ``runs`` (None: not set)."""
    flats = []
    for run in runs:
        flat = _flatten(run.config.to_dict())
        flats.append(
            {key: value for key, value in flat.items() if key != "name" and not key.startswith("data.info")}
        )
    keys = sorted(set().union(*flats)) if flats else []
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if len({json.dumps(value, sort_keys=True, default=str) for value in values}) > 1:
            rows.append({"key": key, "values": values})
    return rows


@dataclass
class Comparison:
    """What :func:`compare_entries` found: one row per entry (JSON-ready but for ``images`` and
    ``sample_labels``), one training summary per distinct run, the config keys that differ, each run's
    loss records, and the context (N, seed, feature network, real set sizes)."""

    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    differences: list[dict[str, Any]]
    curves: dict[str, list[dict[str, Any]]]
    context: dict[str, Any] = field(default_factory=dict)


def _distinct_runs(entries: list[Entry]) -> list[Run]:
    seen: dict[str, Run] = {}
    for entry in entries:
        seen.setdefault(str(entry.run.run_dir.resolve()), entry.run)
    return list(seen.values())


def compare_entries(
    entries: list[Entry],
    network: Any,
    num: int,
    seed: int = 0,
    real_num: int = 10_000,
    progress: bool = False,
) -> Comparison:
    """Sample every entry (``num`` images, seed ``seed``), time it and measure it in ``network``'s
    features against its run's real data (at most ``real_num`` images, read and featurised once per
    dataset, before anything is sampled).

    Raises:
        RunError: a real set too small for N (N real images are held out for the floors), or too few
            strings a text run did not train on; ValueError: a network that cannot measure a run (a
            reader of other strings or images). All before anything is sampled.
    """
    for entry in entries:
        check_network(network, entry.run)
    reals = _real_sets(entries, network, num, real_num, seed)
    asked = [_asked(entry, reals, num, seed) for entry in entries]  # all drawn before any sampling
    rows = [_measure(e, wanted, reals, network, num, seed, progress) for e, wanted in zip(entries, asked)]
    runs = _distinct_runs(entries)
    curves = {str(run.run_dir): read_metrics(run.run_dir) for run in runs}
    curves = {name: records for name, records in curves.items() if any("loss" in r for r in records)}
    real_sets: dict[str, dict[str, Any]] = {}
    for entry in entries:
        found = real_sets.setdefault(
            dataset_key(entry.run),
            {
                "data": entry.run.config.data.name,
                "images": len(reals[dataset_key(entry.run)][0].images),
                "runs": [],
            },
        )
        if str(entry.run.run_dir) not in found["runs"]:
            found["runs"].append(str(entry.run.run_dir))
    context = {
        "num": num,
        "seed": seed,
        "feature_network": rows[0]["result"]["feature_network"],
        "fd_label": rows[0]["result"]["fd_label"],
        "real_sets": list(real_sets.values()),
    }
    return Comparison(
        rows, [training_summary(run) for run in runs], config_differences(runs), curves, context
    )
