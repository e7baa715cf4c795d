"""Image sources by name: the one table every image dataset is built from.

``SOURCES`` maps a dataset name to its :class:`~ddpmlab.data.base.Source` (builder, options with
defaults, description from the config alone); the entries come from :mod:`ddpmlab.data.images`,
:mod:`ddpmlab.data.cars` and :mod:`ddpmlab.data.captcha`. Adding a source is adding a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddpmlab.config import ConfigError
from ddpmlab.data import captcha
from ddpmlab.data.base import ImageDataset, Source, image_info
from ddpmlab.data.cars import STANFORD_CARS_CLASSES, StanfordCarsDataset
from ddpmlab.data.images import (
    CIFAR10_NAMES,
    DEFAULT_ROOT,
    DIGIT_NAMES,
    FOLDER_LABELS,
    SPLITS,
    ImageFolderDataset,
    cifar10,
    digits,
    faces,
    mnist5k,
    torchvision_mnist,
)
from ddpmlab.data.info import DataInfo
from ddpmlab.plain import did_you_mean

__all__ = ["SOURCES", "image_dataset_names", "check_options", "build_image_dataset", "describe_image_data"]

# The table.
# --------------------------------------------------------------------------------------------------


def _square_info(
    native_channels: int, native_size: int | None, class_names: list[str] | None = None, classes: int = 0
):
    """A ``describe`` for sources whose size and classes the config decides."""

    def describe(image_size: int | None, options: dict[str, Any]):
        size = image_size or native_size
        if size is None:
            return None
        return image_info(options["channels"] or native_channels, size, size, class_names, classes)

    return describe


def _folder_info(image_size: int | None, options: dict[str, Any]):
    """An unlabelled folder at a set size is known without its files; a labelled one is not."""
    if image_size is None or options["labels"] != "none":
        return None
    return image_info(options["channels"], image_size, image_size)


def _root(root: str | Path | None) -> str:
    return str(root if root is not None else DEFAULT_ROOT)


def _build_folder(image_size, root, download, hflip, options) -> ImageDataset:
    if root is None:
        raise ConfigError("dataset folder needs data.root, the folder holding the images")
    return ImageFolderDataset(root, image_size, hflip, options["channels"], options["labels"])


def _build_torchvision_mnist(name: str) -> Callable[..., ImageDataset]:
    def build(image_size, root, download, hflip, options) -> ImageDataset:
        return torchvision_mnist(
            name, _root(root), download, options["split"], image_size, hflip, options["channels"]
        )

    return build


SOURCES: dict[str, Source] = {
    "mnist5k": Source(
        lambda image_size, root, download, hflip, options: mnist5k(image_size, hflip, options["channels"]),
        {"channels": None},
        _square_info(1, 28, DIGIT_NAMES),
    ),
    "digits": Source(
        lambda image_size, root, download, hflip, options: digits(image_size, hflip, options["channels"]),
        {"channels": None},
        _square_info(1, 8, DIGIT_NAMES),
    ),
    "faces": Source(
        lambda image_size, root, download, hflip, options: faces(image_size, hflip, options["channels"]),
        {"channels": None},
        _square_info(1, 25),
    ),
    "mnist": Source(
        _build_torchvision_mnist("mnist"),
        {"channels": None, "split": "train"},
        _square_info(1, 28, DIGIT_NAMES),
    ),
    "fashion_mnist": Source(
        _build_torchvision_mnist("fashion_mnist"),
        {"channels": None, "split": "train"},
        _square_info(1, 28, None, 10),
    ),
    "cifar10": Source(
        lambda image_size, root, download, hflip, options: cifar10(
            _root(root), download, options["split"], image_size, hflip, options["channels"]
        ),
        {"channels": None, "split": "train"},
        _square_info(3, 32, CIFAR10_NAMES),
    ),
    "folder": Source(_build_folder, {"channels": 3, "labels": "auto"}, _folder_info),
    "stanford_cars": Source(
        lambda image_size, root, download, hflip, options: StanfordCarsDataset(
            _root(root), options["split"], image_size, hflip, options["channels"], download
        ),
        {"channels": 3, "split": "train"},
        _square_info(3, None, None, STANFORD_CARS_CLASSES),
    ),
    **captcha.SOURCES,
}


def check_options(name: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The options of source ``name``: the user's over ``defaults``; ConfigError for an unknown key or
    a bad value of the shared keys (channels, split, labels)."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        listed = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(
            f"unknown data option(s) {', '.join(unknown)} for dataset {name}; allowed: {listed}"
        )
    values = {**defaults, **options}
    if values["channels"] is not None and values["channels"] not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3; got {values['channels']!r}")
    if "split" in values and values["split"] not in SPLITS:
        raise ConfigError(f"data.split must be one of {', '.join(SPLITS)}; got {values['split']!r}")
    if "labels" in values and values["labels"] not in FOLDER_LABELS:
        raise ConfigError(f"data.labels must be one of {', '.join(FOLDER_LABELS)}; got {values['labels']!r}")
    return values


def image_dataset_names() -> tuple[str, ...]:
    """The names :func:`build_image_dataset` understands."""
    return tuple(SOURCES)


def _source(name: str) -> Source:
    if name not in SOURCES:
        from ddpmlab.data.toy import toy_dataset_names

        toy = toy_dataset_names()
        raise ConfigError(
            f"unknown dataset {name!r}{did_you_mean(name, [*toy, *image_dataset_names()])}; "
            f"toy datasets: {', '.join(toy)}; "
            f"image datasets: {', '.join(image_dataset_names())}"
        )
    return SOURCES[name]


def _check_image_size(image_size: Any) -> None:
    bad = isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0
    if image_size is not None and bad:
        raise ConfigError(f"data.image_size must be a positive integer; got {image_size!r}")


def build_image_dataset(
    name: str,
    image_size: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    hflip: bool = False,
    **options: Any,
) -> ImageDataset:
    """An image dataset by name; items are ``(x0 float32 [C, H, W] in [-1, 1], label int)``.

    Args:
        name: one of :func:`image_dataset_names`.
        image_size: resize the shorter side to this and centre-crop to a square; None keeps the
            native size (which must be square). ``digits`` is 8x8 natively.
        root: the folder holding torchvision datasets (default ``data``), or the image folder itself
            for ``folder`` (required).
        download: let torchvision fetch a missing dataset (``mnist``, ``fashion_mnist``, ``cifar10``;
            ``stanford_cars`` can no longer be downloaded).
        hflip: random left-right flips (augmentation).
        options: the source's own options: ``channels`` (1 or 3; default: the source's own, RGB for
            folders), ``split`` (``train``/``test``, torchvision sources), ``labels``
            (``auto``/``folders``/``none``, folders); for ``captcha``: ``length``, ``charset``,
            ``height``, ``width``, ``num_items``, ``seed``, ``cache``, ``repeat_prob``; for
            ``captcha_folder``: ``height``, ``width``, ``charset``, ``length`` (see
            :mod:`ddpmlab.data.captcha`).

    Raises:
        ConfigError: an unknown name or option, or a bad option value.
        DataError: missing or unreadable data.
    """
    source = _source(name)
    values = check_options(name, source.options, options)
    _check_image_size(image_size)
    return source.build(image_size, root, download, hflip, values)


def describe_image_data(name: str, image_size: int | None = None, **options: Any) -> DataInfo | None:
    """The description of image source ``name`` from its options alone, without reading any file; None
    when only the files can tell (a labelled folder's classes, a native size). Raises ConfigError for
    an unknown name or option, as :func:`build_image_dataset` does."""
    source = _source(name)
    values = check_options(name, source.options, options)
    _check_image_size(image_size)
    return source.describe(image_size, values)


def place_image_texts(name: str, texts: Sequence[str], seed: int, **options: Any) -> list[str]:
    """The strings a text-conditional model of image source ``name`` samples with: laid out where the
    source's items carry layouts (:attr:`Source.place`), else ``texts`` as given."""
    source = _source(name)
    if source.place is None:
        return list(texts)
    return source.place(check_options(name, source.options, options), texts, seed)
