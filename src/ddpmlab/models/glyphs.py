"""Glyph images of strings: a plain rendering of the conditioning text, as extra input channels.

TextDiffuser (Chen et al. 2023) and GlyphControl (Yang et al. 2023) condition text-to-image models on an
image of the text drawn in a plain font, so that the denoiser restyles visible glyphs instead of learning
each character's shape from an embedding. :class:`GlyphBank` does this for the short fixed-length strings
of :class:`~ddpmlab.models.embeddings.TextEmbedding` (``UNet(text_glyph=True)``):

- each character of the charset is drawn once, when the model is built, with Pillow's default font
  (``ImageFont.load_default(size=...)``, a scalable font since Pillow 10.1; the small bitmap font before),
  into a tile of ``height`` x ``width // length`` pixels: dark ink (-1) on white paper (+1), the range and
  the polarity of the captcha data. All characters share one scale and one baseline (a tall "b" stays
  taller than a "c"); each is centred horizontally in its tile.
- the tiles are a buffer (``glyph_bank.tiles``, [len(charset) + 1, height, tile width]), saved in the
  model's state dict: a checkpoint carries its own glyphs, so sampling does not depend on the installed
  Pillow or font.
- the glyph image of a batch of strings is their tiles side by side, found by indexing the bank with the
  token ids (no loop over samples; any device). Token 0, the padding of short strings and the whole of the
  null condition "", is a blank tile: the unconditional branch of classifier-free guidance sees no glyphs.
  When ``width`` is not a multiple of ``length`` the row of tiles is centred, padded with paper.

Characters the font draws no ink for (outside its coverage) get blank tiles too; the text embedding still
tells them apart.

Where the characters go (the layout). By default tile k sits in the k-th slot of a row of equal slots. A
condition may instead be a :class:`PlacedText`: a string that also carries each character's horizontal
centre (a fraction of the image width); its tiles are then drawn centred there, overlapping tiles
combined by taking the darker pixel. Data whose renderer knows where it drew each character (the
``captcha`` source with ``data.layout``) trains with the true centres and samples with centres drawn by
the same renderer: the denoiser restyles glyphs that already stand where the characters belong, as in
TextDiffuser's layout-then-render design, instead of choosing the layout itself. Plain strings keep the
equal slots, so a model trained either way takes both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

__all__ = ["GlyphBank", "PlacedText", "glyph_centres", "render_glyph_tiles", "GLYPH_INK", "GLYPH_PAPER"]

GLYPH_INK, GLYPH_PAPER = -1.0, 1.0
GLYPH_FILL = 0.8  # the tallest character spans this fraction of the tile height (less if widths bind)
_RENDER_SIZE = 64  # font size the characters are drawn at before being scaled to their tiles


class PlacedText(str):
    """A string that also says where its characters stand: ``centres[k]`` is the horizontal centre of
    character k as a fraction of the image width (0: the left edge, 1: the right edge).

    It is a ``str`` everywhere else (equal to, and hashed as, the plain string; JSON writes the string),
    so readers, grids and reports take it unchanged. Raises ValueError unless there is one finite centre
    per character.
    """

    centres: tuple[float, ...]

    def __new__(cls, text: str, centres: Sequence[float]) -> PlacedText:
        placed = super().__new__(cls, text)
        values = tuple(float(value) for value in centres)
        if len(values) != len(text) or not all(math.isfinite(value) for value in values):
            raise ValueError(f"{text!r} needs one finite centre per character, got {list(centres)!r}")
        placed.centres = values
        return placed

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (DataLoader workers) as text + centres
        return (PlacedText, (str(self), self.centres))

    def __repr__(self) -> str:
        return f"PlacedText({str(self)!r}, {[round(value, 3) for value in self.centres]})"


def glyph_centres(cond: Sequence[str], length: int) -> torch.Tensor | None:
    """The centres [B, length] of the :class:`PlacedText` among ``cond`` (NaN for plain strings, the
    null string and padding), or None when no condition is placed."""
    if not any(isinstance(text, PlacedText) for text in cond):
        return None
    rows = []
    for text in cond:
        values = list(text.centres)[:length] if isinstance(text, PlacedText) else []
        rows.append(values + [math.nan] * (length - len(values)))
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), length)


def _default_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` where Pillow can scale it (>= 10.1), else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _ink(character: str, font) -> Image.Image | None:
    """``character`` drawn in white on a black canvas ("L"), at a fixed origin; None if it has no ink."""
    canvas = Image.new("L", (3 * _RENDER_SIZE, 3 * _RENDER_SIZE), 0)
    try:
        ImageDraw.Draw(canvas).text((_RENDER_SIZE, _RENDER_SIZE), character, fill=255, font=font)
    except (UnicodeError, ValueError):  # the bitmap font encodes Latin-1 only
        return None
    return canvas if canvas.getbbox() is not None else None


def render_glyph_tiles(charset: str, height: int, width: int) -> torch.Tensor:
    """One tile per character of ``charset`` after a blank one: float32 [len(charset) + 1, height, width]
    in [-1, 1] (paper +1, ink -1); tile i + 1 is ``charset[i]``, tile 0 (the padding token) is blank."""
    if height < 1 or width < 1:
        raise ValueError(f"glyph tiles need a positive size, got {height}x{width}")
    font = _default_font(_RENDER_SIZE)
    inks = [_ink(character, font) for character in charset]
    boxes = [ink.getbbox() for ink in inks if ink is not None]
    tiles = torch.full((len(charset) + 1, height, width), GLYPH_PAPER, device="cpu")  # even under meta
    if not boxes:
        return tiles
    top, bottom = min(box[1] for box in boxes), max(box[3] for box in boxes)  # one shared baseline
    widest = max(box[2] - box[0] for box in boxes)
    scale = min(GLYPH_FILL * height / (bottom - top), GLYPH_FILL * width / widest)
    row_height = max(1, round((bottom - top) * scale))
    for index, ink in enumerate(inks, start=1):
        if ink is None:
            continue
        left, _, right, _ = ink.getbbox()
        glyph = ink.crop((left, top, right, bottom))
        glyph = glyph.resize((max(1, round((right - left) * scale)), row_height), Image.BILINEAR)
        tile = Image.new("L", (width, height), 0)
        tile.paste(glyph, ((width - glyph.width) // 2, (height - glyph.height) // 2))
        coverage = torch.frombuffer(bytearray(tile.tobytes()), dtype=torch.uint8).float() / 255
        tiles[index] = (GLYPH_PAPER + (GLYPH_INK - GLYPH_PAPER) * coverage).reshape(height, width)
    return tiles


class GlyphBank(nn.Module):
    """The glyph image [B, 1, height, width] of token ids [B, length] (see the module docstring).

    Args:
        charset: the characters of the text encoder, in its order (token id i + 1 is ``charset[i]``).
        length: the number of tokens per string (the text encoder's ``length``).
        height, width: the glyph image's size, that of the images the model is trained on; each character
            gets ``width // length`` columns, the remainder is paper split around the row of tiles.
    """

    def __init__(self, charset: str, length: int, height: int, width: int) -> None:
        super().__init__()
        if length < 1 or width < length:
            raise ValueError(
                f"a glyph image {width} pixels wide has no room for {length} characters (text_glyph)"
            )
        self.length, self.height, self.width = length, height, width
        self.register_buffer("tiles", render_glyph_tiles(charset, height, width // length))

    def forward(self, token_ids: torch.Tensor, centres: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids [B, length] (and optionally centres [B, length], fractions of the width; NaN: the
        character's own slot) -> the glyph image [B, 1, height, width]."""
        batch, length = token_ids.shape
        if length != self.length:
            raise ValueError(f"the glyph bank takes {self.length} tokens per string, got {length}")
        tiles = self.tiles[token_ids.to(self.tiles.device)]  # [B, L, h, w]
        _, _, height, tile_width = tiles.shape
        if centres is None:
            image = tiles.permute(0, 2, 1, 3).reshape(batch, 1, height, length * tile_width)
            spare = self.width - length * tile_width
            if spare:
                image = F.pad(image, (spare // 2, spare - spare // 2), value=GLYPH_PAPER)
            return image
        return self._placed(tiles, centres.to(self.tiles.device)).unsqueeze(1)

    def _placed(self, tiles: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Tiles [B, L, h, w] drawn centred at ``centres`` [B, L] (NaN: the slot's own place), the
        darker pixel where tiles overlap -> [B, h, width]."""
        batch, length, height, tile_width = tiles.shape
        first = (self.width - length * tile_width) // 2
        slots = first + tile_width * torch.arange(length, device=tiles.device)
        wanted = torch.round(centres * self.width - tile_width / 2).nan_to_num(0).long()
        lefts = torch.where(torch.isnan(centres), slots.expand(batch, -1), wanted)  # [B, L] first columns
        columns = torch.arange(self.width, device=tiles.device)
        image = torch.full((batch, height, self.width), GLYPH_PAPER, dtype=tiles.dtype, device=tiles.device)
        for k in range(length):
            offset = columns - lefts[:, k : k + 1]  # [B, width]: the tile's column under each image column
            inside = (offset >= 0) & (offset < tile_width)
            index = offset.clamp(0, tile_width - 1).unsqueeze(1).expand(batch, height, self.width)
            drawn = tiles[:, k].gather(2, index)
            image = torch.minimum(image, torch.where(inside.unsqueeze(1), drawn, GLYPH_PAPER))
        return image
