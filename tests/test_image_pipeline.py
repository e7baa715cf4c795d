"""The image pipeline end to end on tiny settings: train, sample grids during training, sample to
npz / grid / folder, export a zip, the demo, exact resume of a UNet run."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.cli import main

TINY_UNET = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "train.steps=4", "train.batch_size=8", "train.log_every=2", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.sample_every=2", "train.minutes=null",
    "train.checkpoint_every=2", "diffusion.timesteps=50", "sample.steps=5", "sample.batch_size=32",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("runs")
    cwd = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(__file__)))
    try:
        command = ["train", "--config", "configs/mnist5k.yaml", "--run", str(root / "mnist"), *TINY_UNET]
        assert main(command) == 0
    finally:
        os.chdir(cwd)
    return root / "mnist"


def test_training_writes_checkpoint_metrics_and_sample_grids(mnist_run):
    assert (mnist_run / "checkpoints" / "last.pt").exists()
    grids = sorted((mnist_run / "samples").glob("step_*.png"))
    assert [g.name for g in grids][:2] == ["step_0000002.png", "step_0000004.png"]
    assert Image.open(grids[0]).size[0] > 8 * 28  # 8 columns of 28-pixel digits


def test_sample_to_npz_grid_and_folder(mnist_run, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(mnist_run), "--num", "20", "--labels", "all", "--guidance", "3",
                 "--sampler", "ddim", "--steps", "4", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (20, 28, 28, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [i // 2 for i in range(20)]  # 'all': classes in turn, in blocks
    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(mnist_run), "--num", "20", "--labels", "all", "--steps", "4",
                 "--out", str(grid)]) == 0
    assert Image.open(grid).size[1] > Image.open(grid).size[0]  # 10 rows (one per digit) of 2
    folder = tmp_path / "pngs"
    assert main(["sample", "--run", str(mnist_run), "--num", "3", "--labels", "7", "--steps", "3",
                 "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["000_7.png", "001_7.png", "002_7.png"]


def test_samples_do_not_depend_on_batch_size(mnist_run, tmp_path):
    arrays = []
    for batch in ("8", "24"):
        out = tmp_path / f"b{batch}.npz"
        assert main(["sample", "--run", str(mnist_run), "--num", "24", "--steps", "3", "--batch-size", batch,
                     "--seed", "5", "--out", str(out)]) == 0
        arrays.append(np.load(out)["images"])
    np.testing.assert_array_equal(arrays[0], arrays[1])


def test_export_writes_a_zip_of_separate_images(mnist_run, tmp_path):
    archive = tmp_path / "HW2_123456789.zip"
    assert main(["export", "--run", str(mnist_run), "--num", "64", "--format", "jpg", "--steps", "3",
                 "--zip", str(archive)]) == 0
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert len(names) == 64 and all(name.endswith(".jpg") for name in names)


def test_resume_of_an_image_run_is_exact(tmp_path):
    from ddpmlab.config import load_config
    from ddpmlab.runs import train_run

    overrides = [o for o in TINY_UNET if not o.startswith("train.sample_every")]
    overrides += ["train.sample_every=null", "train.lr_schedule=constant"]
    straight = train_run(load_config("configs/mnist5k.yaml", overrides), tmp_path / "a")
    split = load_config("configs/mnist5k.yaml", [*overrides, "train.steps=2"])
    train_run(split, tmp_path / "b")
    resumed = train_run(load_config("configs/mnist5k.yaml", overrides), tmp_path / "b", resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_image_commands_refuse_bad_requests(mnist_run, tmp_path, capsys):
    assert main(["export", "--run", str(mnist_run), "--zip", str(tmp_path / "x.tar")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--labels", "12", "--out", str(tmp_path / "x.npz")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--out", str(tmp_path / "x.gif")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("ddpmlab: error:") for line in errors)
