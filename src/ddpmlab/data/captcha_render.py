"""Rendering captchas with the ``captcha`` package, reproducibly, and finding where it put each character.

:func:`render_captcha` draws a string with the package's ``ImageCaptcha`` (at its own 160x60 size, then
resized), every random choice of the renderer taken from a ``random.Random`` the caller seeds: the
package's module globals ``secrets`` / ``random`` are swapped for it while it draws
(:func:`seeded_captcha`).

:func:`character_centres` answers where the characters of that same captcha stand: the horizontal centre
of each character's ink as a fraction of the image width. ``ImageCaptcha`` draws each character into its
own small image (font, rotation, warp), sometimes after a blank "word space", pastes them left to right
with random overlaps, and squeezes the row to the image width when it is too wide. The layout pass
replays the same random draws through a subclass that records each character image's size and ink, and
pastes, instead of the character, one marker pixel whose colour is the character's index at the
image's left edge; the markers' columns on a canvas wide enough never to be squeezed are the paste
offsets. The package's own layout code runs unchanged, so the centres follow it in any version this
project accepts (``captcha>=0.5,<0.8``; tested with 0.7.1).
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from ddpmlab.data.base import DataError

__all__ = [
    "RENDER_WIDTH",
    "RENDER_HEIGHT",
    "RENDER_FONT_SIZES",
    "layout_canvas",
    "SeededEntropy",
    "captcha_module",
    "seeded_captcha",
    "image_captcha",
    "render_captcha",
    "character_centres",
]

RENDER_WIDTH, RENDER_HEIGHT = 160, 60  # ImageCaptcha's own size, which its font sizes suit
RENDER_FONT_SIZES = (42, 50, 56)
_INK_SHARE = 0.5  # a character's ink: where its paste mask reaches this share of the mask's peak
_MASK_LEVELS = [min(255, int(i * 1.97)) for i in range(256)]  # ImageCaptcha's grey -> paste mask table


class SeededEntropy(random.Random):
    """A seeded ``random.Random`` that also answers the calls ImageCaptcha makes to ``secrets``
    (``randbelow``, ``randbits``, ``choice``; older versions call ``random``'s functions instead)."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


_RENDER_LOCK = threading.Lock()


def captcha_module() -> Any:
    """``captcha.image``, or a DataError saying how to install it."""
    try:
        return importlib.import_module("captcha.image")
    except ImportError:
        raise DataError("the captcha dataset needs the captcha package: pip install captcha") from None


@contextmanager
def seeded_captcha(rng: random.Random) -> Iterator[Any]:
    """``captcha.image`` with its sources of randomness (the module globals ``secrets`` and ``random``)
    replaced by ``rng`` for the duration; a lock keeps threads of one process from interleaving."""
    module = captcha_module()
    names = [name for name in ("secrets", "random") if name in vars(module)]
    if not names:
        raise DataError("this version of the captcha package cannot be seeded; pip install 'captcha>=0.5'")
    with _RENDER_LOCK:
        saved = {name: getattr(module, name) for name in names}
        try:
            for name in names:
                setattr(module, name, rng)
            yield module
        finally:
            for name, value in saved.items():
                setattr(module, name, value)


def _render_scale(height: int) -> float:
    """Render larger than ImageCaptcha's 160x60 only when the output is taller than 60 pixels."""
    return max(1.0, height / RENDER_HEIGHT)


def image_captcha(module: Any, height: int, canvas: int = 1) -> Any:
    """An ``ImageCaptcha`` for outputs ``height`` pixels tall (``canvas`` > 1: the layout pass's,
    ``canvas`` times wider)."""
    scale = _render_scale(height)
    sizes = tuple(round(size * scale) for size in RENDER_FONT_SIZES)
    width = round(RENDER_WIDTH * scale)
    if canvas == 1:
        return module.ImageCaptcha(width, round(RENDER_HEIGHT * scale), font_sizes=sizes)
    generator = _layout_class(module)(width * canvas, round(RENDER_HEIGHT * scale), font_sizes=sizes)
    generator.render_width = width
    return generator


def layout_canvas(length: int) -> int:
    """How many image widths the layout pass's canvas spans for strings of ``length`` characters: room
    for every character after a word space at the largest font size, so that the row is never squeezed
    on it (:func:`character_centres` raises DataError if it ever were)."""
    return 2 + length // 2


def render_captcha(
    text: str,
    rng: random.Random,
    height: int = 32,
    width: int = 96,
    generator: Any = None,
) -> Image.Image:
    """An RGB captcha of ``text`` drawn with ``rng`` (a ``random.Random``), resized to width x height.

    ``generator`` is an ``ImageCaptcha`` to reuse (it caches its fonts); by default a new one.
    """
    if generator is None:
        generator = image_captcha(captcha_module(), height)
    image, entropy = _generate(text, rng, generator)
    rng.setstate(entropy.getstate())  # the caller's generator moves on as if it had drawn directly
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BICUBIC)
    return image


def character_centres(text: str, rng: random.Random, height: int = 32, generator: Any = None) -> list[float]:
    """The horizontal centre of each character of the captcha :func:`render_captcha` draws from ``rng``
    in the same state, as fractions of the image width (in [0, 1], left to right); ``rng`` is left as
    it was. ``generator``: a layout generator to reuse (``image_captcha(module, height, canvas)`` with
    ``canvas`` at least :func:`layout_canvas` of the string's length).

    Raises DataError when the package draws differently from what the layout pass expects (a marker
    missing).
    """
    if generator is None:
        generator = image_captcha(captcha_module(), height, canvas=layout_canvas(len(text)))
    _generate(text, rng, generator)
    return generator.centres


def _generate(text: str, rng: random.Random, generator: Any) -> tuple[Image.Image, SeededEntropy]:
    """``generator.generate_image(text)`` (an ``ImageCaptcha``) with every random draw taken from a copy of
    ``rng``'s state; the image and the copy, moved on past the draws (``rng`` itself is untouched)."""
    entropy = SeededEntropy()
    entropy.setstate(rng.getstate())
    with seeded_captcha(entropy):
        image = generator.generate_image(text)
    return image, entropy


def _layout_class(module: Any) -> type:
    """The layout pass's subclass of ``module.ImageCaptcha`` (see the module docstring)."""

    class LayoutCaptcha(module.ImageCaptcha):
        pieces: list[tuple[str, int, tuple[int, int] | None]]
        centres: list[float]

        def _draw_character(self, c: str, draw: Any, color: Any) -> Image.Image:
            character = super()._draw_character(c, draw, color)  # every random draw as in a real render
            ink = None
            if not c.isspace():
                ink = _ink_columns(character.convert("L").point(getattr(self, "lookup_table", _MASK_LEVELS)))
            self.pieces.append((c, character.size[0], ink))
            marker = Image.new("RGBA", character.size, (0, 0, 0, 0))
            if ink is not None:
                index = sum(1 for piece in self.pieces if piece[2] is not None)
                marker.putpixel((0, character.size[1] // 2), (255, 255, index, 255))
            return marker

        def create_captcha_image(self, chars: str, color: Any, background: Any) -> Image.Image:
            self.pieces = []
            image = super().create_captcha_image(chars, color, (0, 0, 0))
            self.centres = _decode_centres(image, self.pieces, self.render_width)
            return Image.new("RGB", (1, 1))  # what follows (noise, smoothing) is never looked at

        @staticmethod
        def create_noise_dots(image: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
            return image

        @staticmethod
        def create_noise_curve(image: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
            return image

    return LayoutCaptcha


def _ink_columns(mask: Image.Image) -> tuple[int, int]:
    """(first, last + 1) column of a character's ink in its paste mask: where the mask reaches half its
    own peak, so that a faint character (its colour is random) is measured like a dark one; the whole
    image for a character without ink."""
    peak = mask.getextrema()[1]
    box = mask.point(lambda v: 255 if v >= _INK_SHARE * peak else 0).getbbox() if peak else None
    return (box[0], box[2]) if box else (0, mask.size[0])


def _decode_centres(
    image: Image.Image, pieces: list[tuple[str, int, tuple[int, int] | None]], render_width: int
) -> list[float]:
    """Centres (fractions of the final width) from the markers on the layout canvas and the recorded
    pieces (character, image width, ink columns or None for a word space)."""
    text_width = sum(width for _, width, _ in pieces)
    if text_width > image.size[0]:
        raise DataError(f"a row of {text_width} pixels does not fit the layout canvas ({image.size[0]})")
    pixels = np.asarray(image.convert("RGB"))
    found = np.argwhere((pixels[..., 0] == 255) & (pixels[..., 1] == 255))
    offsets = {int(pixels[y, x, 2]): int(x) for y, x in found}
    characters = [piece for piece in pieces if piece[2] is not None]
    if sorted(offsets) != list(range(1, len(characters) + 1)):
        raise DataError("the captcha package drew differently from what the layout pass expects")
    squeeze = render_width / max(text_width, render_width)  # ImageCaptcha squeezes a row that is too wide
    return [
        (offsets[index] + (left + right) / 2) * squeeze / render_width
        for index, (_, _, (left, right)) in enumerate(characters, start=1)
    ]
