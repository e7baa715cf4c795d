"""Stanford Cars (Krause et al. 2013) in torchvision's layout, read without torchvision's download code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ddpmlab.config import ConfigError
from ddpmlab.data.base import DataError, describe_error
from ddpmlab.data.images import ImageFolderDataset

__all__ = ["StanfordCarsDataset", "STANFORD_CARS_CLASSES"]

STANFORD_CARS_CLASSES = 196

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
                raise DataError(f"unreadable annotation in {annotations} ({describe_error(error)})") from None
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
        self._set_files("stanford_cars", base, files, label_list, class_names, image_size, hflip, channels)
        self.shape = (channels, image_size, image_size)


def _mat_array(path: Path, key: str) -> np.ndarray:
    """The variable ``key`` of a MATLAB file as a 1-D array (scipy's ``squeeze_me`` reading)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path), squeeze_me=True)
    except Exception as error:
        raise DataError(f"unreadable file: {path} ({describe_error(error)})") from None
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



