"""Captcha images and their text, for text-conditional generation.

Two sources, registered in :data:`SOURCES` (``ddpmlab.data.sources`` builds them by name); items are
``(x0 float32 [C, H, W] in [-1, 1], text str)``:

- ``captcha``: images rendered on the fly by the ``captcha`` package's ``ImageCaptcha`` (at its own
  160x60 size, then resized to ``height`` x ``width``) from random strings of ``length`` characters of
  ``charset``. Item i is fixed by (``seed``, i): its string and every random choice of the renderer
  (font size, rotation, warp, spacing, colours, noise dots and curve) come from one
  ``random.Random`` seeded with both, whatever the process, the DataLoader worker or the order of
  access. ``num_items`` sets the length of an epoch; rendered items are kept in memory (``cache``).
- ``captcha_folder``: a folder of captcha images named by their text (``fngff.png``, ...), e.g. the
  real image set of the captcha homework. The charset and the maximum length are those of the file
  names unless given; images are resized to ``height`` x ``width``.

The default charset is the 19 characters of the common 5-character captcha image set
("2345678bcdefgmnpwxy"; strings such as "fngff" or "gnfcd"). Images are wide, so these sources take
``height`` and ``width`` (default 32 x 96, divisible by the 4 of a 3-level UNet) instead of
``data.image_size``, and refuse ``data.hflip`` (mirrored text is not text).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from ddpmlab.config import ConfigError
from ddpmlab.data.base import (
    DataError,
    ImageDataset,
    Source,
    check_images,
    describe_error,
    image_info,
    images_under,
    plain_image,
)
from ddpmlab.data.captcha_render import (
    captcha_module,
    character_centres,
    image_captcha,
    layout_canvas,
    render_captcha,
)
from ddpmlab.models.glyphs import PlacedText

__all__ = [
    "DEFAULT_CHARSET",
    "CaptchaDataset",
    "CaptchaFolderDataset",
    "captcha_text",
    "random_texts",
    "draw_text",
    "check_texts",
    "render_captcha",
    "place_texts",
    "SOURCES",
]

DEFAULT_CHARSET = "2345678bcdefgmnpwxy"
DEFAULT_LENGTH = 5
DEFAULT_HEIGHT, DEFAULT_WIDTH = 32, 96
_MASK64 = (1 << 64) - 1
_SAMPLING_SALT = 0x5A17  # random strings for sampling differ from the training data of the same seed
_LAYOUT_SALT = 0x1A70  # layouts drawn for sampling: their own draws, apart from strings and renders


# --------------------------------------------------------------------------------------------------
# Strings.
# --------------------------------------------------------------------------------------------------


def _item_rng(seed: int, index: int, salt: int = 0) -> random.Random:
    """A ``random.Random`` fixed by (seed, index, salt); the three are packed into one integer."""
    return random.Random(((salt & 0xFFFF) << 128) | ((seed & _MASK64) << 64) | (index & _MASK64))


def draw_text(rng: random.Random, charset: str, length: int, repeat_prob: float = 0.0) -> str:
    """A string of ``length`` characters of ``charset`` drawn from ``rng``: the first uniformly, each
    later one a repeat of the one before it with probability ``repeat_prob``, else uniformly.

    With ``repeat_prob = 0`` the characters are independent and uniform (a repeat then comes with
    probability 1/len(charset)) and ``rng`` sees exactly ``length`` ``choice`` calls. A larger
    ``repeat_prob`` puts more doubled characters ("ff" in "fngff") into training strings, where
    text-conditional models most often draw a character once too often or too few times.
    """
    chars = [rng.choice(charset)]
    for _ in range(length - 1):
        if repeat_prob > 0 and rng.random() < repeat_prob:
            chars.append(chars[-1])
        else:
            chars.append(rng.choice(charset))
    return "".join(chars)


def captcha_text(
    seed: int,
    index: int,
    charset: str = DEFAULT_CHARSET,
    length: int = DEFAULT_LENGTH,
    repeat_prob: float = 0.0,
) -> str:
    """The string of item ``index`` of the ``captcha`` data with this ``seed`` (see :func:`draw_text`)."""
    return draw_text(_item_rng(seed, index), charset, length, repeat_prob)


def random_texts(num: int, charset: str, length: int, seed: int = 0) -> list[str]:
    """``num`` random strings of ``length`` characters of ``charset``; string i depends on (seed, i) only."""
    return [draw_text(_item_rng(seed, index, _SAMPLING_SALT), charset, length) for index in range(num)]


def check_texts(texts: Sequence[str], charset: str, length: int) -> list[str]:
    """``texts`` as a list, or a ValueError (one line) for an empty string, a string longer than
    ``length`` or one with characters outside ``charset``."""
    allowed = set(charset)
    for text in texts:
        if not text:
            raise ValueError("empty string (every string needs at least one character)")
        if len(text) > length:
            raise ValueError(f"{text!r} is longer than {length} characters")
        unknown = sorted(set(text) - allowed)
        if unknown:
            raise ValueError(f"{text!r} has characters {''.join(unknown)!r} outside the charset {charset!r}")
    return list(texts)


def _check_text_options(charset: Any, length: Any, where: str) -> None:
    if charset is not None:
        if not isinstance(charset, str) or not charset:
            raise DataError(f"{where}: data.charset must be a non-empty string, got {charset!r}")
        repeated = sorted({c for c in charset if charset.count(c) > 1})
        if repeated:
            raise DataError(f"{where}: data.charset repeats the characters {''.join(repeated)!r}")
        if any(c.isspace() or c == "," for c in charset):
            raise DataError(f"{where}: data.charset may not hold spaces or commas, got {charset!r}")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise DataError(f"{where}: data.length must be a positive integer, got {length!r}")


def _check_repeat_prob(value: Any) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 <= value < 1:
        raise DataError(f"captcha: data.repeat_prob must be a number in [0, 1), got {value!r}")


def _check_layout(value: Any) -> None:
    if not isinstance(value, bool):
        raise DataError(f"captcha: data.layout must be true or false, got {value!r}")


def _check_size(height: Any, width: Any, where: str) -> None:
    for key, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(f"{where}: data.{key} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Datasets.
# --------------------------------------------------------------------------------------------------


class _TextImageDataset(ImageDataset):
    """Shared part of the captcha datasets: string labels, a fixed (height, width), no flips.

    Attributes beyond :class:`ImageDataset`'s: ``texts`` (each item's string; also ``labels``),
    ``text_charset`` and ``text_length`` (what a text-conditional model needs).
    """

    texts: list[str]
    text_charset: str
    text_length: int

    def _setup(self, texts: list[str], charset: str, length: int, channels: int, height: int, width: int):
        self.texts = texts
        self.labels = texts  # type: ignore[assignment]  # strings, not class indices
        self.text_charset = charset
        self.text_length = length
        self.num_classes = 0
        self.class_names = None
        self.image_size = None
        self.hflip = False
        self.channels = channels
        self.height, self.width = height, width
        self.shape = (channels, height, width)

    def __len__(self) -> int:
        return len(self.texts)

    def _label(self, index: int) -> str:  # type: ignore[override]
        return self.texts[index]

    def _to_item(self, image: Image.Image, index: int, where: str = "a captcha") -> torch.Tensor:
        """A PIL image (any mode, any size) -> float32 [C, H, W] in [-1, 1] (modes as
        :func:`~ddpmlab.data.base.plain_image` reads them: alpha on white, 16-bit grey scaled)."""
        image = plain_image(image, "RGB" if self.channels == 3 else "L", where)
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.BICUBIC)
        return self._finish(TF.pil_to_tensor(image), index)

    def __repr__(self) -> str:
        c, h, w = self.shape
        return (
            f"{type(self).__name__}({self.name}, {len(self)} images {c}x{h}x{w}, "
            f"text of up to {self.text_length} characters of {self.text_charset!r})"
        )


class CaptchaDataset(_TextImageDataset):
    """Captchas rendered on the fly from random strings; item i is fixed by (``seed``, i).

    Args:
        num_items: the number of items (an epoch).
        length: characters per string.
        charset: the characters strings are drawn from (uniformly, independently).
        height, width: the output size (rendered at 160x60, or larger for taller outputs, then resized).
        channels: 1 (grayscale) or 3 (RGB: the renderer's random colours).
        seed: fixes every string and every rendering.
        cache: keep rendered items in memory (uint8), so that later epochs only read them.
        repeat_prob: the probability that a character repeats the one before it (0: independent,
            uniform characters; see :func:`draw_text`).
        layout: label each item with a :class:`~ddpmlab.models.glyphs.PlacedText`: its string and the
            centre of each character as the renderer placed it (:func:`character_centres`), which a
            ``text_glyph`` model draws its glyphs at; sampling then places strings with
            :func:`place_texts`.

    Raises:
        DataError: a bad option value.
    """

    def __init__(
        self,
        num_items: int = 10000,
        length: int = DEFAULT_LENGTH,
        charset: str = DEFAULT_CHARSET,
        height: int = DEFAULT_HEIGHT,
        width: int = DEFAULT_WIDTH,
        channels: int = 1,
        seed: int = 0,
        cache: bool = True,
        repeat_prob: float = 0.0,
        layout: bool = False,
    ) -> None:
        _check_text_options(charset, length, "captcha")
        _check_size(height, width, "captcha")
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items <= 0:
            raise DataError(f"captcha: data.num_items must be a positive integer, got {num_items!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"captcha: data.seed must be an integer, got {seed!r}")
        _check_repeat_prob(repeat_prob)
        _check_layout(layout)
        self.name = "captcha"
        self.seed = seed
        self.repeat_prob = float(repeat_prob)
        self.layout = layout
        texts = [captcha_text(seed, index, charset, length, self.repeat_prob) for index in range(num_items)]
        self._setup(texts, charset, length, channels, height, width)
        self.cache = bool(cache)
        self._pixels: torch.Tensor | None = None
        self._placed: list[PlacedText | None] | None = None  # with layout and cache: each item's label
        self._rendered: torch.Tensor | None = None
        self._generator: Any = None
        self._layout_generator: Any = None

    def _render_rng(self, index: int) -> random.Random:
        """Item ``index``'s generator, past its string's draws: where the renderer starts."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of a captcha dataset of {len(self)} items")
        rng = _item_rng(self.seed, index)
        draw_text(rng, self.text_charset, self.text_length, self.repeat_prob)  # replay the string's draws
        return rng

    def render(self, index: int) -> Image.Image:
        """Item ``index``'s captcha as an RGB PIL image (height x width), rendered afresh."""
        rng = self._render_rng(index)
        if self._generator is None:
            self._generator = image_captcha(captcha_module(), self.height)
        return render_captcha(self.texts[index], rng, self.height, self.width, self._generator)

    def placed_text(self, index: int) -> PlacedText:
        """Item ``index``'s string with its characters' centres in its captcha (computed afresh)."""
        if self._layout_generator is None:
            canvas = layout_canvas(self.text_length)
            self._layout_generator = image_captcha(captcha_module(), self.height, canvas)
        text, rng = self.texts[index], self._render_rng(index)
        return PlacedText(text, character_centres(text, rng, self.height, self._layout_generator))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        index = int(index)
        if not self.cache:
            label = self.placed_text(index) if self.layout else self.texts[index]
            return self._to_item(self.render(index), index), label
        if self._pixels is None:
            self._pixels = torch.zeros((len(self), *self.shape), dtype=torch.uint8)
            self._rendered = torch.zeros(len(self), dtype=torch.bool)
            if self.layout:
                self._placed = [None] * len(self)
        if not self._rendered[index]:
            image = self.render(index).convert("RGB" if self.channels == 3 else "L")
            self._pixels[index] = TF.pil_to_tensor(image)
            if self._placed is not None:
                self._placed[index] = self.placed_text(index)
            self._rendered[index] = True
        label = self.texts[index] if self._placed is None else self._placed[index]
        return self._finish(self._pixels[index], index), label

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_generator"] = state["_layout_generator"] = None  # fonts are reloaded where needed
        return state


def place_texts(
    texts: Sequence[str], seed: int = 0, height: int = DEFAULT_HEIGHT, generator: Any = None
) -> list[PlacedText]:
    """Each string with centres drawn for it by the captcha renderer: string i is laid out as a captcha
    of it drawn from (``seed``, i) would be (sampling a model trained with ``data.layout``; the
    empty string stays plain). ``height``: the images' height (it sets the renderer's scale)."""
    if generator is None:
        generator = image_captcha(captcha_module(), height, layout_canvas(max(map(len, texts), default=0)))
    placed = []
    for index, text in enumerate(texts):
        rng = _item_rng(seed, index, _LAYOUT_SALT)
        placed.append(PlacedText(text, character_centres(text, rng, height, generator)) if text else text)
    return placed


class CaptchaFolderDataset(_TextImageDataset):
    """Captcha images under ``root`` whose file names (without extension) are their text.

    Args:
        root: the folder (searched recursively; hidden files and folders are skipped).
        height, width: every image is resized to this (bicubic; transparent images go on white).
        channels: 1 or 3.
        charset: the allowed characters (default: those of the file names, sorted).
        length: the maximum string length (default: the longest file name).

    Every file's header is read at construction, so an unreadable file is reported by path before
    training starts; a name with a character outside a given ``charset``, or longer than a given
    ``length``, too.
    """

    def __init__(
        self,
        root: str | Path,
        height: int = DEFAULT_HEIGHT,
        width: int = DEFAULT_WIDTH,
        channels: int = 1,
        charset: str | None = None,
        length: int | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"captcha folder not found: {root}{' (it is a file)' if root.exists() else ''}")
        _check_text_options(charset, length, str(root))
        _check_size(height, width, str(root))
        self.name = "captcha_folder"
        self.root = str(root)
        files = images_under(root)
        if not files:
            raise DataError(f"no captcha images found under {root}")
        texts = [path.stem for path in files]
        for path, text in zip(files, texts):
            if not text or any(c.isspace() or c == "," for c in text):
                raise DataError(f"captcha file names must be their text (no spaces or commas): {path}")
        charset = charset if charset is not None else "".join(sorted(set("".join(texts))))
        length = length if length is not None else max(len(text) for text in texts)
        for path, text in zip(files, texts):
            try:
                check_texts([text], charset, length)
            except ValueError as error:
                raise DataError(f"captcha file {path}: {error}") from None
        self.files = [str(path) for path in files]
        check_images(self.files)
        self._setup(texts, charset, length, channels, height, width)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image.load()
                item = self._to_item(image, index, path)
        except DataError:
            raise
        except Exception as error:
            raise DataError(f"unreadable image: {path} ({describe_error(error)})") from None
        return item, self.texts[index]


# --------------------------------------------------------------------------------------------------
# The sources of this module, by name.
# --------------------------------------------------------------------------------------------------


def _check_shared(name: str, image_size: int | None, hflip: bool) -> None:
    if image_size is not None:
        raise ConfigError(
            f"dataset {name} has wide images: set data.height and data.width (default 32 and 96) "
            "instead of data.image_size"
        )
    if hflip:
        raise ConfigError(f"dataset {name}: data.hflip would mirror the text; leave it false")


def _build_captcha(image_size, root, download, hflip, options) -> CaptchaDataset:
    _check_shared("captcha", image_size, hflip)
    values = dict(options)
    if values["charset"] is None:
        values["charset"] = DEFAULT_CHARSET
    return CaptchaDataset(**values)


def _refuse_folder_layout(options: dict[str, Any]) -> dict[str, Any]:
    """A folder's options less ``layout``, which must be false: no renderer says where its characters
    stand (the shipped captcha config, which sets it, is switched to a folder with data.layout=false)."""
    values = dict(options)
    layout = values.pop("layout")
    _check_layout(layout)
    if layout:
        raise ConfigError(
            "dataset captcha_folder has no layouts (data.layout needs the rendered captcha source, which "
            "knows where it drew each character): add data.layout=false"
        )
    return values


def _build_captcha_folder(image_size, root, download, hflip, options) -> CaptchaFolderDataset:
    _check_shared("captcha_folder", image_size, hflip)
    values = _refuse_folder_layout(options)
    if root is None:
        raise ConfigError("dataset captcha_folder needs data.root, a folder of images named by text")
    return CaptchaFolderDataset(root, **values)


def _describe_captcha(image_size, options):
    """Rendered captchas: everything follows from the options."""
    _check_repeat_prob(options["repeat_prob"])
    _check_layout(options["layout"])
    charset = options["charset"] if options["charset"] is not None else DEFAULT_CHARSET
    return image_info(
        options["channels"], options["height"], options["width"], text_charset=charset,
        text_length=options["length"],
    )


def _describe_captcha_folder(image_size, options):
    """A captcha folder: known without its files when the charset and length are given."""
    _refuse_folder_layout(options)
    if options["charset"] is None or options["length"] is None:
        return None
    return image_info(
        options["channels"], options["height"], options["width"], text_charset=options["charset"],
        text_length=options["length"],
    )


def _place_captcha(options: dict[str, Any], texts: Sequence[str], seed: int) -> list[str]:
    """Sampling strings for a model of this data: placed by the renderer with ``data.layout``."""
    return place_texts(texts, seed, options["height"]) if options["layout"] else list(texts)


SOURCES: dict[str, Source] = {
    "captcha": Source(
        _build_captcha,
        {
            "channels": 1, "length": DEFAULT_LENGTH, "charset": None, "height": DEFAULT_HEIGHT,
            "width": DEFAULT_WIDTH, "num_items": 10000, "seed": 0, "cache": True, "repeat_prob": 0.0,
            "layout": False,
        },
        _describe_captcha,
        _place_captcha,
    ),
    "captcha_folder": Source(
        _build_captcha_folder,
        {
            "channels": 1, "height": DEFAULT_HEIGHT, "width": DEFAULT_WIDTH, "charset": None, "length": None,
            "layout": False,
        },
        _describe_captcha_folder,
    ),
}
