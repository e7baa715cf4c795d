"""Writing generated images: grids, folders of files, zip archives for course submissions, npz arrays.

Functions take uint8 images [N, H, W, C] (see :func:`ddpmlab.data.base.to_uint8`) unless they say otherwise.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGE_FORMATS",
    "SAMPLE_SUFFIXES",
    "grid_image",
    "grid_tensor",
    "grid_scale",
    "save_grid",
    "save_images",
    "save_zip",
    "save_npz",
    "save_samples",
    "check_destination",
    "check_sample_output",
    "animation_frame",
    "save_animation",
    "save_denoising_gif",
]

IMAGE_FORMATS = ("png", "jpg")


def _pil(image: np.ndarray) -> Image.Image:
    """uint8 [H, W, C] with C = 1 or 3 -> a PIL image."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image, mode="RGB")


def grid_image(images: np.ndarray | torch.Tensor, rows: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one uint8 image [H', W', C], ``rows`` rows (default: about
    square), white gaps of ``padding`` pixels between and around them (``torchvision.utils.make_grid``).

    Images fill the grid row by row, so with ``rows`` = number of classes and images ordered
    class by class, each row shows one class. Every grid of ddpmlab is made here.
    """
    from torchvision.utils import make_grid

    images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {list(images.shape)}")
    n, channels = images.shape[0], images.shape[-1]
    rows = rows or max(1, int(np.floor(np.sqrt(n))))
    grid = make_grid(images.permute(0, 3, 1, 2), nrow=-(-n // rows), padding=padding, pad_value=255)
    return grid[:channels].permute(1, 2, 0).contiguous().numpy()  # make_grid repeats grey to 3 channels


def grid_tensor(images: np.ndarray | torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """:func:`grid_image` as float [C, H', W'] in [0, 1] (what TensorBoard's ``add_image`` takes)."""
    return torch.from_numpy(grid_image(images, rows)).permute(2, 0, 1).float() / 255.0


def grid_scale(images: np.ndarray | torch.Tensor) -> int:
    """How many times to enlarge images in pictures: twice for small ones (MNIST, CIFAR: <= 32 pixels
    high, images [..., H, W, C]), so that they can be seen; else once."""
    return 2 if images.shape[-3] <= 32 else 1


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
    """Write arrays (tensors or numpy; None values are left out) to an ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key: np.asarray(value) for key, value in arrays.items() if value is not None})
    return path


SAMPLE_SUFFIXES = ("", ".npz", ".png", ".jpg", ".jpeg", ".gif")  # "": a folder of PNG files


def check_destination(path: str | Path, option: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work is done, a destination that cannot be written: its folder missing, a
    file where a folder is expected (or a folder where a file is), or a read-only folder or file.
    ``folder``: ``path`` is a folder of outputs (created if missing; its parent must exist).

    Raises:
        ValueError: one line naming the option and the path.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir() and not folder:
        raise ValueError(f"{option} {path} is a folder; name a file")
    if path.exists() and not path.is_dir() and folder:
        raise ValueError(f"{option} {path} is a file, not a folder")
    if not parent.exists():
        raise ValueError(f"{option} {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise ValueError(f"{option} {path}: {target} is read-only")
    return path


def check_sample_output(path: str | Path, images: bool) -> str:
    """The kind of output ``path`` names for samples (``npz``, ``grid``, ``gif`` or ``folder``).

    Raises:
        ValueError: an extension that is not one of :data:`SAMPLE_SUFFIXES` (toy samples: only .npz).
    """
    suffix = Path(path).suffix.lower()
    if not images:
        if suffix != ".npz":
            raise ValueError(f"--out for a toy run must be a .npz file, got {path}")
        return "npz"
    if suffix not in SAMPLE_SUFFIXES:
        raise ValueError(
            f"--out must be a .npz file, a .png/.jpg grid, a .gif animation or a folder, got {path}"
        )
    return {"": "folder", ".npz": "npz", ".gif": "gif"}.get(suffix, "grid")


def save_samples(
    path: str | Path, samples: torch.Tensor, labels=None, images: bool = True, rows: int | None = None
) -> Path:
    """Write samples where ``path`` says (:func:`check_sample_output`): ``x.npz`` (``images`` uint8
    [N, H, W, C] or, for toy data, ``samples`` float [N, D], and ``labels``), a grid picture
    (``rows`` rows, small images enlarged) or a folder of PNG files.

    Args:
        samples: images float [N, C, H, W] in [-1, 1] (``images``) or points [N, D].
    """
    kind = check_sample_output(path, images)
    if not images:
        return save_npz(path, samples=samples.numpy(), labels=labels)
    from ddpmlab.data.base import to_uint8

    pixels = to_uint8(samples)
    if kind == "npz":
        return save_npz(path, images=pixels, labels=labels)
    if kind == "grid":
        return save_grid(pixels, path, rows=rows, scale=grid_scale(pixels))
    save_images(pixels, path, "png", labels)
    return Path(path)


def save_denoising_gif(trajectory, path: str | Path, rows: int | None = None, fps: int = 10) -> Path:
    """A looping GIF of a :class:`ddpmlab.runs.Trajectory` (anything with its ``x_t``, ``x0``,
    ``timesteps``, ``steps`` and ``num_steps``): per snapshot, x_t beside the predicted x0 under the
    step number and t; the last frame (the samples) held."""
    scale = grid_scale(trajectory.x_t)
    frames = []
    for index, (t, taken) in enumerate(zip(trajectory.timesteps, trajectory.steps)):
        progress = f"step {taken}/{trajectory.num_steps}"
        caption = f"{progress}: the sample" if t < 0 else f"{progress}, t = {t}"
        frames.append(animation_frame(trajectory.x_t[index], trajectory.x0[index], caption, rows, scale))
    return save_animation(frames, path, fps=fps)
