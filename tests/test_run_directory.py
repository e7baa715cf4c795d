"""A run directory describes itself: dry runs size a model without its data, a trained run samples
and exports with its training data gone, old runs still open, and a resume refuses changed data."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.data import build_data, describe_data

TINY_FOLDER_RUN = [
    "data.name=folder", "data.image_size=16", "data.conditional=true", "model.base_channels=8",
    "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4", "model.num_heads=2",
    "train.steps=2", "train.batch_size=4", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.minutes=null", "train.checkpoint_every=2",
    "diffusion.timesteps=50", "sample.steps=3", "sample.batch_size=8",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def _image_folder(root, classes=("ant", "bee"), per_class=3, size=(20, 18)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def test_dry_run_sizes_the_cifar10_model_without_the_data(tmp_path, capsys):
    assert not (tmp_path / "cifar-10-batches-py").exists()
    code = main(["train", "--config", "configs/cifar10.yaml", "--dry-run", f"data.root={tmp_path}"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "UNet with 35,746,307 parameters (35.75M)" in out  # Ho et al.'s 35.7M


def test_describe_data_agrees_with_the_data_it_describes(tmp_path):
    """Where the config decides shape and classes, the description made without the data is the one
    training records from the data."""
    cases = [
        ("configs/mnist5k.yaml", []),
        ("configs/mnist5k.yaml", ["data.image_size=16", "data.channels=3"]),
        ("configs/captcha.yaml", ["data.num_items=4"]),
        ("configs/mog2d.yaml", []),
    ]
    for path, overrides in cases:
        config = load_config(path, overrides)
        built = build_data(config.data, 4, 0)[1]
        assert describe_data(config.data).to_dict() == built.to_dict(), (path, overrides)
    root = _image_folder(tmp_path / "f")
    folder = load_config("configs/mnist5k.yaml", [f"data.root={root}", "data.name=folder"])
    assert describe_data(folder.data) is None  # a labelled folder's classes are in its files


def test_a_folder_run_samples_and_exports_with_its_folder_deleted(tmp_path):
    folder = _image_folder(tmp_path / "images")
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/mnist5k.yaml", "--run", str(run), f"data.root={folder}",
                 *TINY_FOLDER_RUN]) == 0
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["info"]
    assert recorded == {
        "kind": "image", "shape": [3, 16, 16], "num_classes": 2, "class_names": ["ant", "bee"],
        "text_charset": None, "text_length": None, "value_range": [-1.0, 1.0],
    }
    shutil.rmtree(folder)
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(run), "--num", "4", "--labels", "all", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (4, 16, 16, 3) and data["labels"].tolist() == [0, 0, 1, 1]
    archive = tmp_path / "HW2_1.zip"
    assert main(["export", "--run", str(run), "--num", "3", "--zip", str(archive)]) == 0
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 3


def _strip_data_info(run):
    """Make ``run`` look like one trained before data.info existed (in config.yaml and the checkpoint)."""
    from ddpmlab.training.checkpoint import load_checkpoint, save_checkpoint

    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    del state["config"]["data"]["info"]
    save_checkpoint(path, state)


def test_runs_saved_before_data_info_open_with_their_data_or_say_why_not(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/mnist5k.yaml", "--run", str(run), f"data.root={folder}",
                 *TINY_FOLDER_RUN]) == 0
    _strip_data_info(run)
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(out)]) == 0
    shutil.rmtree(folder)
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpmlab: error: ") and "before runs recorded their data" in error
    assert error.count("\n") == 1


def test_resume_refuses_data_that_changed(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    run = tmp_path / "run"
    common = ["--config", "configs/mnist5k.yaml", "--run", str(run), f"data.root={folder}", *TINY_FOLDER_RUN]
    assert main(["train", *common]) == 0
    _image_folder(tmp_path / "images" / "cat", classes=("x",))  # a third class appears
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", *common, "train.steps=4"]) == 2
    assert "the data changed since this run was trained" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_opening_a_run_reads_no_data(tmp_path, monkeypatch):
    """open_run of a recorded run never builds a dataset (a mnist5k run, whose data is always present,
    so only the absence of the call proves it)."""
    import ddpmlab.data.sources
    from ddpmlab.runs import open_run

    run = tmp_path / "run"
    overrides = [o for o in TINY_FOLDER_RUN if not o.startswith(("data.name", "data.image_size"))]
    assert main(["train", "--config", "configs/mnist5k.yaml", "--run", str(run), *overrides]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("open_run read the data")

    monkeypatch.setattr(ddpmlab.data.sources, "build_image_dataset", refuse)
    opened = open_run(run)
    assert opened.info.shape == (1, 28, 28) and opened.info.num_classes == 10
    assert torch.is_tensor(next(opened.model.parameters()))
