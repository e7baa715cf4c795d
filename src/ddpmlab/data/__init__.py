"""Data: toy distributions with exact answers, image datasets, and the batch streams training reads.

The run layer asks this package two things, both from a config's ``data`` section
(:class:`~ddpmlab.config.DataConfig`):

- :func:`build_data`: the training batch stream and the data's :class:`DataInfo` (reads the data);
- :func:`describe_data`: the :class:`DataInfo` from the config alone, or None where only the files can
  tell (dry runs use it, so that sizing a run never needs the data);
- :func:`place_texts`: the strings to sample a text-conditional model with (laid out by the data's
  renderer where the data's items carry layouts).

Modules: :mod:`.info` (``DataInfo``), :mod:`.base` (what every image source shares), :mod:`.images`,
:mod:`.cars`, :mod:`.captcha` (image sources), :mod:`.sources` (the name -> source table),
:mod:`.distributions`, :mod:`.curves`, :mod:`.toy` (toy data), :mod:`.batches` (batch streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ddpmlab.data.info import DataInfo

if TYPE_CHECKING:
    from ddpmlab.config import DataConfig

__all__ = ["DataInfo", "build_data", "describe_data", "is_toy", "place_texts"]


def is_toy(name: str) -> bool:
    """Whether ``name`` is a toy dataset (points drawn from a known distribution) rather than images."""
    from ddpmlab.data.toy import toy_dataset_names

    return name in toy_dataset_names()


def _toy_info(data: DataConfig) -> DataInfo:
    from ddpmlab.config import ConfigError
    from ddpmlab.data.toy import make_toy_dataset

    dataset = make_toy_dataset(data.name, **data.options)
    if data.conditional and not dataset.num_classes:
        raise ConfigError(f"data.conditional is true but {data.name} has no labels")
    return DataInfo("toy", (dataset.dim,), dataset.num_classes, dataset)


def _check_labels(data: DataConfig, info: DataInfo) -> None:
    from ddpmlab.config import ConfigError

    if data.conditional and not info.num_classes and info.text_charset is None:
        where = ""
        if data.name == "folder":
            where = f" in {data.root} (a labelled folder has one sub-folder per class)"
        raise ConfigError(f"data.conditional is true but the {data.name} data{where} has no labels")


def describe_data(data: DataConfig) -> DataInfo | None:
    """The description of the data ``data`` names, from the config alone (no file is read): always for
    toy data and for sources whose size and classes the config fixes (e.g. CIFAR-10: 3x32x32, 10
    classes); None when only the files can tell (a labelled folder, a native image size).

    Raises:
        ConfigError: an unknown dataset or option, or ``conditional`` on data without labels.
    """
    if is_toy(data.name):
        return _toy_info(data)
    from ddpmlab.data.sources import describe_image_data

    info = describe_image_data(data.name, data.image_size, **data.options)
    if info is not None:
        _check_labels(data, info)
    return info


def place_texts(data: DataConfig, texts: Sequence[str], seed: int) -> list[str]:
    """The strings to sample a text-conditional model of ``data`` with: for data whose items carry
    their characters' layout (``captcha`` with ``data.layout``), each string placed by the data's own
    renderer (string i from (``seed``, i); :class:`~ddpmlab.models.glyphs.PlacedText`); otherwise
    ``texts`` as given. Reads no data."""
    if is_toy(data.name):
        return list(texts)
    from ddpmlab.data.sources import place_image_texts

    return place_image_texts(data.name, texts, seed, **data.options)


def build_data(
    data: DataConfig, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> tuple[Any, DataInfo]:
    """The endless training batch stream of ``data`` and the data's description.

    Toy data: a :class:`~ddpmlab.data.batches.SampledBatches` of fresh exact samples (its own seed per
    rank, ``seed * 1000 + rank``). Images: a :class:`~ddpmlab.data.batches.LoaderBatches` over the
    dataset, each epoch shuffled by ``seed`` and shared out over ``world_size`` processes.

    Raises:
        ConfigError: an unknown dataset or option. DataError: missing or unreadable data.
    """
    from ddpmlab.data.batches import LoaderBatches, SampledBatches

    if is_toy(data.name):
        info = _toy_info(data)
        return SampledBatches(info.dataset.sample, batch_size, seed * 1000 + rank, rank), info
    from ddpmlab.data.base import VALUE_RANGE
    from ddpmlab.data.sources import build_image_dataset

    dataset = build_image_dataset(
        data.name, data.image_size, data.root, data.download, data.hflip, **data.options
    )
    info = DataInfo(
        kind="image",
        shape=tuple(dataset.shape),
        num_classes=dataset.num_classes,
        dataset=dataset,
        class_names=list(dataset.class_names) if dataset.class_names else None,
        text_charset=dataset.text_charset,
        text_length=dataset.text_length,
        value_range=VALUE_RANGE,
    )
    _check_labels(data, info)
    batches = LoaderBatches(
        dataset, batch_size, seed=seed, num_workers=data.num_workers, rank=rank, world_size=world_size
    )
    return batches, info
