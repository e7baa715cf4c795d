"""How good is the ``make demo`` model? FD_judge, KID, precision, recall, class accuracy and memorisation
at N = 1,000 and N = 5,000, each beside what real digits score.

Run by hand (not a test), after ``make demo`` and the judge:

    .venv/bin/ddpmlab train-judge --config configs/mnist5k_judge.yaml --run runs/mnist5k_judge
    .venv/bin/ddpmlab sample --run runs/demo-mnist5k --num 5000 --labels all --out demo5000.npz
    .venv/bin/python -m benchmarks mnist5k-eval --samples demo5000.npz

(or ``--samples a.npz --samples b.npz``: N = 1,000 from the first file, N = 5,000 from all)

Two protocols, because mnist5k has exactly 5,000 real digits (the model trained on all of them):

- **N = 1,000**: ``ddpmlab evaluate``'s own protocol (:func:`ddpmlab.runs.evaluate.evaluate_images`):
  1,000 of the samples (every fifth: 100 per class) against a reference of 4,000 real digits, and the
  floors from the other 1,000 real digits against the same reference.
- **N = 5,000**: no 5,000 real digits are left to make a floor at this N, so the samples are compared
  with all 5,000 real digits (the training set), and the floor is the largest split real data allows:
  2,500 real against the other 2,500. For a like-for-like number, 2,500 of the samples (every other
  one) are also compared with the same 2,500-digit reference. Class accuracy and memorisation use all
  5,000 samples (memorisation's real set split 90 / 10 as in ``evaluate``).

Results: ``benchmarks/results/mnist5k_eval.md`` / ``.json`` and the nearest training digits of the
samples closest to the training set, ``benchmarks/results/mnist5k_nearest.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from ddpmlab.metrics import class_accuracy, extract_features, real_floor
from ddpmlab.metrics.distances import frechet_distance, kernel_inception_distance
from ddpmlab.metrics.manifold import precision_recall
from ddpmlab.runs import open_run
from ddpmlab.runs.evaluate import (
    evaluate_images,
    format_evaluation,
    load_feature_network,
    real_data,
    split_memorisation,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo-mnist5k")
    parser.add_argument("--features", default="judge:runs/mnist5k_judge")
    parser.add_argument(
        "--samples",
        required=True,
        action="append",
        help="samples (ddpmlab sample --labels all --out x.npz); repeat to add files: N = 1,000 is measured "
        "on the first file (every k-th sample when it holds more), N = 5,000 on all of them together",
    )
    parser.add_argument("--seed", type=int, default=0)
    harness.add_output_options(parser, "mnist5k_eval")
    return parser.parse_args(argv)


def whole_set_metrics(fake: torch.Tensor, reference: torch.Tensor, seed: int) -> dict[str, float]:
    """FD, KID (100 subsets of 1,000 or fewer) and precision / recall (k = 3) of ``fake`` against
    ``reference`` (features), without holding anything out."""
    kid = kernel_inception_distance(fake, reference, 100, min(1000, len(fake), len(reference)), seed=seed)
    pr = precision_recall(reference, fake, k=3)
    return {
        "fd": frechet_distance(fake, reference),
        "kid": kid.mean,
        "kid_std": kid.std,
        "precision": pr.precision,
        "recall": pr.recall,
    }


def at_5000(fake: torch.Tensor, real: torch.Tensor, seed: int) -> dict[str, dict[str, float]]:
    """The N = 5,000 protocol of the module docstring on features (fake [5000, D], real [5000, D])."""
    half = len(real) // 2
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(real)))
    held, reference = real[order[:half]], real[order[half:]]
    return {
        "samples_5000_vs_real_5000": whole_set_metrics(fake, real, seed),
        "samples_2500_vs_real_2500": whole_set_metrics(fake[::2], reference, seed),
        "real_2500_vs_real_2500 (floor)": whole_set_metrics(held, reference, seed),
    }


def memorisation_5000(fake, real_features, images, real_images, seed: int) -> dict[str, float]:
    """Fraction of all samples closer to the real set than real images are, in features and pixels (the
    real set split 90 / 10 as ``evaluate`` splits it: :func:`ddpmlab.runs.evaluate.split_memorisation`)."""
    return {
        space: split_memorisation(x.flatten(1).float(), r.flatten(1).float(), seed)[0]["fraction_flagged"]
        for space, x, r in (("features", fake, real_features), ("pixels", images, real_images))
    }


def table(rows: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| set | FD_judge | KID +- std | precision | recall |", "|---|---:|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['fd']:.3f} | {m['kid']:.4f} +- {m['kid_std']:.4f} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    network = load_feature_network(args.features)
    run = open_run(args.run)
    real = real_data(run, 10_000, args.seed)
    parts = []
    for path in args.samples:
        with np.load(path) as stored:
            parts.append((torch.from_numpy(stored["images"]), torch.from_numpy(stored["labels"])))
    first_images, first_labels = parts[0]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    out = Path(args.out)
    pairs = None if args.no_write else out.parent / "mnist5k_nearest.png"
    stride = max(1, len(first_images) // 1000)  # 1,000 samples, every class alike (labels come in blocks)
    n1000 = evaluate_images(
        first_images[::stride][:1000], first_labels[::stride][:1000], real, network, args.seed, pairs=pairs
    )
    fake, real_features = extract_features(images, network), extract_features(real.images, network)
    n5000 = at_5000(fake, real_features, args.seed) if len(images) >= len(real.images) else None
    accuracy = class_accuracy(network.predict(images), labels)
    memorised = memorisation_5000(fake, real_features, images, real.images, args.seed) if n5000 else None
    floor_1000 = real_floor(lambda a, b: frechet_distance(a, b), real_features, 1000, args.seed)
    result = {
        "n1000": n1000,
        "n5000": n5000,
        "class_accuracy_5000": accuracy,
        "memorisation_5000": memorised,
        "fd_floor_1000_vs_1000": floor_1000,
    }
    lines = [
        "# The make-demo model measured: mnist5k, judge features",
        "",
        f"Command: `{harness.command_line('mnist5k-eval', argv)}`",
        f"Machine: {harness.machine_line()}.",
        f"Run {run.run_dir} (step {run.step}); samples {', '.join(args.samples)}: {len(images)} images, "
        f"labels 0..9 in blocks, the run's sampler ({run.config.sample.sampler} "
        f"{run.config.sample.steps} steps, w = {run.config.sample.guidance}); features {args.features}.",
        "",
        "## N = 1,000 (`ddpmlab evaluate`'s protocol: 1,000 real held out for the floors, 4,000 reference)",
        "",
        "```",
        format_evaluation(n1000),
        "```",
        "",
        f"Real 1,000 vs real 1,000 (disjoint, no shared reference): FD_judge {floor_1000:.3f}.",
        "",
        "## N = 5,000 (all the real digits there are; floor from the largest disjoint split, 2,500 vs 2,500)",
        "",
        *(
            table(n5000)
            if n5000
            else [f"Not measured: {len(images)} samples given, {len(real.images)} needed."]
        ),
        "",
        f"Class accuracy of all {len(images):,} samples (the judge's reading vs the requested digit): "
        f"{accuracy:.4f}.",
        "Closer to the real set than real images are (all samples; 5% expected of fresh images): "
        f"{memorised}.",
        "",
        "Nearest training digits of the samples closest to the training set: `mnist5k_nearest.png`.",
    ]
    harness.publish(args, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
