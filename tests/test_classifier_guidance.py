"""Classifier guidance end to end on tiny settings: the noise-aware classifier, its training objective,
``ddpmlab train-classifier`` (with exact resume), ``sample``/``export --classifier``, the refusals, and a
hand-made classifier whose gradient is known, which must move samples the expected way."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from ddpmlab.cli import main
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.models import NoisyClassifier, build_model
from ddpmlab.schedules import make_schedule
from ddpmlab.training.objectives import ClassifierObjective, DiffusionObjective

TINY = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "train.steps=4", "train.batch_size=8", "train.log_every=2", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.minutes=null", "train.checkpoint_every=2",
    "diffusion.timesteps=50",
]
TINY_DIFFUSION = [*TINY, "train.sample_every=null", "sample.steps=4", "sample.batch_size=32"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """A tiny unconditional mnist5k diffusion run and a tiny classifier run with the same diffusion."""
    import os

    root = tmp_path_factory.mktemp("runs")
    cwd = os.getcwd()
    os.chdir(request.config.rootpath)
    try:
        assert main(["train", "--config", "configs/mnist5k_uncond.yaml", "--run", str(root / "uncond"),
                     *TINY_DIFFUSION]) == 0
        assert main(["train-classifier", "--config", "configs/mnist5k_classifier.yaml",
                     "--run", str(root / "clf"), *TINY]) == 0
    finally:
        os.chdir(cwd)
    return root / "uncond", root / "clf"


def _tiny_classifier(**options) -> NoisyClassifier:
    return NoisyClassifier(
        10, in_channels=1, base_channels=8, channel_mults=[1, 2], attention_levels=[1], num_groups=4,
        num_heads=2, image_size=28, **options,
    )


# -------------------------------------------------------------------------------------------------
# The model and its objective.
# -------------------------------------------------------------------------------------------------


def test_classifier_shapes_time_dependence_and_input_gradient():
    torch.manual_seed(0)
    model = build_model({"type": "classifier", "num_classes": 10, "in_channels": 1, "base_channels": 8,
                         "channel_mults": [1, 2], "attention_levels": [1], "num_groups": 4, "num_heads": 2,
                         "image_size": 28})
    assert isinstance(model, NoisyClassifier)
    with torch.no_grad():  # the zero-initialised convolutions hide the time embedding until trained
        for parameter in model.parameters():
            if not parameter.abs().sum():
                parameter.normal_(0.0, 0.1)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    t = torch.tensor([0, 20, 49])
    logits = model(x, t)
    assert logits.shape == (3, 10) and model.features(x, t).shape == (3, 16)
    assert not torch.allclose(model(x, torch.zeros(3, dtype=torch.int64)), logits)  # t is used
    labels = torch.tensor([1, 5, 9])
    (gradient,) = torch.autograd.grad(torch.log_softmax(logits, -1)[torch.arange(3), labels].sum(), x)
    assert gradient.shape == x.shape and torch.isfinite(gradient).all()
    assert (gradient.flatten(1).abs().sum(1) > 0).all()  # every sample gets a gradient, from its own image
    with pytest.raises(ValueError, match=r"expects x_t of shape \[B, 1, H, W\]"):
        model(torch.zeros(2, 3, 28, 28), t[:2])
    with pytest.raises(ValueError, match="num_classes must be an integer of at least 2"):
        NoisyClassifier(1)


def test_classifier_objective_is_cross_entropy_on_noised_data():
    diffusion = GaussianDiffusion(make_schedule("linear", 50))
    model = _tiny_classifier().eval()
    x0 = torch.rand(6, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    loss, metrics = ClassifierObjective(diffusion)(model, x0, labels, torch.Generator().manual_seed(3))
    # the same draws as the diffusion loss: t first, then the noise
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(0, 50, (6,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    logits = model(diffusion.q_sample(x0, t, noise), t)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels), rtol=0, atol=0)
    assert metrics["accuracy"] == (logits.argmax(1) == labels).float().mean()
    with pytest.raises(ValueError, match="needs integer class labels"):
        ClassifierObjective(diffusion)(model, x0, None, None)
    # the default objective is the diffusion loss, unchanged
    unet = build_model({"type": "unet", "in_channels": 1, "base_channels": 8, "channel_mults": [1, 2],
                        "num_groups": 4, "num_heads": 2, "image_size": 28})
    loss, metrics = DiffusionObjective(diffusion)(unet, x0, None, torch.Generator().manual_seed(1))
    expected = diffusion.training_loss(unet, x0, generator=torch.Generator().manual_seed(1))
    assert metrics == {} and torch.equal(loss, expected)


# -------------------------------------------------------------------------------------------------
# Training.
# -------------------------------------------------------------------------------------------------


def test_train_classifier_writes_a_run(runs):
    _, clf = runs
    assert (clf / "checkpoints" / "last.pt").exists()
    config = yaml.safe_load((clf / "config.yaml").read_text())
    assert config["model"]["type"] == "classifier"
    model = config["model"]
    assert (model["num_classes"], model["in_channels"], model["image_size"]) == (10, 1, 28)
    records = [json.loads(line) for line in (clf / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"]) for r in records)


def test_classifier_resume_is_exact(tmp_path):
    from ddpmlab.config import load_config
    from ddpmlab.runs import train_classifier_run

    overrides = [*TINY, "train.lr_schedule=constant"]
    straight = train_classifier_run(load_config("configs/mnist5k_classifier.yaml", overrides), tmp_path / "a")
    train_classifier_run(load_config("configs/mnist5k_classifier.yaml", [*overrides, "train.steps=2"]),
                         tmp_path / "b")
    resumed = train_classifier_run(load_config("configs/mnist5k_classifier.yaml", overrides), tmp_path / "b",
                                   resume=True)
    assert resumed.state.step == 4
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.ema.state_dict()["model"].values(), resumed.ema.state_dict()["model"].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------
# Sampling.
# -------------------------------------------------------------------------------------------------


def test_sample_and_export_with_a_classifier(runs, tmp_path):
    uncond, clf = runs
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(uncond), "--classifier", str(clf), "--classifier-scale", "3",
                 "--labels", "all", "--num", "20", "--steps", "4", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (20, 28, 28, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [i // 2 for i in range(20)]  # 'all': classes in turn, in blocks
    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(uncond), "--classifier", str(clf), "--labels", "all", "--num", "20",
                 "--steps", "3", "--out", str(grid)]) == 0
    assert Image.open(grid).size[1] > Image.open(grid).size[0]  # one row per class
    archive = tmp_path / "HW.zip"
    assert main(["export", "--run", str(uncond), "--classifier", str(clf), "--labels", "3,7", "--num", "4",
                 "--steps", "3", "--zip", str(archive)]) == 0
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["000_3.png", "001_7.png", "002_3.png", "003_7.png"]


def test_scale_0_is_the_unguided_sampler_exactly(runs, tmp_path):
    from ddpmlab.runs import make_run_sampler, open_classifier, open_run, sample_run

    uncond, clf = runs
    run, classifier = open_run(uncond), open_classifier(clf)
    for name in ("ddpm", "ddim"):
        sampler = make_run_sampler(run, name, 5)
        plain, _ = sample_run(run, 10, sampler, seed=4)
        zero, labels = sample_run(run, 10, sampler, seed=4, classifier=classifier, classifier_scale=0.0)
        guided, _ = sample_run(run, 10, sampler, seed=4, classifier=classifier, classifier_scale=30.0)
        assert torch.equal(plain, zero) and labels.tolist() == list(range(10))
        assert not torch.allclose(plain, guided)
    arrays = []
    for extra in ([], ["--classifier", str(clf), "--classifier-scale", "0", "--labels", "all"]):
        out = tmp_path / f"x{len(extra)}.npz"
        assert main(["sample", "--run", str(uncond), "--num", "8", "--steps", "3", "--seed", "2", *extra,
                     "--out", str(out)]) == 0
        arrays.append(np.load(out)["images"])
    np.testing.assert_array_equal(arrays[0], arrays[1])


class MeanPixelClassifier(torch.nn.Module):
    """log p(y | x) = log_softmax_y(a (y - 4.5) mean(x)): larger classes prefer brighter images.

    grad_x log p(y | x) = a (y - E_p[k]) / (H W) at every pixel.
    """

    num_classes, in_channels, image_size = 10, 1, 28

    def __init__(self, a: float = 4.0):
        super().__init__()
        self.a = a

    def forward(self, x, t):
        return self.a * (torch.arange(10, dtype=x.dtype) - 4.5) * x.mean(dim=(1, 2, 3))[:, None]

    def analytic_gradient(self, x, labels):
        probs = torch.softmax(self.forward(x, None), -1)
        expected = (probs * torch.arange(10, dtype=x.dtype)).sum(-1)
        return (self.a * (labels.to(x.dtype) - expected) / x[0].numel()).reshape(-1, 1, 1, 1).expand_as(x)


def test_guidance_by_a_known_classifier_moves_samples_the_expected_way(runs):
    from ddpmlab.runs import ClassifierRun, guided_denoiser, make_run_sampler, open_run, sample_run

    uncond, _ = runs
    run = open_run(uncond)
    hand_made = MeanPixelClassifier()
    classifier = ClassifierRun(uncond, run.config, hand_made, run.diffusion, 0, run.device)
    # one step, exactly: eps - s sqrt(1 - alpha_bar_t) grad log p(y | x_t, t); the labels go to the
    # classifier only (the unconditional model is called without them)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t, labels = torch.tensor([3, 10, 30, 49]), torch.tensor([0, 9, 2, 7])
    guided = guided_denoiser(run, None, classifier, 5.0, labels)
    with torch.no_grad():
        expected = run.model(x, t) - 5.0 * run.diffusion.coefficient(
            "sqrt_one_minus_alphas_cumprod", t, x) * hand_made.analytic_gradient(x, labels)
        torch.testing.assert_close(guided(x, t, labels), expected, rtol=1e-5, atol=1e-6)
    # whole samples (same seed): guided to 9 they get brighter, guided to 0 darker, the more so the
    # larger the scale
    sampler = make_run_sampler(run, "ddim", 5)
    plain = sample_run(run, 16, sampler, seed=1)[0].mean(dim=(1, 2, 3))
    previous_gap = 0.0
    for scale in (3.0, 10.0, 30.0):
        bright, dark = (
            sample_run(run, 16, sampler, labels=[y], seed=1, classifier=classifier, classifier_scale=scale)[0]
            .mean(dim=(1, 2, 3))
            for y in (9, 0)
        )
        assert (bright > plain).all() and (dark < plain).all(), scale  # every sample moves the right way
        gap = float((bright - dark).mean())
        assert gap > previous_gap + 0.02, scale  # and further with a larger scale
        previous_gap = gap


# -------------------------------------------------------------------------------------------------
# Refusals: one line, exit status 2, before any sampling.
# -------------------------------------------------------------------------------------------------


def _folder_with_three_classes(root):
    generator = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for index in range(4):
            pixels = generator.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{index}.png")
    return root


def test_refusals_exit_2_with_one_line(runs, tmp_path, capsys):
    uncond, clf = runs
    other_t, cosine, three = tmp_path / "t40", tmp_path / "cos", tmp_path / "three"
    one_step = [o for o in TINY if not o.startswith(("train.steps", "diffusion.timesteps"))]
    one_step.append("train.steps=1")
    config = "configs/mnist5k_classifier.yaml"
    assert main(["train-classifier", "--config", config, "--run", str(other_t), *one_step,
                 "diffusion.timesteps=40"]) == 0
    assert main(["train-classifier", "--config", config, "--run", str(cosine), *one_step,
                 "diffusion.timesteps=50", "diffusion.schedule=cosine"]) == 0
    folder = _folder_with_three_classes(tmp_path / "images")
    assert main(["train-classifier", "--config", config, "--run", str(three), *one_step,
                 "diffusion.timesteps=50", "data.name=folder", f"data.root={folder}", "data.channels=1",
                 "data.image_size=28"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "x.npz")
    sample = ["sample", "--run", str(uncond), "--num", "4", "--steps", "2", "--out", out]
    cases = {
        "different T": [*sample, "--classifier", str(other_t), "--labels", "all"],
        "different schedule": [*sample, "--classifier", str(cosine), "--labels", "all"],
        "class count": [*sample, "--classifier", str(three), "--labels", "all"],
        "scale without classifier": [*sample, "--classifier-scale", "3"],
        "no labels": [*sample, "--classifier", str(clf)],
        "label out of range": [*sample, "--classifier", str(clf), "--labels", "10"],
        "not a classifier": [*sample, "--classifier", str(uncond), "--labels", "all"],
        "export": ["export", "--run", str(uncond), "--classifier", str(other_t), "--labels", "1", "--zip",
                   str(tmp_path / "x.zip")],
        "train a classifier config": ["train", "--config", config, "--run", str(tmp_path / "r"), *TINY],
        "sample a classifier run": ["sample", "--run", str(clf), "--out", out],
        "train-classifier a diffusion config": ["train-classifier", "--config", "configs/mnist5k.yaml",
                                                "--run", str(tmp_path / "q"), *TINY],
    }
    for case, argv in cases.items():
        assert main(argv) == 2, case
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == len(cases) and all(line.startswith("ddpmlab: error:") for line in errors)
    messages = dict(zip(cases, errors))
    assert "T=40" in messages["different T"] and "T=50" in messages["different T"]
    assert "cosine" in messages["different schedule"]
    assert "knows 3 classes" in messages["class count"]
    assert "--classifier-scale needs --classifier" in messages["scale without classifier"]
    assert "--classifier needs --labels" in messages["no labels"]
    assert "0..9" in messages["label out of range"]
    assert "is not a classifier run" in messages["not a classifier"]
    assert "train-classifier" in messages["train a classifier config"]
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.zip").exists()
