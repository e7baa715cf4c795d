"""What evaluation costs: seconds for the features and the metrics of 10,000 samples on this machine.

Run by hand (not a test), after training the MNIST judge:

    .venv/bin/ddpmlab train-judge --config configs/mnist5k_judge.yaml --run runs/mnist5k_judge
    .venv/bin/python -m benchmarks eval-cost --judge runs/mnist5k_judge

Stages, each timed once after a warm-up call (the numbers do not depend on what the images show, so
the "samples" are mnist5k digits with pixel noise and the real set is the 5,000 digits twice over,
shifted by 0-3 pixels, 20,000 long: N = 10,000 of them are held out for the real-vs-real floors and
the other 10,000 are the reference, as ``ddpmlab evaluate --num 10000`` would measure):

1. judge features of the 10,000 samples and of the 20,000 real images (``extract_features``);
2. ``compare_features``: FD + KID (100 subsets of 1,000) + precision / recall (k = 3), each beside its
   real-vs-real floor;
3. memorisation in the features and in pixels (nearest real image of every sample);
4. the Inception network's cost per image on the CPU, on ``--inception-num`` images (default 200),
   extrapolated to 10,000: torchvision's Inception v3 architecture with random weights (the FID
   network has the same layers and input size, 299 x 299; the real weights cannot be downloaded here,
   and the cost does not depend on them).

Results: ``benchmarks/results/eval_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks import harness
from ddpmlab.config import load_config
from ddpmlab.data import build_data
from ddpmlab.data.base import to_uint8
from ddpmlab.metrics import compare_features, extract_features, memorisation_report
from ddpmlab.runs.judge import open_judge


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="runs/mnist5k_judge")
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--inception-num", type=int, default=200)
    harness.add_output_options(parser, "eval_cost")
    return parser.parse_args(argv)


def mnist_digits() -> torch.Tensor:
    """The 5,000 mnist5k digits as uint8 [5000, 28, 28, 1]."""
    config = load_config(harness.config_path("mnist5k"))
    dataset = build_data(config.data, 1, 0)[1].dataset
    return to_uint8(torch.stack([dataset[i][0] for i in range(len(dataset))]))


def image_sets(num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num "samples": digits plus pixel noise, 2 * num "real" images: digits shifted by 0-3 pixels)."""
    digits = mnist_digits()
    generator = torch.Generator().manual_seed(0)
    repeats = -(-2 * num // len(digits))
    real = torch.cat([torch.roll(digits, shifts=k % 4, dims=2) for k in range(repeats)])[: 2 * num]
    picks = torch.randint(len(digits), (num,), generator=generator)
    noise = torch.randint(-20, 21, (num, *digits.shape[1:]), generator=generator)
    samples = (digits[picks].int() + noise).clamp(0, 255).to(torch.uint8)
    return samples, real


def timed_once(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def inception_seconds_per_image(count: int) -> float:
    """Seconds per image of Inception v3 (random weights, eval mode, 299 x 299, batch 50) on the CPU."""
    from torchvision.models import inception_v3

    network = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    x = torch.rand(50, 3, 299, 299)
    with torch.inference_mode():
        network(x[:10])  # warm-up
        started = time.perf_counter()
        for _ in range(max(1, count // 50)):
            network(x)
    return (time.perf_counter() - started) / (max(1, count // 50) * 50)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    judge = open_judge(args.judge)
    samples, real = image_sets(args.num)
    extract_features(samples[:100], judge)  # warm-up
    seconds: dict[str, float] = {}
    fake_features, seconds["judge features of the samples"] = timed_once(
        lambda: extract_features(samples, judge)
    )
    real_features, seconds["judge features of the real set"] = timed_once(
        lambda: extract_features(real, judge)
    )
    result, seconds["FD + KID + precision/recall, with floors"] = timed_once(
        lambda: compare_features(fake_features, real_features, judge)
    )
    _, seconds["memorisation (judge features)"] = timed_once(
        lambda: memorisation_report(fake_features, real_features[: args.num], real_features[args.num :])
    )
    _, seconds["memorisation (pixels)"] = timed_once(
        lambda: memorisation_report(
            samples.flatten(1).float(),
            real[: args.num].flatten(1).float(),
            real[args.num :].flatten(1).float(),
        )
    )
    per_image = inception_seconds_per_image(args.inception_num)
    seconds[f"Inception features of {args.num} images (extrapolated from {args.inception_num})"] = (
        per_image * args.num
    )
    lines = [
        f"# What evaluation costs: {args.num:,} samples on this machine",
        "",
        f"Command: `{harness.command_line('eval-cost', argv)}`",
        f"Machine: {harness.machine_line()}.",
        f"N = {args.num:,} samples (uint8 1x28x28), real set {len(real):,} (N held out for the floors), "
        f"judge {args.judge} ({result['feature_dim']} features).",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {stage} | {value:.1f} |" for stage, value in seconds.items()]
    judge_total = sum(v for k, v in seconds.items() if not k.startswith("Inception"))
    lines += ["", f"Everything on the judge's features: **{judge_total:.0f} s** for {args.num:,} samples."]
    data = {
        "seconds": seconds,
        "n": args.num,
        "machine": harness.machine_line(),
        "versions": harness.versions(),
    }
    harness.publish(args, data, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
