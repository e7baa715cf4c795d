"""Writing generated images: grids, folders of files, zip archives for course submissions, npz arrays.

All functions take uint8 images [N, H, W, C] (see :func:`ddpmlab.data.images.to_uint8`).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["save_grid", "save_images", "save_zip", "save_npz", "grid_image", "IMAGE_FORMATS"]

IMAGE_FORMATS = ("png", "jpg")


def _pil(image: np.ndarray) -> Image.Image:
    """uint8 [H, W, C] with C = 1 or 3 -> a PIL image."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image, mode="RGB")


def grid_image(images: np.ndarray | torch.Tensor, rows: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one uint8 image, ``rows`` rows (default: about square).

    Images fill the grid row by row, so with ``rows`` = number of classes and images ordered
    class by class, each row shows one class.
    """
    images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {list(images.shape)}")
    n, h, w, c = images.shape
    rows = rows or max(1, int(np.floor(np.sqrt(n))))
    columns = -(-n // rows)
    canvas = torch.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, dtype=torch.uint8
    )
    for index in range(n):
        r, col = divmod(index, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[top : top + h, left : left + w] = images[index]
    return canvas.numpy()


def save_grid(
    images: np.ndarray | torch.Tensor, path: str | Path, rows: int | None = None, scale: int = 1
) -> Path:
    """Write a grid of uint8 images [N, H, W, C] as one PNG/JPG (``scale`` enlarges small images)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _grid_picture(images, rows, scale).save(path)
    return path


def _grid_picture(images: np.ndarray | torch.Tensor, rows: int | None, scale: int) -> Image.Image:
    """:func:`grid_image` as a PIL image, enlarged ``scale`` times (nearest neighbour) when scale > 1."""
    picture = _pil(grid_image(images, rows))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def animation_frame(
    x_t: np.ndarray | torch.Tensor,
    x0: np.ndarray | torch.Tensor,
    caption: str,
    rows: int | None = None,
    scale: int = 1,
) -> Image.Image:
    """One frame of a denoising animation: the grid of x_t (left) beside the grid of the predicted x0
    (right), uint8 images [N, H, W, C] each, under a one-line caption (e.g. the step and t)."""
    from PIL import ImageDraw

    left, right = _grid_picture(x_t, rows, scale), _grid_picture(x0, rows, scale)
    gap, header = 8, 30  # two lines of text: the caption, then each grid's title
    frame = Image.new(left.mode, (2 * left.width + gap, left.height + header), 255)
    frame.paste(left, (0, header))
    frame.paste(right, (left.width + gap, header))
    draw = ImageDraw.Draw(frame)
    ink = 0 if frame.mode == "L" else (0, 0, 0)
    draw.text((2, 2), caption, fill=ink)
    draw.text((2, 16), "x_t", fill=ink)
    draw.text((left.width + gap + 2, 16), "predicted x0", fill=ink)
    return frame


def save_animation(
    frames: Sequence[Image.Image], path: str | Path, fps: int = 10, hold_last_s: float = 2.0
) -> Path:
    """Write ``frames`` as an animated GIF that loops, the last frame held ``hold_last_s`` seconds.

    Identical consecutive frames are merged by the GIF writer into one (their durations add up)."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [round(1000 / fps)] * (len(frames) - 1) + [round(1000 * max(hold_last_s, 1 / fps))]
    first, *rest = frames
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0)
    return path


def _file_names(n: int, image_format: str, labels: Sequence | None) -> list[str]:
    width = max(3, len(str(n - 1)))
    names = []
    for index in range(n):
        suffix = "" if labels is None else f"_{_label_text(labels[index])}"
        names.append(f"{index:0{width}d}{suffix}.{image_format}")
    return names


def _label_text(label) -> str:
    text = str(label.item() if torch.is_tensor(label) else label)
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def _encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    picture = _pil(image)
    if image_format == "jpg":
        picture.save(buffer, format="JPEG", quality=95)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_format(image_format: str) -> str:
    image_format = image_format.lower().lstrip(".")
    image_format = "jpg" if image_format == "jpeg" else image_format
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; choose one of {', '.join(IMAGE_FORMATS)}")
    return image_format


def save_images(
    images: np.ndarray, folder: str | Path, image_format: str = "png", labels: Sequence | None = None
) -> list[Path]:
    """Write each image [H, W, C] of ``images`` as its own file (000.png, ... with _label when given)."""
    image_format = _check_format(image_format)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in zip(_file_names(len(images), image_format, labels), np.asarray(images)):
        path = folder / name
        path.write_bytes(_encode(image, image_format))
        paths.append(path)
    return paths


def save_zip(
    images: np.ndarray, path: str | Path, image_format: str = "png", labels: Sequence | None = None
) -> Path:
    """Write every image as a separate file inside one zip archive named ``path``.

    The archive is written to a temporary name first and renamed, so an existing zip is replaced only
    by a complete one.
    """
    image_format = _check_format(image_format)
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ValueError(f"the archive name must end in .zip, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, image in zip(_file_names(len(images), image_format, labels), np.asarray(images)):
            archive.writestr(name, _encode(image, image_format))
    temporary.replace(path)
    return path


def save_npz(path: str | Path, **arrays) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key: np.asarray(value) for key, value in arrays.items() if value is not None})
    return path
