"""Image files of every kind: each mode read at its true levels (16-bit grey, palette, alpha, CMYK,
1-bit) or refused in one line naming the file; decompression bombs, truncated files and tiny images
named when the dataset is built, never mid-epoch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import png_bytes
from ddpmlab.data.base import DataError, plain_image
from ddpmlab.data.captcha import CaptchaFolderDataset
from ddpmlab.data.sources import build_image_dataset


def _levels(item: torch.Tensor) -> np.ndarray:
    """An item in [-1, 1] back to 0..255 (exact for 8-bit levels)."""
    return np.rint((item.numpy() + 1.0) * 127.5).astype(int)


def _folder(tmp_path: Path, **images: Image.Image) -> Path:
    root = tmp_path / "pics"
    root.mkdir(exist_ok=True)
    for name, image in images.items():
        image.save(root / name)
    return root


def test_16_bit_grey_pngs_are_read_at_their_levels_not_as_white(tmp_path):
    """The bug: PIL's convert("L") clips 16-bit values to 255, so every such image was pure white."""
    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(_folder(tmp_path) / "deep.png")  # mode I;16
    raw = png_bytes(8, 8, b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values), bit_depth=16)
    (tmp_path / "pics" / "handmade.png").write_bytes(raw)
    expected = (values.astype(np.int64) * 255 + 32767) // 65535  # round(v / 257)
    for channels in (1, 3):
        data = build_image_dataset("folder", root=tmp_path / "pics", channels=channels)
        for index in range(len(data)):
            levels = _levels(data[index][0])
            assert levels.shape == (channels, 8, 8)
            assert (levels == expected).all()  # every channel, no clipping
    assert _levels(data[0][0]).min() == 0 and _levels(data[0][0]).max() == 255


def test_palette_alpha_one_bit_and_cmyk_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    rgba = np.dstack([rgb, np.full((8, 8), 255, np.uint8)])
    rgba[:4, :, 3] = 0  # the top half fully transparent
    cmyk = Image.fromarray(rgb).convert("CMYK")
    alpha = Image.fromarray(rgba, "RGBA")
    bits = Image.fromarray(rgb[..., 0] > 127).convert("1")
    files = {"palette.png": palette, "alpha.png": alpha, "grey_alpha.png": alpha.convert("LA"),
             "bits.png": bits, "cmyk.jpg": cmyk}
    root = _folder(tmp_path, **files)
    data = build_image_dataset("folder", root=root)
    items = {Path(path).name: _levels(data[index][0]) for index, path in enumerate(data.files)}
    assert (items["palette.png"] == np.asarray(palette.convert("RGB")).transpose(2, 0, 1)).all()
    assert (items["alpha.png"][:, :4] == 255).all()  # transparent -> white, not black
    assert (items["alpha.png"][:, 4:] == rgb[4:].transpose(2, 0, 1)).all()
    assert (items["grey_alpha.png"][:, :4] == 255).all()
    assert set(np.unique(items["bits.png"])) == {0, 255}
    with Image.open(root / "cmyk.jpg") as decoded:
        assert (items["cmyk.jpg"] == np.asarray(decoded.convert("RGB")).transpose(2, 0, 1)).all()


def test_mixed_modes_in_one_folder_load_together(tmp_path):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    grey = Image.fromarray(pixels)
    deep = Image.fromarray(pixels.astype(np.uint16) * 257)
    files = {"l.png": grey, "rgb.png": grey.convert("RGB"), "rgba.png": grey.convert("RGBA"),
             "p.gif": grey.convert("P"), "i16.png": deep}
    root = _folder(tmp_path, **files)
    data = build_image_dataset("folder", root=root, channels=1)
    for index in range(len(data)):
        assert (_levels(data[index][0])[0] == pixels).all(), data.files[index]


def test_modes_that_cannot_be_read_are_refused_naming_the_file():
    image = Image.new("F", (4, 4))
    with pytest.raises(DataError, match=re.escape("unreadable image: x.tif (its mode F cannot be read")):
        plain_image(image, "RGB", "x.tif")
    wide = Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), "I")
    with pytest.raises(DataError, match="values outside 0..65535"):
        plain_image(wide, "L", "x.png")


def test_a_decompression_bomb_is_named_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    root.mkdir()
    (root / "bomb.png").write_bytes(png_bytes(100_000, 100_000, b"\x00" * 100_001))
    with pytest.raises(DataError, match=re.escape(f"image too large: {root / 'bomb.png'}")):
        build_image_dataset("folder", root=root)
    # between Pillow's limit and twice it, Pillow only warns: here that is an error too
    (root / "bomb.png").unlink()
    Image.new("RGB", (12, 12)).save(root / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="image too large: .*big.png .*DecompressionBombWarning"):
        build_image_dataset("folder", root=root)


def test_truncated_jpegs_and_tiny_images_are_named_at_construction(tmp_path):
    rng = np.random.default_rng(0)
    root = _folder(tmp_path, **{"a.jpg": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))})
    whole = (root / "a.jpg").read_bytes()
    (root / "a.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(DataError, match=re.escape(f"unreadable image: {root / 'a.jpg'}")):
        build_image_dataset("folder", root=root, image_size=16)
    (root / "a.jpg").write_bytes(whole)
    Image.new("RGB", (1, 1)).save(root / "dot.png")
    with pytest.raises(DataError, match=re.escape(f"image too small: {root / 'dot.png'} is 1x1; images")):
        build_image_dataset("folder", root=root, image_size=16)
    (root / "dot.png").unlink()
    Image.new("RGB", (8, 8)).save(root / "small.png")  # the smallest accepted
    assert len(build_image_dataset("folder", root=root, image_size=16)) == 2


def test_captcha_folders_read_16_bit_images_at_their_levels(tmp_path):
    values = np.full((32, 96), 32896, dtype=np.uint16)  # 32896 / 257 = 128
    root = _folder(tmp_path, **{"ab.png": Image.fromarray(values)})
    data = CaptchaFolderDataset(root)
    assert (_levels(data[0][0]) == 128).all()
    Image.new("L", (1, 1)).save(root / "cd.png")
    with pytest.raises(DataError, match="image too small: .*cd.png is 1x1"):
        CaptchaFolderDataset(root)


def test_a_file_that_breaks_after_the_checks_is_named_on_one_line_even_from_a_worker(tmp_path):
    from ddpmlab.data.batches import LoaderBatches

    rng = np.random.default_rng(0)
    files = {f"{i}.png": Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for i in range(4)}
    root = _folder(tmp_path, **files)
    data = build_image_dataset("folder", root=root)
    (root / "2.png").write_bytes(b"changed after the dataset was built")
    for workers in (0, 1):
        with pytest.raises(DataError) as error:
            next(iter(LoaderBatches(data, 4, seed=0, num_workers=workers)))
        assert str(error.value).startswith(f"unreadable image: {root / '2.png'}"), str(error.value)
        assert "\n" not in str(error.value)
