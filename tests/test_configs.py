"""Every shipped config (src/ddpmlab/configs/*.yaml, whatever is there when the tests are collected)
passes ``ddpmlab train --dry-run`` and reports its parameter count; each image config added with the
forward/config work trains two steps on tiny fixtures with a tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.runs import train_run
from test_images import _write_cifar10, _write_mnist
from test_stanford_cars import write_stanford_cars

CONFIG_DIR = Path(ddpmlab.__file__).resolve().parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
NEW_IMAGE_CONFIGS = ["fashion_mnist", "cifar10_cond", "landscapes64", "stanford_cars", "imagenet100_128"]
TINY_MODEL = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.num_res_blocks=1",
    "model.attention_levels=[1]", "model.attention_resolutions=null", "model.num_heads=2",
    "model.head_dim=null", "model.num_groups=4",
    "data.image_size=16", "data.num_workers=0", "diffusion.timesteps=50",
    "train.steps=2", "train.batch_size=4", "train.grad_accum=1", "train.minutes=null", "train.log_every=1",
    "train.warmup_steps=1", "train.checkpoint_every=2", "train.sample_every=null", "train.progress=false",
    "train.tensorboard=false", "sample.steps=5",  # the run's sampler must fit diffusion.timesteps=50
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """One folder holding every torchvision-format fixture, plus an image folder with three classes."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    _write_mnist(root, "MNIST", rng)
    _write_mnist(root, "FashionMNIST", rng)
    _write_cifar10(root, rng)
    write_stanford_cars(root, rng)
    for label in ("n01", "n02", "n03"):
        for i in range(3):
            folder = root / "classes" / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _data_overrides(config: Path, root: Path) -> list[str]:
    """Point the config's data at the fixtures (sources that need files; batches of 2 fit them), or leave
    the data alone (bundled, generated and toy data)."""
    name = (yaml.safe_load(config.read_text()).get("data") or {}).get("name")
    if name in ("mnist", "fashion_mnist", "cifar10", "stanford_cars"):
        return [f"data.root={root}", "train.batch_size=2"]
    if name == "folder":
        return [f"data.root={root / 'classes'}", "train.batch_size=2"]
    return []


def _dry_run(config: Path, root: Path, capsys) -> int:
    """``--dry-run`` of the config's training command (classifier, judge and reader configs have their
    own)."""
    model_type = (yaml.safe_load(config.read_text()).get("model") or {}).get("type")
    command = {"classifier": "train-classifier", "judge": "train-judge", "reader": "train-reader"}.get(
        model_type, "train"
    )
    status = main([command, "--config", str(config), "--dry-run", *_data_overrides(config, root)])
    captured = capsys.readouterr()
    assert status == 0, f"{config.name}: {captured.err.strip()}"
    found = re.search(r"# model: \w+ with ([\d,]+) parameters \(([\d.]+)M\)", captured.out)
    assert found, captured.out
    assert "name:" in captured.out and "train:" in captured.out  # the resolved config
    return int(found.group(1).replace(",", ""))


def test_configs_are_found():
    names = {path.stem for path in CONFIGS}
    assert {"mnist5k", "cifar10", *NEW_IMAGE_CONFIGS} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_shipped_config_passes_dry_run(config: Path, data_root: Path, capsys):
    assert _dry_run(config, data_root, capsys) > 0


def test_cifar10_configs_are_ho_et_al_35_7m(data_root: Path, capsys):
    unconditional = _dry_run(CONFIG_DIR / "cifar10.yaml", data_root, capsys)
    conditional = _dry_run(CONFIG_DIR / "cifar10_cond.yaml", data_root, capsys)
    assert abs(unconditional - 35.7e6) / 35.7e6 < 0.01, unconditional
    assert 0 < conditional - unconditional < 20_000  # a class embedding (10 + null classes, width 512)


@pytest.mark.parametrize(
    "name, millions",
    [("fashion_mnist", 6.95), ("landscapes64", 27.99), ("stanford_cars", 43.71), ("imagenet100_128", 77.58)],
)
def test_new_configs_have_the_sizes_their_headers_state(name: str, millions: float):
    """Counted with the real number of classes (196 cars, 100 ImageNet classes, 10 Fashion-MNIST)."""
    from ddpmlab.models import build_model, count_parameters

    config = load_config(CONFIG_DIR / f"{name}.yaml")
    classes = {"fashion_mnist": 10, "stanford_cars": 196, "imagenet100_128": 100}.get(name)
    options = dict(config.model.options)
    size = config.data.image_size or 28
    options.update(in_channels=1 if name == "fashion_mnist" else 3, image_size=size)
    if classes:
        options.update(condition="class", num_classes=classes)
    import torch

    with torch.device("meta"):  # no memory, no initialisation
        model = build_model({"type": config.model.type, **options})
    assert count_parameters(model) / 1e6 == pytest.approx(millions, abs=0.01)
    assert f"{millions:.1f}M" in (CONFIG_DIR / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", NEW_IMAGE_CONFIGS)
def test_new_image_configs_train_two_steps_on_fixtures(name: str, data_root: Path, tmp_path: Path):
    path = CONFIG_DIR / f"{name}.yaml"
    config = load_config(path, [*_data_overrides(path, data_root), *TINY_MODEL])
    trainer = train_run(config, tmp_path / name)
    assert trainer.state.step == 2
    assert (tmp_path / name / "checkpoints" / "last.pt").exists()
    conditional = yaml.safe_load(path.read_text())["data"].get("conditional", False)
    assert (trainer.model.condition_encoder is not None) == conditional
