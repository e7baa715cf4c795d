"""Classifier guidance on MNIST: how often the judge sees the requested digit, by classifier scale.

Run by hand (not a test), after training an unconditional diffusion run and a noise-aware classifier
with the same diffusion (the two shipped configs have it):

    .venv/bin/ddpmlab train --config configs/mnist5k_uncond.yaml --run runs/mnist5k_uncond
    .venv/bin/ddpmlab train-classifier --config configs/mnist5k_classifier.yaml --run runs/mnist5k_classifier
    .venv/bin/python -m benchmarks classifier-guidance --run runs/mnist5k_uncond \\
        --classifier runs/mnist5k_classifier

For each classifier scale s (``--scales``, default 0 1 3 10) it draws ``--num`` images (default 1000)
with requested labels cycling 0, 1, ..., 9, 0, 1, ... (DDIM, ``--steps`` 50, eta 0, the same ``--seed``
for every scale: every scale starts from the same noise, and s = 0 is the unguided sampler exactly),
then asks the separate judge (``benchmarks/mnist_judge.py``, a CNN trained on real digits only, weights
in ``benchmarks/results/mnist_judge.pt``) which digit each image shows. It reports:

- judge accuracy: the fraction of images judged to be the requested digit (about 0.1 when unguided:
  the unconditional model draws digits regardless of the label);
- per-class judge accuracy;
- classifier accuracy at t = 0: how often the guiding classifier itself predicts the requested label on
  the final images (when it is far above the judge's, the guidance fools its own classifier rather than
  drawing the digit: "adversarial" guidance);
- diversity: the mean pixel distance between pairs of images requested with the same label
  (guidance trades diversity for fidelity);
- wall time per scale.

With ``--cfg-run`` (a class-conditional run, e.g. ``runs/mnist5k``) it adds rows for classifier-free
guidance at ``--cfg-scales`` (default 1 3) with the same labels, seed and sampler, for comparison.

Each scale's images are also those of
``ddpmlab sample --run RUN --classifier CLF --classifier-scale S --labels 0,1,2,3,4,5,6,7,8,9 --num N
--sampler ddim --steps 50 --eta 0 --seed SEED --out x.npz`` (``--labels all`` would order the labels in
blocks instead), judged by ``python -m benchmarks judge judge x.npz``; the report lists these
commands. Results: ``benchmarks/results/classifier_guidance.md`` and ``.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.mnist_judge import judge_accuracy
from ddpmlab.data.images import to_uint8
from ddpmlab.runs import make_run_sampler, open_classifier, open_run, read_metrics, sample_run

LABEL_CYCLE = "0,1,2,3,4,5,6,7,8,9"


def same_label_distance(samples: torch.Tensor, labels: torch.Tensor, per_class: int = 50) -> float:
    """Mean RMS pixel distance (in [-1, 1] units) between pairs of samples requested with the same label,
    over at most ``per_class`` samples of each label."""
    distances = []
    for label in labels.unique():
        group = samples[labels == label][:per_class].flatten(1).double()
        if len(group) < 2:
            continue
        pairwise = torch.cdist(group, group) / group.shape[1] ** 0.5
        upper = torch.triu_indices(len(group), len(group), offset=1)
        distances.append(pairwise[upper[0], upper[1]].mean())
    return float(torch.stack(distances).mean()) if distances else float("nan")


def classifier_agreement(classifier, samples: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """How often the guiding classifier predicts the requested label on the final samples, at t = 0."""
    hits = 0
    with torch.inference_mode():
        for start in range(0, len(samples), batch):
            x = samples[start : start + batch].to(classifier.device)
            t = torch.zeros(len(x), dtype=torch.int64, device=x.device)
            predicted = classifier.model(x, t).argmax(dim=-1).cpu()
            hits += int((predicted == labels[start : start + batch]).sum())
    return hits / len(samples)


def measure(kind: str, scale: float, run, sampler, labels, args, classifier=None) -> dict:
    started = time.perf_counter()
    if kind == "classifier":
        samples, used = sample_run(
            run, args.num, sampler, labels=labels, seed=args.seed, batch_size=args.batch_size,
            classifier=classifier, classifier_scale=scale,
        )
    else:
        samples, used = sample_run(
            run, args.num, sampler, guidance=scale, labels=labels, seed=args.seed, batch_size=args.batch_size
        )
    seconds = time.perf_counter() - started
    requested = torch.as_tensor(used)
    accuracy, predicted = judge_accuracy(to_uint8(samples).numpy(), requested.numpy())
    per_class = [float((predicted[requested.numpy() == c] == c).mean()) for c in range(10)]
    row = {
        "guidance": kind,
        "scale": scale,
        "judge_accuracy": accuracy,
        "judge_accuracy_per_class": per_class,
        "same_label_distance": same_label_distance(samples, requested),
        "seconds": seconds,
        "num": args.num,
    }
    if classifier is not None:
        row["classifier_accuracy_t0"] = classifier_agreement(classifier, samples, requested)
    return row


def sample_command(args, kind: str, scale: float) -> str:
    run = args.run if kind == "classifier" else args.cfg_run
    parts = ["ddpmlab", "sample", "--run", run]
    if kind == "classifier":
        parts += ["--classifier", args.classifier, "--classifier-scale", f"{scale:g}"]
    else:
        parts += ["--guidance", f"{scale:g}"]
    parts += ["--labels", LABEL_CYCLE, "--num", str(args.num), "--sampler", args.sampler, "--steps",
              str(args.steps)]
    if args.sampler == "ddim":
        parts += ["--eta", "0"]
    parts += ["--seed", str(args.seed), "--out", f"{kind}_{scale:g}.npz"]
    return shlex.join(parts) + f" && python -m benchmarks judge judge {kind}_{scale:g}.npz"


def describe_run(path: str, run_step: int) -> str:
    records = [r for r in read_metrics(Path(path)) if "accuracy" in r or "loss" in r]
    last = records[-1] if records else {}
    extra = f", last logged noised-batch accuracy {last['accuracy']:.3f}" if "accuracy" in last else ""
    return f"`{path}` (step {run_step}{extra})"


def markdown(report: dict) -> str:
    lines = [
        "# Classifier guidance on MNIST (mnist5k)",
        "",
        "An unconditional diffusion model steered towards a requested digit by the gradient of a separate",
        "noise-aware classifier (Dhariwal & Nichol 2021), judged by `benchmarks/mnist_judge.py` (a CNN",
        "trained on real digits only). Classifier-free rows (if any) use a class-conditional model instead.",
        "",
        f"- diffusion run: {report['run']}",
        f"- classifier run: {report['classifier']}",
    ]
    if report.get("cfg_run"):
        lines.append(f"- classifier-free run: {report['cfg_run']}")
    lines += [
        f"- sampling: {report['sampler']}, {report['num']} images per scale, labels cycling 0..9, "
        f"seed {report['seed']}",
        f"- machine: {report['machine']}",
        "",
        "| guidance | scale | judge accuracy | classifier accuracy at t=0 | same-label distance | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        agreement = row.get("classifier_accuracy_t0")
        lines.append(
            f"| {row['guidance']} | {row['scale']:g} | **{row['judge_accuracy']:.1%}** | "
            f"{'' if agreement is None else f'{agreement:.1%}'} | {row['same_label_distance']:.3f} | "
            f"{row['seconds']:.0f} |"
        )
    lines += ["", "Per-class judge accuracy (digits 0..9):", ""]
    for row in report["rows"]:
        cells = " | ".join(f"{a:.2f}" for a in row["judge_accuracy_per_class"])
        lines.append(f"- {row['guidance']} {row['scale']:g}: {cells}")
    lines += [
        "",
        "Judge accuracy: the fraction of images the judge classifies as the requested digit (chance: 10%).",
        "Classifier accuracy at t=0: the same for the guiding classifier itself. Same-label distance: mean",
        "RMS pixel distance between images requested with the same label (lower = less diverse).",
        "",
        "## Commands",
        "",
        "```",
        report["command"],
        "```",
        "",
        "Each row's images, one command at a time:",
        "",
        "```",
        *report["sample_commands"],
        "```",
        "",
    ]
    return "\n".join(lines)


def measure_all(args) -> tuple[dict, list[dict], list[str]]:
    """Every row (classifier-guided scales, then classifier-free ones) and each row's sample command;
    also the runs measured, for the report."""
    labels = torch.arange(10)  # cycled over the samples: 0, 1, ..., 9, 0, 1, ...
    run, classifier = open_run(args.run, args.device), open_classifier(args.classifier, args.device)
    options = {"eta": 0.0} if args.sampler == "ddim" else {}
    sampler = make_run_sampler(run, args.sampler, args.steps, **options)
    rows, commands = [], []
    for scale in args.scales:
        rows.append(measure("classifier", scale, run, sampler, labels, args, classifier))
        commands.append(sample_command(args, "classifier", scale))
        print(_line(rows[-1]), flush=True)
    cfg = None
    if args.cfg_run:
        cfg = open_run(args.cfg_run, args.device)
        if not cfg.conditional:
            raise SystemExit(f"--cfg-run {args.cfg_run} is not a class-conditional run")
        cfg_sampler = make_run_sampler(cfg, args.sampler, args.steps, **options)
        for scale in args.cfg_scales:
            rows.append(measure("classifier-free", scale, cfg, cfg_sampler, labels, args))
            commands.append(sample_command(args, "classifier-free", scale))
            print(_line(rows[-1]), flush=True)
    measured = {"run": run, "classifier": classifier, "cfg": cfg, "sampler": sampler}
    return measured, rows, commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an unconditional mnist5k diffusion run")
    parser.add_argument("--classifier", required=True, help="a run of ddpmlab train-classifier")
    parser.add_argument("--scales", nargs="*", type=float, default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--cfg-run", help="optional: a class-conditional run for classifier-free rows")
    parser.add_argument("--cfg-scales", nargs="*", type=float, default=[1.0, 3.0])
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    harness.add_output_options(parser, "classifier_guidance")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    measured, rows, commands = measure_all(args)
    cfg = measured["cfg"]
    report = {
        "run": describe_run(args.run, measured["run"].step),
        "classifier": describe_run(args.classifier, measured["classifier"].step),
        "cfg_run": describe_run(args.cfg_run, cfg.step) if cfg is not None else None,
        "sampler": repr(measured["sampler"]),
        "num": args.num,
        "seed": args.seed,
        "machine": harness.machine_line(args.device),
        "command": harness.command_line("classifier-guidance", argv),
        "sample_commands": commands,
        "rows": rows,
    }
    if not args.no_write:
        harness.write_report(args.out, report, markdown(report))
    return 0


def _line(row: dict) -> str:
    agreement = row.get("classifier_accuracy_t0")
    extra = "" if agreement is None else f", classifier at t=0 {agreement:.3f}"
    return (
        f"{row['guidance']} scale {row['scale']:g}: judge accuracy {row['judge_accuracy']:.3f}{extra}, "
        f"same-label distance {row['same_label_distance']:.3f}, {row['seconds']:.0f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
