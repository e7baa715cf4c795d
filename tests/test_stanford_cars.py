"""The stanford_cars source: torchvision's StanfordCars layout (MATLAB annotation files listing JPEGs),
read from a small fixture written in that layout; what a missing dataset's error says."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.config import ConfigError
from ddpmlab.data.base import DataError
from ddpmlab.data.cars import StanfordCarsDataset
from ddpmlab.data.sources import build_image_dataset

ANNOTATION_FIELDS = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
                     ("class", "O"), ("fname", "O")]


def write_stanford_cars(
    root: Path, rng: np.random.Generator, n_train: int = 6, n_test: int = 4, num_classes: int = 3
) -> dict[str, list[tuple[str, int, tuple[int, int, int]]]]:
    """Stanford Cars as torchvision reads it, under ``root/stanford_cars``: devkit/cars_meta.mat
    (class_names), devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (struct arrays with
    fname, 1-based class and bounding boxes), cars_train/ and cars_test/ with JPEGs of different sizes,
    each one flat colour. Returns, per split, (file name, 0-based label, colour) of every image."""
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array([f"Fixture Car {i} 20{10 + i}" for i in range(num_classes)], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    written = {}
    splits = [("train", n_train, base / "devkit" / "cars_train_annos.mat", base / "cars_train"),
              ("test", n_test, base / "cars_test_annos_withlabels.mat", base / "cars_test")]
    for split, n, annotations_file, folder in splits:
        folder.mkdir()
        records = np.zeros((1, n), dtype=ANNOTATION_FIELDS)
        items = []
        for i in range(n):
            name, label = f"{i + 1:05d}.jpg", int(rng.integers(0, num_classes))
            colour = tuple(int(c) for c in rng.integers(20, 236, size=3))
            width, height = 24 + 3 * i, 18 + i
            Image.new("RGB", (width, height), colour).save(folder / name, quality=95)
            records[0, i] = (1, 1, width, height, label + 1, name)
            items.append((name, label, colour))
        savemat(annotations_file, {"annotations": records})
        written[split] = items
    return written


@pytest.fixture
def cars_root(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_stanford_cars(tmp_path, np.random.default_rng(0))


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_torchvisions_layout(cars_root, split: str):
    root, written = cars_root
    dataset = build_image_dataset("stanford_cars", image_size=16, root=root, split=split)
    items = written[split]
    assert isinstance(dataset, StanfordCarsDataset) and len(dataset) == len(items)
    assert dataset.num_classes == 3 and dataset.class_names[2] == "Fixture Car 2 2012"
    assert dataset.shape == (3, 16, 16) and dataset.name == "stanford_cars"
    assert dataset.labels.tolist() == [label for _, label, _ in items]  # class - 1
    for i, (name, label, colour) in enumerate(items):
        x, y = dataset[i]
        assert y == label and x.shape == (3, 16, 16)
        expected = torch.tensor(colour, dtype=torch.float32) / 127.5 - 1
        torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=0.04, rtol=0)  # file i is item i
    gray = build_image_dataset("stanford_cars", image_size=8, root=root, channels=1, hflip=True)
    assert gray[0][0].shape == (1, 8, 8)
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[1][0], dataset[1][0])


def test_missing_dataset_says_what_to_fetch_and_where(tmp_path: Path):
    for download in (False, True):
        with pytest.raises(DataError) as error:
            build_image_dataset("stanford_cars", image_size=64, root=tmp_path, download=download)
        message = str(error.value)
        assert "\n" not in message
        for part in ("Stanford Cars not found", str(tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat"),
                     "kaggle.com", "car_devkit.tgz", "cars_train_annos.mat", "cars_test_annos_withlabels.mat",
                     f"{tmp_path / 'stanford_cars'}/cars_train/", "data.name=folder"):
            assert part in message, message
        assert ("cannot be downloaded" in message) == download


def test_broken_layouts_are_named(cars_root):
    root, _ = cars_root
    with pytest.raises(ConfigError, match="set data.image_size"):
        build_image_dataset("stanford_cars", root=root)
    (root / "stanford_cars" / "cars_train" / "00003.jpg").unlink()
    missing = r"1 of the 6 images listed in cars_train_annos.mat are missing .*00003"
    with pytest.raises(DataError, match=missing):
        build_image_dataset("stanford_cars", image_size=16, root=root)
    (root / "stanford_cars" / "cars_test" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"unreadable image: .*00002.jpg"):
        build_image_dataset("stanford_cars", image_size=16, root=root, split="test")
    (root / "stanford_cars" / "devkit" / "cars_meta.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"unreadable file: .*cars_meta.mat"):
        build_image_dataset("stanford_cars", image_size=16, root=root, split="test")
