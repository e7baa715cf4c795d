"""Which condition each sample gets: class labels, strings, defaults, grid rows and the CLI's specs.

Every command that samples asks the same questions, answered here once:

- which label or string sample i gets (:func:`condition_labels`: given labels are cycled; without
  any, classes in turn, or random strings fixed by the seed for text runs);
- which strings a text run did not train on (:func:`unseen_texts`, for evaluation);
- where each string's characters stand, for runs whose data carries layouts (:func:`place_conditions`);
- how a grid is laid out (one row per class with ``--labels all``, one row per string with ``--text``);
- how ``--labels 0,3,7`` / ``--labels all`` and ``--text fngff,gnfcd`` are read and checked
  (:func:`plan_conditions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ddpmlab.runs.rundir import Run, RunError

__all__ = [
    "TEXT_PER_ROW",
    "ConditionPlan",
    "class_grid_labels",
    "text_grid_labels",
    "condition_labels",
    "unseen_texts",
    "sample_labels",
    "place_conditions",
    "slice_condition",
    "parse_label_spec",
    "parse_text_spec",
    "plan_conditions",
]

TEXT_PER_ROW = 8  # --text a,b without a number of samples: one grid row of this many per string
ANIMATED_DEFAULT = 16  # samples in an animation without a number (two per class with --labels all)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """[0]*per_class + [1]*per_class + ...: with ``num_classes`` rows, each grid row is one class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def text_grid_labels(texts: list[str], per_text: int) -> list[str]:
    """[texts[0]]*per_text + [texts[1]]*per_text + ...: with len(texts) rows, each row is one string."""
    return [text for text in texts for _ in range(per_text)]


def _text_length(run: Run) -> int:
    """The length of random strings for a text run: the data's (captchas have one), else the model's."""
    return run.info.text_length or run.text_encoder.length


def condition_labels(
    run: Run, num: int, labels: Any = None, seed: int = 0, num_classes: int | None = None
) -> Any:
    """Each of ``num`` samples' condition: ``labels`` cycled to ``num`` (class indices -> int64 tensor
    [num], strings -> list of ``num`` strings); without labels, for a text run random strings fixed by
    ``seed``, else classes in turn 0, 1, ..., ``num_classes`` - 1 (default: the data's classes)."""
    if labels is None and run.text_encoder is not None and num_classes is None:
        from ddpmlab.data.captcha import random_texts

        return random_texts(num, run.text_encoder.charset, _text_length(run), seed)
    if labels is None:
        classes = num_classes or run.info.num_classes
        return torch.arange(num) % classes
    if torch.is_tensor(labels) or isinstance(labels, (list, tuple)):
        if len(labels) == num:
            return torch.as_tensor(labels) if not isinstance(labels[0], str) else list(labels)
        if len(labels) and not isinstance(labels[0], str):
            cycle = torch.as_tensor(labels)
            return cycle[torch.arange(num) % len(cycle)]
        return [labels[i % len(labels)] for i in range(num)]
    raise RunError(f"cannot use {labels!r} as labels")


def unseen_texts(run: Run, num: int, seen: frozenset[str] | set[str], seed: int = 0) -> list[str]:
    """``num`` random strings for a text run, none of them in ``seen`` (e.g. the strings of the run's
    training data): the first ``num`` of the random strings of :func:`condition_labels` that are not
    in ``seen`` (so a string still depends on the seed and its place only).

    Raises:
        RunError: not a text run, or too few strings outside ``seen`` among 64 x ``num`` drawn.
    """
    from ddpmlab.data.captcha import random_texts

    encoder = run.text_encoder
    if encoder is None:
        raise RunError("unseen strings: this run is not conditioned on text")
    count = num
    while True:
        drawn = random_texts(count, encoder.charset, _text_length(run), seed)
        fresh = [text for text in drawn if text not in seen]
        if len(fresh) >= num:
            return fresh[:num]
        if count >= 64 * num:
            raise RunError(
                f"only {len(fresh)} of {count} random strings are not in the run's training data; need {num}"
            )
        count *= 2


def sample_labels(run: Run, num: int, labels: Any, seed: int, classifier: Any = None) -> Any:
    """The conditions of ``num`` samples of ``run`` (None for an unconditional run without a classifier):
    with a classifier, its classes in turn unless given; for a conditional run, as
    :func:`condition_labels`. Raises RunError for labels given to an unconditional run."""
    if classifier is not None:
        labels = condition_labels(run, num, labels, seed, classifier.num_classes)
    if run.conditional:
        return place_conditions(run.config.data, condition_labels(run, num, labels, seed), seed)
    if labels is not None and classifier is None:
        raise RunError("this run is unconditional: it takes no labels")
    return labels


def place_conditions(data: Any, labels: Any, seed: int) -> Any:
    """Plain strings laid out by the data's renderer where the run's data carries layouts
    (``data.layout`` of ``captcha``: :func:`ddpmlab.data.place_texts`, string i from (``seed``, i));
    class labels, strings already placed and the strings of any other data unchanged."""
    from ddpmlab.models.glyphs import PlacedText

    plain = isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    if not plain or not labels or any(isinstance(label, PlacedText) for label in labels):
        return labels
    from ddpmlab.data import place_texts

    return place_texts(data, labels, seed)


def slice_condition(labels: Any, start: int, count: int, num: int, device: torch.device) -> Any:
    """The conditions of samples start .. start+count, padding past ``num`` by repeating the last one."""
    indices = [min(i, num - 1) for i in range(start, start + count)]
    if torch.is_tensor(labels):
        return labels[torch.tensor(indices)].to(device)
    return [labels[i] for i in indices]


def parse_label_spec(spec: str | None, num_classes: int) -> list[int] | None:
    """``"0,3,7"`` -> [0, 3, 7] (each in 0..num_classes-1); ``"all"`` or None -> None (classes in turn).

    Raises:
        RunError: anything else, or a class out of range.
    """
    if spec is None or spec == "all":
        return None
    try:
        labels = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise RunError(f"--labels must be 'all' or comma-separated class indices, got {spec!r}") from None
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad or not labels:
        raise RunError(f"--labels: classes must lie in 0..{num_classes - 1}, got {spec!r}")
    return labels


def parse_text_spec(spec: str | None, run: Run) -> list[str] | None:
    """``"fngff,gnfcd"`` -> ["fngff", "gnfcd"], checked against a text run's charset and length (None
    without a spec). Raises RunError for a run not conditioned on text, or a string it cannot take."""
    from ddpmlab.data.captcha import check_texts

    if spec is None:
        return None
    encoder = run.text_encoder
    if encoder is None:
        raise RunError("--text: this run is not conditioned on text (class-conditional runs take --labels)")
    texts = [part.strip() for part in spec.split(",")]
    if not any(texts):
        raise RunError("--text is empty; give comma-separated strings, e.g. --text fngff,gnfcd")
    try:
        return check_texts(texts, encoder.charset, encoder.length)
    except ValueError as error:
        raise RunError(f"--text: {error}") from None


def _text_rows(num: int, count: int) -> tuple[int, int]:
    """(samples per string, grid rows) for ``num`` samples of ``count`` strings taken in blocks."""
    per_text = -(-num // count)
    return per_text, -(-num // per_text)


@dataclass
class ConditionPlan:
    """What a sampling request asks for.

    Attributes:
        num: the number of samples.
        labels: each sample's condition (int64 tensor [num] of classes, a list of strings, a list of
            class indices to cycle) or None for the defaults of :func:`condition_labels`.
        rows: grid rows (one per class or per string), or None for an about square grid.
    """

    num: int
    labels: Any
    rows: int | None


def plan_conditions(
    run: Run,
    num: int | None = None,
    labels: str | None = None,
    texts: str | None = None,
    classifier: Any = None,
    animation: bool = False,
) -> ConditionPlan:
    """Read a request's ``--labels`` / ``--text`` specs against ``run`` (and the classifier guiding it).

    Without ``num``: ``TEXT_PER_ROW`` samples per string with texts; for an animation two per class
    with ``labels="all"``, else 16; otherwise the run's ``sample.num``.

    Raises:
        RunError: labels for an unconditional run or a text run, classes out of range, strings the
            model cannot take, or a number of samples <= 0.
    """
    strings = parse_text_spec(texts, run)
    if labels and not run.conditional and classifier is None:
        raise RunError("--labels: this run is unconditional")
    if labels and run.text_encoder is not None:
        raise RunError("--labels: this run is conditioned on text; give strings with --text")
    classes = classifier.num_classes if classifier is not None else run.info.num_classes
    labelled = run.conditional or classifier is not None
    class_rows = (classes or None) if labelled and labels == "all" else None
    if num is None:
        if strings:
            num = TEXT_PER_ROW * len(strings)
        elif animation:
            num = 2 * class_rows if class_rows else ANIMATED_DEFAULT
        else:
            num = run.config.sample.num
    if num <= 0:
        raise RunError(f"--num must be positive, got {num}")
    chosen: Any = parse_label_spec(labels, classes) if labelled else None
    if labelled and chosen is None and labels == "all" and num % classes == 0:
        chosen = class_grid_labels(classes, num // classes)
    if strings:  # each string in turn, in blocks: one grid row per string
        per_text, rows = _text_rows(num, len(strings))
        return ConditionPlan(num, text_grid_labels(strings, per_text)[:num], rows)
    return ConditionPlan(num, chosen, class_rows)
