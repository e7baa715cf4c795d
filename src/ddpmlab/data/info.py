"""What a run needs to know about its data, recorded so that a trained run never needs the data again.

:class:`DataInfo` is built from the data when training starts (or, for a dry run, from the config
alone where the config decides it: :func:`ddpmlab.data.describe_data`) and written into the run's
``config.yaml`` as ``data.info``. Opening a run reads it back (:meth:`DataInfo.from_dict`): the image
shape, the classes, the text charset and length, and the value range of the model's data, without
touching a file of the dataset. A run copied to another machine samples there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DataInfo", "DATA_KINDS", "MAX_VALUES"]

DATA_KINDS = ("toy", "image")
MAX_VALUES = 1 << 24  # numbers in one sample: 16.7M, e.g. 3 x 2048 x 2048


@dataclass
class DataInfo:
    """The description of a run's data.

    Attributes:
        kind: ``toy`` (points [D]) or ``image`` (images [C, H, W] in ``value_range``).
        shape: one sample's shape: (D,) or (C, H, W).
        num_classes: the number of classes, 0 when the data has no class labels.
        dataset: the dataset object when the data was built (a toy distribution, or an image dataset);
            None when the description was read from a run's config or made from a config alone.
        class_names: one name per class, or None (unlabelled data, or names unknown).
        text_charset: text-labelled data (captchas): the characters the strings are made of.
        text_length: and the strings' maximum length.
        value_range: (low, high) of the model's data: images map uint8 0 and 255 to these; None for toy
            data (real-valued points).
    """

    kind: str
    shape: tuple[int, ...]
    num_classes: int
    dataset: Any = None
    class_names: list[str] | None = None
    text_charset: str | None = None
    text_length: int | None = None
    value_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml`` (everything but the dataset object)."""
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names else None,
            "text_charset": self.text_charset,
            "text_length": self.text_length,
            "value_range": list(self.value_range) if self.value_range else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], dataset: Any = None) -> DataInfo:
        """The inverse of :meth:`to_dict`. Raises ValueError when ``raw`` is not such a record (a
        damaged or hostile run: every field is checked, and a sample may hold at most
        ``MAX_VALUES`` numbers, so that opening a run cannot ask for an absurd allocation)."""
        try:
            info = cls._parse(raw, dataset)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
            info = None
        if info is None:
            text = repr(raw)
            raise ValueError(f"not a data description (kind, shape, num_classes): {text[:120]}")
        return info

    @classmethod
    def _parse(cls, raw: dict[str, Any], dataset: Any) -> DataInfo | None:
        kind, num_classes = raw["kind"], raw["num_classes"]
        shape = tuple(raw["shape"])
        numbers = (num_classes, *shape)
        if kind not in DATA_KINDS or not shape or not all(type(n) is int for n in numbers):
            return None
        if min(shape) <= 0 or num_classes < 0 or math.prod(shape) > MAX_VALUES:
            return None
        names, charset, length = raw.get("class_names"), raw.get("text_charset"), raw.get("text_length")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return None
        if charset is not None and not (isinstance(charset, str) and charset):
            return None
        if length is not None and not (type(length) is int and length > 0):
            return None
        value_range = raw.get("value_range")
        if value_range is not None:
            low, high = (float(value) for value in value_range)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                return None
            value_range = (low, high)
        return cls(kind, shape, num_classes, dataset, names or None, charset, length, value_range)

    def same_as(self, other: DataInfo) -> bool:
        """Whether two descriptions agree (the dataset objects aside)."""
        return self.to_dict() == other.to_dict()
