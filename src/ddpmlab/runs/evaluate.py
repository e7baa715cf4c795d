"""How good is a run? Its samples against its real training data, in the features of a judge or of the
standard Inception network, every number beside what real data scores (``ddpmlab evaluate``).

What is measured (see :mod:`ddpmlab.metrics` for each metric's paper and protocol):

- ``fd`` (labelled ``FD_judge`` on a judge's features, ``FID`` on Inception's), ``kid`` +- ``kid_std``,
  ``precision`` and ``recall``: samples against a real reference; each ``*_floor`` is the same metric
  for N real images held out of that reference (what a perfect generator would score at this N);
- ``class_accuracy`` (class-conditional runs, with a judge): the fraction of samples the judge
  classifies as the class they were asked for; ``class_accuracy_floor``: the judge's accuracy on the
  same number of real images, chosen at random (what "recognisable" means for this judge);
- ``read_exact`` and ``read_chars`` (text-conditional runs, with a reader, ``reader:RUN``): the fraction
  of samples read exactly as the string they were asked for, and the per-character accuracy
  (:mod:`ddpmlab.metrics.reading`); ``*_floor``: the reader's on the same number of real images of the
  run's data (``read_floor_n``); ``misread``: up to 10 (asked, read) pairs; ``reader_heldout``: the
  reader's own accuracy on its held-out renders;
- ``memorisation``, in the features and in pixels: each sample's distance to its nearest real image,
  and the fraction of samples closer to the real set than real images are. The real set is split (seeded)
  90 / 10: the 90% are searched, the 10% calibrate the threshold (the 5% quantile of their nearest
  distances to the 90%). The model trained on all of it, so a copy of one of the 10% is not flagged:
  the fraction flagged is a lower bound on copying, with about 5% expected from fresh images.

The real images are the run's training data, read again (evaluation is the one command that needs
the data). Their features are computed once per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmlab.data import build_data
from ddpmlab.data.base import to_uint8
from ddpmlab.metrics import (
    class_accuracy,
    compare_features,
    extract_features,
    memorisation_report,
    plot_closest_pairs,
)
from ddpmlab.metrics.features import network_name
from ddpmlab.metrics.reading import reading_accuracy
from ddpmlab.runs.rundir import Run, RunError

__all__ = [
    "RealData",
    "real_data",
    "load_feature_network",
    "check_network",
    "evaluate_images",
    "format_evaluation",
    "split_memorisation",
]

MEMORISATION_HOLDOUT = 0.1  # the share of the real set that calibrates the memorisation threshold


@dataclass
class RealData:
    """Real images of a run's data: uint8 [M, H, W, C] and their labels (int64 [M] classes, M strings
    of text data, or None); ``texts``: every string of the data, not only of these M images (text
    data; None otherwise), e.g. to sample strings the model did not train on."""

    images: torch.Tensor
    labels: torch.Tensor | list[str] | None
    texts: frozenset[str] | None = None


def real_data(run: Run, limit: int = 10_000, seed: int = 0) -> RealData:
    """Up to ``limit`` images of the run's training data (a seeded choice when there are more), read
    without augmentation, and without glyph layouts (``data.layout``: the same images; only the strings
    are kept). Raises RunError when the data cannot be read (with the reason)."""
    overrides = ["data.hflip=false"] if run.config.data.hflip else []
    if run.config.data.options.get("layout"):
        overrides.append("data.layout=false")
    config = run.config.with_overrides(overrides) if overrides else run.config
    try:
        dataset = build_data(config.data, 1, seed)[1].dataset
    except ValueError as error:
        raise RunError(f"evaluating {run.run_dir} needs its training data: {error}") from None
    if dataset is None or run.info.kind != "image":
        raise RunError(f"{run.run_dir} is a {run.info.kind} run; evaluate measures image runs")
    count = len(dataset)
    chosen = range(count) if count <= limit else np.random.default_rng(seed).permutation(count)[:limit]
    items = [dataset[int(i)] for i in chosen]
    images = to_uint8(torch.stack([x for x, _ in items]))
    if run.info.text_charset:
        texts = getattr(dataset, "texts", None)
        return RealData(images, [str(y) for _, y in items], frozenset(texts) if texts is not None else None)
    labels = torch.tensor([int(y) for _, y in items]) if run.info.num_classes else None
    return RealData(images, labels)


def load_feature_network(spec: str, device: str = "auto") -> Any:
    """The feature network a ``--features`` spec names: ``judge:RUN`` (a judge run), ``reader:RUN`` (a
    captcha reader run) or ``inception`` (optionally ``inception:PATH`` to the weights file). Raises
    ValueError for anything else, RunError for a run of another kind."""
    kind, _, where = spec.partition(":")
    if kind == "judge" and where:
        from ddpmlab.runs.judge_network import open_judge

        return open_judge(where, device)
    if kind == "reader" and where:
        from ddpmlab.runs.reader_network import open_reader

        return open_reader(where, device)
    if kind == "inception":
        from ddpmlab.metrics import load_inception

        return load_inception(where or None, None if device == "auto" else device)
    raise ValueError(f"--features must be judge:RUN or inception[:WEIGHTS] (or reader:RUN), got {spec!r}")


def check_network(network: Any, run: Run) -> None:
    """Refuse, before sampling, a feature network that cannot measure ``run`` (e.g. a reader of other
    images or strings: its ``check_run``); networks without the check are taken as they are."""
    check = getattr(network, "check_run", None)
    if check is not None:
        check(run)


def _is_texts(labels: Any) -> bool:
    return isinstance(labels, list) and bool(labels) and all(isinstance(label, str) for label in labels)


def _reading(network: Any, images: torch.Tensor, texts: list[str], real: RealData) -> dict[str, Any]:
    """Reading accuracy of samples asked for ``texts``, beside the reader's on as many real images."""
    readings = network.read(images)
    scores = reading_accuracy(readings, texts)
    count = min(len(real.images), len(images))
    floor = reading_accuracy(network.read(real.images[:count]), real.labels[:count])
    misread = [[asked, read] for asked, read in zip(texts, readings) if asked != read][:10]
    result = {
        "read_exact": scores["exact"],
        "read_chars": scores["chars"],
        "read_exact_floor": floor["exact"],
        "read_chars_floor": floor["chars"],
        "read_floor_n": count,
        "misread": misread,
    }
    if getattr(network, "heldout", None):
        result["reader_heldout"] = network.heldout
    return result


def split_memorisation(
    samples: torch.Tensor, real: torch.Tensor, seed: int
) -> tuple[dict[str, Any], Any, Any]:
    """:func:`memorisation_report` with the real set split 90 / 10 (see the module docstring); returns
    (summary, the report, the searched real rows' indices into ``real``)."""
    order = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(real)))
    held = max(1, round(MEMORISATION_HOLDOUT * len(real)))
    searched = order[held:]
    report = memorisation_report(
        samples.flatten(1).float(), real[searched].flatten(1).float(), real[order[:held]].flatten(1).float()
    )
    return report.summary(), report, searched


def evaluate_images(
    images: torch.Tensor,
    labels: Any,
    real: RealData,
    network: Any,
    seed: int = 0,
    pairs: str | Path | None = None,
    real_features: torch.Tensor | None = None,
    memorisation: bool = True,
) -> dict[str, Any]:
    """Every number of the module docstring for generated uint8 images [N, H, W, C] (``labels``: the
    class or string each was asked for, or None) against ``real``, in the features of ``network``.

    Args:
        pairs: where to draw the samples closest to the real set beside their nearest real image (PNG).
        real_features: ``network``'s features of ``real.images``, when already computed (a sweep
            measures many sample sets against the same real data).
        memorisation: also the memorisation report (False: skipped, e.g. during training).

    Raises:
        ValueError: too few real images (more than N are needed: N are held out for the floors).
    """
    fake = extract_features(images, network)
    if real_features is None:
        real_features = extract_features(real.images, network)
    result = compare_features(fake, real_features, network, seed=seed)
    if hasattr(network, "predict") and torch.is_tensor(labels) and torch.is_tensor(real.labels):
        result["class_accuracy"] = class_accuracy(network.predict(images), labels)
        # as many real images, chosen at random: the real set may be stored class by class (mnist5k is)
        count = min(len(real.images), len(images))
        chosen = torch.from_numpy(np.random.default_rng(seed + 2).permutation(len(real.images))[:count])
        result["class_accuracy_floor"] = class_accuracy(
            network.predict(real.images[chosen]), real.labels[chosen]
        )
    if hasattr(network, "read") and _is_texts(labels) and _is_texts(real.labels):
        result.update(_reading(network, images, labels, real))
    if not memorisation:
        return result
    memorised, report, searched = split_memorisation(fake, real_features, seed)
    in_pixels, pixel_report, pixel_searched = split_memorisation(images.float(), real.images.float(), seed)
    result["memorisation"] = {"features": memorised, "pixels": in_pixels}
    if pairs is not None:
        closest = real.images[searched]
        plot_closest_pairs(
            images,
            closest,
            report.distances,
            report.indices,
            pairs,
            threshold=report.threshold,
            title=f"nearest real images in {network_name(network)}",
        )
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """A small table of an :func:`evaluate_images` result: each metric beside its real-vs-real floor."""
    rows = [
        (result["fd_label"], result["fd"], result["fd_floor"]),
        (
            result.get("kid_label", "KID"),
            f"{result['kid']:.4g} +- {result['kid_std']:.2g}",
            f"{result['kid_floor']:.4g}",
        ),
        ("precision", result["precision"], result["precision_floor"]),
        ("recall", result["recall"], result["recall_floor"]),
    ]
    if "class_accuracy" in result:
        rows.append(("class accuracy", result["class_accuracy"], result["class_accuracy_floor"]))
    if "read_exact" in result:
        rows.append(("read exactly", result["read_exact"], result["read_exact_floor"]))
        rows.append(("read per character", result["read_chars"], result["read_chars_floor"]))
    for space in ("features", "pixels"):
        found = result["memorisation"][space]
        rows.append(
            (f"closer than real ({space})", found["fraction_flagged"], found["heldout_fraction_flagged"])
        )
    lines = [
        f"N = {result['n']} samples, reference {result['n_reference']} real, {result['feature_network']}",
        f"{'metric':<28} {'samples':>16} {'real (floor)':>14}",
    ]
    for name, value, floor in rows:
        value = value if isinstance(value, str) else f"{value:.4g}"
        floor = floor if isinstance(floor, str) else f"{floor:.4g}"
        lines.append(f"{name:<28} {value:>16} {floor:>14}")
    return "\n".join(lines)
