"""The judge: a classifier of clean real images trained as a run, opened as a feature network."""

from __future__ import annotations

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.data import build_data
from ddpmlab.data.base import to_uint8
from ddpmlab.metrics import FeatureNetwork, class_accuracy, extract_features
from ddpmlab.models import JudgeCNN
from ddpmlab.training.judge_objective import augment_images, degrade_images

TINY_JUDGE = [
    "model.width=16", "model.feature_dim=32", "model.dropout=0.0", "train.steps=150", "train.batch_size=32",
    "train.lr=3e-3", "train.warmup_steps=5", "train.log_every=50", "train.progress=false",
    "train.tensorboard=false", "train.checkpoint_every=150", "train.ema_decay=0.9",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_judge_shapes_and_features_feed_the_logits():
    judge = JudgeCNN(in_channels=3, image_size=32, num_classes=5, width=4, feature_dim=6).eval()
    x = torch.rand(7, 3, 32, 32) * 2 - 1
    features = judge.features(x)
    assert features.shape == (7, 6) and (features >= 0).all()  # after ReLU
    torch.testing.assert_close(judge(x), judge.head(features))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        JudgeCNN(num_classes=0)


def test_augmentation_keeps_the_range_and_is_fixed_by_the_generator():
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    a = augment_images(x, torch.Generator().manual_seed(3))
    b = augment_images(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= -1.0 - 1e-6 and a.max() <= 1.0 + 1e-6
    assert not torch.equal(a, augment_images(x, torch.Generator().manual_seed(4)))
    untouched = degrade_images(x, torch.Generator().manual_seed(0), fraction=0.0)
    torch.testing.assert_close(untouched, x)  # fraction 0 changes nothing (up to the [0, 1] round trip)
    black = -torch.ones(4, 1, 8, 8)
    greyed = degrade_images(black, torch.Generator().manual_seed(0), fraction=1.0)
    assert greyed.mean() > -1.0  # a black background gets an offset and noise


def test_a_trained_judge_reads_real_digits_and_is_a_feature_network(tmp_path, capsys):
    from ddpmlab.config import load_config
    from ddpmlab.runs.judge import open_judge

    run = tmp_path / "judge"
    command = ["train-judge", "--config", "configs/mnist5k_judge.yaml", "--run", str(run), *TINY_JUDGE]
    assert main(command) == 0
    assert "accuracy on augmented batches" in capsys.readouterr().out
    judge = open_judge(run)
    assert isinstance(judge, FeatureNetwork) and judge.name == f"judge:{run}"
    config = load_config("configs/mnist5k_judge.yaml")
    dataset = build_data(config.data, 1, 0)[1].dataset
    picked = torch.arange(0, 5000, 25)  # 200 digits, 20 per class
    images = to_uint8(torch.stack([dataset[int(i)][0] for i in picked]))
    labels = torch.tensor([dataset[int(i)][1] for i in picked])
    accuracy = class_accuracy(judge.predict(images), labels)
    assert accuracy > 0.7, accuracy  # 150 steps of a small CNN (0.885 measured): far above chance (0.1)
    features = extract_features(images, judge, batch_size=64)
    assert features.shape == (200, 32)
    with pytest.raises(ValueError, match="takes uint8 images"):
        judge.predict(images.float())


def test_train_judge_refuses_other_models_and_dry_runs(capsys):
    assert main(["train-judge", "--config", "configs/mnist5k_classifier.yaml", "--dry-run"]) == 2
    assert "train-judge trains model.type judge" in capsys.readouterr().err
    assert main(["train-judge", "--config", "configs/mnist5k_judge.yaml", "--dry-run"]) == 0
    assert "JudgeCNN with" in capsys.readouterr().out
