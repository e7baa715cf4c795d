"""What every image source shares: the [-1, 1] <-> uint8 mapping, the per-item transform, file checks.

:class:`ImageDataset` is the base of every image dataset (:mod:`ddpmlab.data.images` and
:mod:`ddpmlab.data.captcha` both build on it; neither imports the other). Items are
``(x0 float32 [C, H, W] in [-1, 1], label)``: uint8 0..255 maps linearly onto [-1, 1] (0 -> -1,
255 -> 1), the normalisation every image run in ddpmlab uses (recorded as ``value_range`` in a run's
data description).

Unreadable files raise a :class:`DataError` naming the file, before training: :func:`check_images`
reads every header (size, mode, Pillow's decompression-bomb limit) and decodes every file once, so a
truncated file is named at construction, not mid-epoch. :func:`plain_image` reads every image mode at
its true levels (16-bit grey, palette, alpha, CMYK) or refuses it in one line;
:func:`describe_error` turns any exception into a one-line reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from ddpmlab.data.info import DataInfo

__all__ = [
    "DataError",
    "Source",
    "image_info",
    "IMAGE_EXTENSIONS",
    "VALUE_RANGE",
    "ImageDataset",
    "to_uint8",
    "from_uint8",
    "to_unit_range",
    "resize_crop",
    "convert_channels",
    "output_shape",
    "describe_error",
    "check_header",
    "check_images",
    "plain_image",
    "MIN_SIDE",
    "is_image",
    "images_under",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
VALUE_RANGE = (-1.0, 1.0)  # what uint8 0 and 255 become
_MASK64 = (1 << 64) - 1


class DataError(ValueError):
    """Data that cannot be used: a missing dataset, an empty folder, an unreadable image."""


# --------------------------------------------------------------------------------------------------
# uint8 <-> [-1, 1]
# --------------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], float [B, C, H, W] (or [C, H, W]) -> uint8 [B, H, W, C] (or [H, W, C]).

    Values are mapped by ``(x + 1) * 127.5``, rounded and clamped to 0..255.
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"expected images [B, C, H, W] or [C, H, W], got shape {list(images.shape)}")
    pixels = ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-3, -1).contiguous()


def from_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The inverse of :func:`to_uint8`: uint8 [B, H, W, C] (or [H, W, C]) -> float32 [B, C, H, W] in [-1, 1].

    Accepts tensors and numpy arrays; 0 -> -1 and 255 -> 1 exactly."""
    pixels = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    if pixels.dtype != torch.uint8 or pixels.ndim not in (3, 4):
        raise ValueError(f"expected uint8 images [B, H, W, C], got {pixels.dtype} {list(pixels.shape)}")
    return to_unit_range(pixels.movedim(-1, -3).contiguous())


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.to(torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------
# The base dataset and its per-item transform.
# --------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Shared part of the image datasets: the per-item transform and the data's description.

    Attributes:
        name: the source's name (``mnist5k``, ``folder``, ...).
        labels: int64 [N], each item's class index (all 0 for unlabelled data).
        num_classes: the number of classes, 0 for unlabelled data.
        class_names: one name per class (None for unlabelled data).
        shape: one item's shape (C, H, W).
        hflip: whether items are flipped left-right at random (probability 1/2). The coin is a
            hash of (``flip_seed``, ``flip_epoch``, index), not the global RNG, so a resumed run sees
            the same flips as an uninterrupted one, whatever the number of loader workers.
        flip_seed, flip_epoch: set by the batch stream before each epoch (see ``LoaderBatches``).
    """

    name: str
    labels: torch.Tensor
    num_classes: int
    class_names: list[str] | None
    shape: tuple[int, int, int]
    image_size: int | None
    channels: int
    hflip: bool
    flip_seed: int = 0
    flip_epoch: int = 0
    text_charset: str | None = None  # text-labelled data (captchas): labels are strings of these
    text_length: int | None = None  # characters, at most this many

    def __len__(self) -> int:
        return len(self.labels)

    def _label(self, index: int) -> int:
        return int(self.labels[index])

    def _flipped(self, index: int) -> bool:
        """A fair coin fixed by (flip_seed, flip_epoch, index): splitmix64's finaliser, lowest bit."""
        z = (self.flip_seed * 0x9E3779B97F4A7C15 + self.flip_epoch * 0xBF58476D1CE4E5B9 + index) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return bool((z ^ (z >> 31)) & 1)

    def _finish(self, pixels: torch.Tensor, index: int) -> torch.Tensor:
        """uint8 [C', H', W'] -> float32 [C, H, W] in [-1, 1]: resize + crop, channels, flip, scale."""
        if self.image_size is not None:
            pixels = resize_crop(pixels, self.image_size)
        pixels = convert_channels(pixels, self.channels)
        if self.hflip and self._flipped(index):
            pixels = pixels.flip(-1)
        return to_unit_range(pixels)

    def __repr__(self) -> str:
        c, h, w = self.shape
        classes = f"{self.num_classes} classes" if self.num_classes else "unlabelled"
        return f"{type(self).__name__}({self.name}, {len(self)} images {c}x{h}x{w}, {classes})"


def resize_crop(image: Any, size: int) -> Any:
    """Resize the shorter side to ``size`` (bicubic, antialiased) and centre-crop to size x size.

    Works on PIL images and on uint8 tensors [C, H, W] alike."""
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
    if min(width, height) != size:
        image = TF.resize(image, [size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        width, height = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
    if width != size or height != size:
        image = TF.center_crop(image, [size, size])
    return image


def convert_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    if pixels.shape[0] == channels:
        return pixels
    if channels == 3:
        return pixels.expand(3, -1, -1)
    return TF.rgb_to_grayscale(pixels, num_output_channels=1)


def output_shape(native: tuple[int, int, int], image_size: int | None, channels: int, where: str):
    """(C, H, W) of the items, checking that native-size images are square."""
    _, height, width = native
    if image_size is None:
        if height != width:
            raise DataError(
                f"{where} has non-square {width}x{height} images; set data.image_size to resize and crop them"
            )
        image_size = height
    return (channels, image_size, image_size)


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# Modes read as they are (PIL converts them to L or RGB exactly: 1-bit, palette, CMYK and YCbCr
# through PIL's own conversions), modes with an alpha channel (composited on white) and integer
# modes (16-bit greyscale PNGs: scaled from 0..65535 to 0..255).
PLAIN_MODES = ("1", "L", "P", "RGB", "CMYK", "YCbCr")
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MIN_SIDE = 8  # pixels on the shorter side: smaller images (a 1x1 file) hold no picture to learn


def _mode_problem(image: Image.Image) -> str | None:
    if image.mode in PLAIN_MODES or image.mode in ALPHA_MODES or image.mode in INTEGER_MODES:
        return None
    return f"its mode {image.mode} cannot be read as 8-bit grey or RGB; save it as PNG (grey, RGB or RGBA)"


def check_header(path: str) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding pixels, or a DataError naming the file:
    unreadable, empty, larger than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, which
    this reads as an error, not a warning), or of a mode ddpmlab cannot read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                problem = _mode_problem(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"image too large: {path} ({describe_error(error)})") from None
    except Exception as error:
        raise DataError(f"unreadable image: {path} ({describe_error(error)})") from None
    if width <= 0 or height <= 0:
        raise DataError(f"unreadable image: {path} (empty {width}x{height} image)")
    if problem:
        raise DataError(f"unreadable image: {path} ({problem})")
    return width, height


def _decode(path: str) -> None:
    """Decode the whole file (JPEGs at 1/8 size, which still reads every byte), so that a truncated or
    corrupt file is found before training rather than mid-epoch."""
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (1, 1))
            image.load()
    except Exception as error:
        raise DataError(f"unreadable image: {path} ({describe_error(error)})") from None


def check_images(paths: list[str]) -> list[tuple[int, int]]:
    """Every file's (width, height), after :func:`check_header` and a full decode of each file (in
    threads: Pillow decodes without the GIL); an image smaller than ``MIN_SIDE`` pixels on a side
    (e.g. 1x1) is refused. Raises a DataError naming the first bad file."""
    sizes = [check_header(path) for path in paths]
    for path, (width, height) in zip(paths, sizes):
        if min(width, height) < MIN_SIDE:
            raise DataError(
                f"image too small: {path} is {width}x{height}; images need at least {MIN_SIDE} pixels "
                "on each side"
            )
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_decode, paths))
    return sizes


def plain_image(image: Image.Image, mode: str, where: str) -> Image.Image:
    """``image`` as ``mode`` (``L`` or ``RGB``) at its true levels: 16-bit greyscale scaled from
    0..65535 to 0..255 (rounded), alpha composited on white, palette / 1-bit / CMYK / YCbCr through
    PIL's conversions (CMYK without a colour profile), RGB to grey by ITU-R 601-2 luma
    (L = 0.299 R + 0.587 G + 0.114 B). Raises a DataError naming ``where`` for any other mode."""
    if image.mode in INTEGER_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"unreadable image: {where} (values outside 0..65535 in mode {image.mode})")
        image = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    elif _mode_problem(image):
        raise DataError(f"unreadable image: {where} ({_mode_problem(image)})")
    return image.convert(mode)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def images_under(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, following links), sorted, hidden entries skipped."""
    found = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        found.extend(Path(directory) / name for name in names if is_image(Path(name)))
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# Sources: how a dataset name becomes a dataset.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One image source, as registered in a name -> Source table (``ddpmlab.data.SOURCES``).

    Attributes:
        build: ``build(image_size, root, download, hflip, options) -> ImageDataset``; ``options`` holds
            every key of :attr:`options` (the user's values over the defaults), already checked.
        options: the source's own options and their defaults (``data.<key>`` in a config).
        describe: ``describe(image_size, options) -> DataInfo | None``: the data's description from
            the config alone (None when only the files can tell, e.g. a folder's classes). Used by dry
            runs, which must not need the data.
        place: ``place(options, texts, seed) -> list[str]``: the strings a text-conditional model of this
            data is sampled with, where its items carry layouts (``data.layout`` of ``captcha``); None:
            strings as given.
    """

    build: Callable[..., ImageDataset]
    options: dict[str, Any] = field(default_factory=dict)
    describe: Callable[..., DataInfo | None] = lambda image_size, options: None
    place: Callable[..., list[str]] | None = None


def image_info(
    channels: int,
    height: int,
    width: int,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    text_charset: str | None = None,
    text_length: int | None = None,
) -> DataInfo:
    """The :class:`DataInfo` of image data: shape (channels, height, width), values in [-1, 1]."""
    classes = len(class_names) if class_names else (num_classes or 0)
    return DataInfo(
        "image", (channels, height, width), classes, None, class_names, text_charset, text_length, VALUE_RANGE
    )
