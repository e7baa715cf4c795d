"""Image datasets (ddpmlab.data.images): real bundled data, image folders, torchvision formats from
fixture files written in their real on-disk formats, error messages, uint8 conversion."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.config import Config, ConfigError
from ddpmlab.data import DataInfo
from ddpmlab.data import build_data as build_data_section
from ddpmlab.data.images import DataError, ImageFolderDataset, from_uint8, to_uint8
from ddpmlab.data.sources import build_image_dataset, image_dataset_names


def build_data(config, rank=0, world_size=1):
    """The data of a whole config, as training builds it."""
    return build_data_section(config.data, config.train.batch_size, config.train.seed, rank, world_size)


build_image_data = build_data

# --------------------------------------------------------------------------------------------------
# Fixture writers.
# --------------------------------------------------------------------------------------------------


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def _random_pixels(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels == 3 else (height, width)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    """The IDX format of MNIST: magic 0x00000803 (unsigned bytes, 3 dims), big-endian sizes, pixels."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", n, h, w) + images.tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", len(labels)) + labels.tobytes())


def _write_mnist(root: Path, folder: str, rng: np.random.Generator, n_train: int = 6, n_test: int = 4):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar10(root: Path, rng: np.random.Generator, per_batch: int = 2, n_test: int = 3):
    """CIFAR-10's python format: pickled dicts, data uint8 [N, 3072] (1024 R, 1024 G, 1024 B, row-major)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {
            "batch_label": f"fixture {name}",
            "labels": [int(v) for v in rng.integers(0, 10, size=n)],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"image_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR_NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def class_folder(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Three classes (unsorted creation order), PNG and JPG, RGB and grayscale, nested, odd cases."""
    root = tmp_path / "classes"
    _save(root / "cat" / "a.png", _random_pixels(rng, 12, 12))
    _save(root / "cat" / "b.JPG", _random_pixels(rng, 12, 12))
    _save(root / "ant" / "x.png", _random_pixels(rng, 12, 12, channels=1), "L")
    _save(root / "ant" / "nested" / "deeper" / "y.jpeg", _random_pixels(rng, 12, 12))
    _save(root / "bee" / "z.bmp", _random_pixels(rng, 12, 12))
    (root / "bee" / "notes.txt").write_text("not an image")
    _save(root / "bee" / ".hidden.png", _random_pixels(rng, 12, 12))
    return root


def _one_line_hint(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


# --------------------------------------------------------------------------------------------------
# Bundled data.
# --------------------------------------------------------------------------------------------------


def test_mnist5k_is_real_mnist():
    data = build_image_dataset("mnist5k")
    assert len(data) == 5000
    assert data.shape == (1, 28, 28) and data.num_classes == 10
    assert data.class_names == [str(i) for i in range(10)]
    x, label = data[123]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert label == int(data.labels[123])
    images = torch.stack([data[i][0] for i in range(0, 5000, 50)])
    assert images.min() == -1.0 and images.max() == 1.0
    assert ((images == -1.0) | (images == 1.0)).float().mean() < 0.95  # grey levels too, not binary
    counts = torch.bincount(data.labels, minlength=10)
    assert counts.sum() == 5000 and counts.min() >= 350 and counts.max() <= 650
    # Handwritten digits: ink in the middle, a blank (-1) frame around it.
    mean = images.mean(0)[0]
    frame = torch.cat([mean[:2], mean[-2:], mean[:, :2].T, mean[:, -2:].T])
    assert frame.mean() < -0.99
    assert mean[10:18, 10:18].mean() > -0.5


def test_mnist5k_resized_to_rgb():
    data = build_image_dataset("mnist5k", image_size=32, channels=3)
    x, _ = data[0]
    assert data.shape == (3, 32, 32) and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_digits_native_and_resized():
    from sklearn.datasets import load_digits

    native = build_image_dataset("digits")
    assert len(native) == 1797 and native.shape == (1, 8, 8) and native.num_classes == 10
    x, label = native[7]
    digits = load_digits()
    expected = torch.as_tensor(digits.images[7] / 16.0 * 2 - 1, dtype=torch.float32)
    torch.testing.assert_close(x[0], expected, atol=1.01 / 255, rtol=0)  # rounded to 256 levels
    assert label == digits.target[7]
    resized = build_image_dataset("digits", image_size=16)
    y, _ = resized[7]
    assert resized.shape == (1, 16, 16) and y.shape == (1, 16, 16)
    assert y.min() >= -1.0 and y.max() <= 1.0
    # Upsampling keeps the picture: averaging 2x2 blocks gives back (about) the 8x8 image.
    pooled = torch.nn.functional.avg_pool2d(y, 2)
    assert (pooled - x).abs().mean() < 0.1


# --------------------------------------------------------------------------------------------------
# Image folders.
# --------------------------------------------------------------------------------------------------


def test_folder_with_classes(class_folder: Path):
    data = build_image_dataset("folder", root=class_folder)
    assert data.class_names == ["ant", "bee", "cat"] and data.num_classes == 3
    assert len(data) == 5  # .txt and hidden files skipped, nested and upper-case extensions found
    names = [Path(f).name for f in data.files]
    labels = dict(zip(names, data.labels.tolist()))
    assert labels == {"x.png": 0, "y.jpeg": 0, "z.bmp": 1, "a.png": 2, "b.JPG": 2}
    assert data.shape == (3, 12, 12)
    for i in range(len(data)):
        x, label = data[i]
        assert x.shape == (3, 12, 12) and x.dtype == torch.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
        assert label == labels[names[i]]
    gray = build_image_dataset("folder", root=class_folder, channels=1, image_size=8)
    assert gray.shape == (1, 8, 8) and gray[0][0].shape == (1, 8, 8)


def test_folder_pixels_are_the_files_pixels(tmp_path: Path, rng: np.random.Generator):
    rgb = _random_pixels(rng, 9, 9)
    gray = _random_pixels(rng, 9, 9, channels=1)
    _save(tmp_path / "flat" / "0.png", rgb)
    _save(tmp_path / "flat" / "1.png", gray, "L")
    data = build_image_dataset("folder", root=tmp_path / "flat")
    torch.testing.assert_close(data[0][0], from_uint8(torch.from_numpy(rgb)))
    assert torch.equal(data[1][0][0], data[1][0][2])  # grayscale file -> 3 equal channels
    torch.testing.assert_close(data[1][0][0], from_uint8(torch.from_numpy(gray)[..., None])[0])


def test_folder_without_classes(tmp_path: Path, rng: np.random.Generator):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", _random_pixels(rng, 10, 10))
    data = build_image_dataset("folder", root=tmp_path / "flat")
    assert data.num_classes == 0 and data.class_names is None
    assert [data[i][1] for i in range(3)] == [0, 0, 0]
    # labels: none takes every image under root, class folders or not.
    _save(tmp_path / "tree" / "a" / "1.png", _random_pixels(rng, 10, 10))
    _save(tmp_path / "tree" / "b" / "c" / "2.jpg", _random_pixels(rng, 10, 10))
    tree = build_image_dataset("folder", root=tmp_path / "tree", labels="none")
    assert len(tree) == 2 and tree.num_classes == 0


def test_folder_problems(tmp_path: Path, rng: np.random.Generator):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_image_dataset("folder", root=tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        build_image_dataset("folder", root=tmp_path / "missing")
    _save(tmp_path / "mixed" / "loose.png", _random_pixels(rng, 8, 8))
    _save(tmp_path / "mixed" / "cls" / "a.png", _random_pixels(rng, 8, 8))
    with pytest.raises(DataError, match="loose images"):
        build_image_dataset("folder", root=tmp_path / "mixed")
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        build_image_dataset("folder", root=tmp_path / "hollow")
    _save(tmp_path / "wide" / "a.png", _random_pixels(rng, 8, 12))
    with pytest.raises(DataError, match="non-square 12x8.*image_size"):
        build_image_dataset("folder", root=tmp_path / "wide")
    _save(tmp_path / "sizes" / "a.png", _random_pixels(rng, 8, 8))
    _save(tmp_path / "sizes" / "b.png", _random_pixels(rng, 16, 16))
    with pytest.raises(DataError, match="different sizes.*image_size"):
        build_image_dataset("folder", root=tmp_path / "sizes")
    assert build_image_dataset("folder", root=tmp_path / "sizes", image_size=8).shape == (3, 8, 8)


@pytest.mark.parametrize("wide", [True, False])
def test_resize_then_centre_crop(tmp_path: Path, wide: bool):
    """A 3:1 picture, green in its middle, red at both ends: the centre square crop is all green."""
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[:, 15:45] = (0, 255, 0)
    if not wide:
        pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2))
    _save(tmp_path / "pics" / "a.png", pixels)
    data = build_image_dataset("folder", root=tmp_path / "pics", image_size=10)
    x, _ = data[0]
    assert x.shape == (3, 10, 10)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 10, 10)
    torch.testing.assert_close(x, green, atol=4 / 255, rtol=0)


def test_hflip_only_mirrors_and_is_fixed_by_seed_epoch_index(class_folder: Path):
    plain = build_image_dataset("mnist5k")
    flipping = build_image_dataset("mnist5k", hflip=True)
    indices = range(0, 5000, 50)

    def flips(seed: int, epoch: int) -> list[bool]:
        flipping.flip_seed, flipping.flip_epoch = seed, epoch
        outcome = []
        for index in indices:
            base, x = plain[index][0], flipping[index][0]
            mirrored = torch.flip(base, dims=[-1])
            assert torch.equal(x, base) or torch.equal(x, mirrored)
            outcome.append(torch.equal(x, mirrored) and not torch.equal(base, mirrored))
        return outcome

    first = flips(0, 0)
    assert 30 <= sum(first) <= 70  # a fair coin over 100 items (symmetric digits count as unflipped)
    torch.manual_seed(123)  # the global RNG plays no part
    assert flips(0, 0) == first
    assert flips(0, 1) != first and flips(1, 0) != first
    folder = build_image_dataset("folder", root=class_folder, hflip=True)
    reference = build_image_dataset("folder", root=class_folder)[0][0]
    outcomes = set()
    for epoch in range(24):
        folder.flip_epoch = epoch
        outcomes.add(torch.equal(folder[0][0], torch.flip(reference, dims=[-1])))
    assert outcomes == {True, False}


def test_corrupt_file_is_named_at_construction(tmp_path: Path, rng: np.random.Generator):
    _save(tmp_path / "pics" / "good.png", _random_pixels(rng, 8, 8))
    bad = tmp_path / "pics" / "x.png"
    bad.write_bytes(b"this is not a png at all" * 4)
    with pytest.raises(DataError, match=re.escape(f"unreadable image: {bad}")):
        ImageFolderDataset(tmp_path / "pics")


def test_truncated_file_is_named_at_construction_not_mid_epoch(tmp_path: Path, rng: np.random.Generator):
    path = _save(tmp_path / "pics" / "cut.png", _random_pixels(rng, 64, 64))
    _save(tmp_path / "pics" / "whole.png", _random_pixels(rng, 64, 64))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # the header is intact, the pixels are not
    with pytest.raises(DataError, match=re.escape(f"unreadable image: {path}")):
        build_image_dataset("folder", root=tmp_path / "pics")


def test_datasets_pickle_and_load_in_workers(class_folder: Path):
    folder = build_image_dataset("folder", root=class_folder, image_size=8)
    copy = pickle.loads(pickle.dumps(folder))
    assert torch.equal(copy[2][0], folder[2][0]) and copy.class_names == folder.class_names
    digits = pickle.loads(pickle.dumps(build_image_dataset("digits")))
    assert len(digits) == 1797
    loader = torch.utils.data.DataLoader(folder, batch_size=5, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (5, 3, 8, 8) and labels.dtype == torch.int64


# --------------------------------------------------------------------------------------------------
# torchvision formats, from fixture files.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_from_idx_files(tmp_path: Path, rng: np.random.Generator, name: str, folder: str):
    arrays = _write_mnist(tmp_path, folder, rng)
    train = build_image_dataset(name, root=tmp_path)
    images, labels = arrays["train"]
    assert len(train) == 6 and train.shape == (1, 28, 28) and train.num_classes == 10
    for i in range(6):
        x, label = train[i]
        torch.testing.assert_close(x[0], torch.from_numpy(images[i]).float() / 127.5 - 1)
        assert label == labels[i]
    test = build_image_dataset(name, root=tmp_path, split="test", image_size=16)
    assert len(test) == 4 and test[3][0].shape == (1, 16, 16)
    if name == "fashion_mnist":
        assert train.class_names[0] == "T-shirt/top"


def test_cifar10_from_pickled_batches(tmp_path: Path, rng: np.random.Generator):
    batches = _write_cifar10(tmp_path, rng)
    train = build_image_dataset("cifar10", root=tmp_path)
    assert len(train) == 10 and train.shape == (3, 32, 32)
    assert train.class_names == CIFAR_NAMES and train.num_classes == 10
    # Item 3 is the second image of data_batch_2; rows are 1024 R, 1024 G, 1024 B values, row-major.
    row = batches["data_batch_2"]["data"][1]
    x, label = train[3]
    assert label == batches["data_batch_2"]["labels"][1]
    for c, y, xx in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert x[c, y, xx].item() == pytest.approx(row[c * 1024 + y * 32 + xx] / 127.5 - 1)
    test = build_image_dataset("cifar10", root=tmp_path, split="test", channels=1)
    assert len(test) == 3 and test.shape == (1, 32, 32) and test[0][0].shape == (1, 32, 32)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", ["MNIST not found", "MNIST/raw", "train-images-idx3-ubyte.gz", "data.download=true"]),
        ("fashion_mnist", ["Fashion-MNIST not found", "FashionMNIST/raw", "data.download=true"]),
        ("cifar10", ["CIFAR-10 not found", "cifar-10-batches-py", "cifar-10-python.tar.gz", "download=true"]),
    ],
)
def test_missing_dataset_says_what_to_fetch(tmp_path: Path, name: str, expected: list[str]):
    with pytest.raises(DataError) as error:
        build_image_dataset(name, root=tmp_path)
    _one_line_hint(error, str(tmp_path), *expected)


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got URLError")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as error:
        build_image_dataset("mnist", root=tmp_path, download=True)
    _one_line_hint(error, "could not download MNIST", "Error downloading")
    with pytest.raises(DataError) as error:
        build_image_dataset("cifar10", root=tmp_path, download=True)
    _one_line_hint(error, "could not download CIFAR-10", str(tmp_path))


def test_corrupt_idx_file(tmp_path: Path, rng: np.random.Generator):
    _write_mnist(tmp_path, "MNIST", rng)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x99\x07junk")
    with pytest.raises(DataError) as error:
        build_image_dataset("mnist", root=tmp_path)
    _one_line_hint(error, "could not read MNIST", str(tmp_path / "MNIST" / "raw"))


def test_unreadable_cifar_batch(tmp_path: Path, rng: np.random.Generator):
    _write_cifar10(tmp_path, rng)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    broken.write_bytes(b"garbage")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        build_image_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------------------------------
# From a config.
# --------------------------------------------------------------------------------------------------


def test_build_image_data_from_config():
    config = Config.from_dict(
        {"data": {"name": "mnist5k", "conditional": True}, "train": {"batch_size": 16, "seed": 3}}
    )
    batches, info = build_image_data(config)
    assert isinstance(info, DataInfo)
    assert info.kind == "image" and info.shape == (1, 28, 28) and info.num_classes == 10
    assert info.class_names == [str(i) for i in range(10)] and len(info.dataset) == 5000
    images, labels = next(iter(batches))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64
    # The lead's entry point routes image names here, with the same result.
    batches2, info2 = build_data(config)
    assert info2.shape == info.shape
    assert torch.equal(next(iter(batches2))[0], images)


def test_build_image_data_options_and_shards(class_folder: Path):
    config = Config.from_dict(
        {
            "data": {"name": "folder", "root": str(class_folder), "image_size": 8, "channels": 1},
            "train": {"batch_size": 2},
        }
    )
    batches, info = build_image_data(config, rank=1, world_size=2)
    assert info.shape == (1, 8, 8) and info.class_names == ["ant", "bee", "cat"]
    assert batches.batches_per_epoch == 1  # 5 images, 2 per process, batches of 2
    assert next(iter(batches))[0].shape == (2, 1, 8, 8)


def test_unknown_names_and_options(tmp_path: Path, rng: np.random.Generator):
    assert set(image_dataset_names()) >= {
        "mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "folder", "stanford_cars"
    }
    with pytest.raises(ConfigError, match="unknown dataset 'cifar11'.*moons.*mnist5k.*folder"):
        build_image_dataset("cifar11")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'.*mnist5k"):
        build_data(Config.from_dict({"data": {"name": "nope"}}))
    with pytest.raises(ConfigError, match="colour, size for dataset mnist5k; allowed: channels"):
        build_data(Config.from_dict({"data": {"name": "mnist5k", "colour": 1, "size": 3}}))
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        build_image_dataset("digits", channels=2)
    with pytest.raises(ConfigError, match="split must be one of train, test"):
        build_image_dataset("mnist", split="validation")
    with pytest.raises(ConfigError, match="labels must be one of"):
        build_image_dataset("folder", root=tmp_path, labels="maybe")
    with pytest.raises(ConfigError, match="needs data.root"):
        build_image_dataset("folder")
    _save(tmp_path / "flat" / "a.png", _random_pixels(rng, 8, 8))
    unlabelled = {"name": "folder", "root": str(tmp_path / "flat"), "conditional": True}
    with pytest.raises(ConfigError, match="conditional is true.*no labels"):
        build_image_data(Config.from_dict({"data": unlabelled, "train": {"batch_size": 1}}))


# --------------------------------------------------------------------------------------------------
# uint8 conversion.
# --------------------------------------------------------------------------------------------------


def test_uint8_round_trip():
    pixels = torch.randint(0, 256, (4, 5, 6, 3), dtype=torch.uint8)
    images = from_uint8(pixels)
    assert images.shape == (4, 3, 5, 6) and images.dtype == torch.float32
    assert torch.equal(to_uint8(images), pixels)
    assert torch.equal(to_uint8(from_uint8(pixels.numpy())), pixels)
    assert torch.equal(from_uint8(pixels.numpy()[:, ::-1]), from_uint8(pixels.flip(1)))
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    back = from_uint8(to_uint8(x))
    assert (back - x).abs().max() <= 1 / 255 + 1e-6
    edges = to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 5))
    assert edges.flatten().tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(torch.zeros(3, 2, 2)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="uint8"):
        from_uint8(torch.zeros(1, 2, 2, 3))


def test_faces_are_100_real_lfw_faces_offline():
    faces = build_image_dataset("faces")
    assert len(faces) == 100 and faces.shape == (1, 25, 25) and faces.num_classes == 0
    x, label = faces[0]
    assert x.dtype == torch.float32 and -1.0 <= x.min() < x.max() <= 1.0 and label == 0
    assert build_image_dataset("faces", image_size=32).shape == (1, 32, 32)
    from skimage.data import lfw_subset

    first = np.rint(lfw_subset()[0] * 255.0)  # the same pixels, mapped onto [-1, 1]
    torch.testing.assert_close(x[0].double(), torch.from_numpy(first) / 127.5 - 1.0)


def test_faces_without_scikit_image_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(DataError, match=r"faces needs scikit-image: pip install 'ddpmlab\[data\]'"):
        build_image_dataset("faces")
