"""Exact read-back of text-conditional runs against training minutes (the curve of issue 16).

Run by hand (not a test), after training with kept checkpoints and a reader::

    ddpmlab train-reader --config configs/captcha_reader.yaml --run runs/captcha_reader
    ddpmlab train --config configs/captcha.yaml --run runs/captcha_s0 train.checkpoint_every=250 \\
        train.keep_checkpoints=40                                     # alone on the machine: its clock
    ddpmlab train --config configs/captcha.yaml --run runs/captcha_s1 train.seed=1 ...
    python -m benchmarks captcha-curve --runs runs/captcha_s0,runs/captcha_s1 --minutes 5,10,20,30

Minutes are training wall-clock minutes of the *clock* run (``--clock``, default the first run), read
from the ``elapsed_seconds`` each checkpoint stores: train it alone on the machine whose minutes you
mean. For each minute m the curve takes the clock run's last kept checkpoint within m minutes (its step
s), and measures every run at step s, so runs trained side by side (slower each) are measured at the
steps the machine reaches alone. Each point: ``ddpmlab evaluate --features reader:READER --num N`` on a
copy of the run holding that checkpoint (one sample per random string the run did not train on, the
run's own sampling settings), giving exact reads, characters right and FD in the reader's features with
its real-vs-real floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks import harness
from ddpmlab.cli import main as ddpmlab_main
from ddpmlab.training.checkpoint import peek_checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated run directories")
    parser.add_argument("--clock", help="the run whose elapsed minutes map to steps (default: the first)")
    parser.add_argument("--minutes", default="5,10,20,30", help="comma-separated training minutes")
    parser.add_argument("--reader", default="runs/captcha_reader")
    parser.add_argument("--num", type=int, default=500, help="strings per point (one sample each)")
    parser.add_argument("--real-num", type=int, default=2000)
    parser.add_argument("--guidance", type=float, help="classifier-free guidance w (default: each run's own)")
    harness.add_output_options(parser, "captcha_curve")
    return parser.parse_args(argv)


def kept_checkpoints(run: Path) -> dict[int, float]:
    """{step: elapsed training seconds} of a run's kept checkpoints (``checkpoints/step_*.pt``)."""
    found = {}
    for path in sorted((run / "checkpoints").glob("step_*.pt")):
        state = peek_checkpoint(path)
        found[int(state["step"])] = float(state["elapsed_seconds"])
    if not found:
        raise SystemExit(f"{run} keeps no checkpoints: train it with train.keep_checkpoints=K")
    return found


def steps_at_minutes(clock: dict[int, float], minutes: list[float]) -> list[int]:
    """For each m, the last kept step whose elapsed time is within m minutes (the first kept one if
    none is)."""
    chosen = []
    for m in minutes:
        within = [step for step, seconds in clock.items() if seconds <= m * 60]
        chosen.append(max(within) if within else min(clock))
    return chosen


def evaluate_at(run: Path, step: int, args: argparse.Namespace, scratch: Path) -> dict:
    """``ddpmlab evaluate`` of ``run`` as it was at ``step`` (a copy holding that checkpoint)."""
    copy = scratch / f"{run.name}_{step}"
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    os.link(run / "checkpoints" / f"step_{step:07d}.pt", copy / "checkpoints" / "last.pt")
    out = copy / "evaluation.json"
    code = ddpmlab_main([
        "evaluate", "--run", str(copy), "--features", f"reader:{args.reader}", "--num", str(args.num),
        "--real-num", str(args.real_num), "--out", str(out),
        *(["--guidance", str(args.guidance)] if args.guidance is not None else []),
    ])
    if code != 0:
        raise SystemExit(f"evaluating {run} at step {step} failed")
    return json.loads(out.read_text())


def report(points: list[dict], args: argparse.Namespace, context: dict) -> str:
    runs = list(dict.fromkeys(p["run"] for p in points))
    lines = [
        "# Captcha read-back against training minutes",
        "",
        f"Command: `{context['command']}`",
        f"Machine: {context['machine']}. Minutes: the training clock of {context['clock']} (trained alone).",
        f"Reader: {args.reader}; {args.num} random unseen strings per point, one sample each, the runs' "
        "own sampling settings" + (f" at w = {args.guidance:g}." if args.guidance is not None else "."),
        "",
        "| minutes | step | " + " | ".join(f"{r}: exact / chars / FD_reader (floor)" for r in runs) + " |",
        "|---:|---:|" + "---:|" * len(runs),
    ]
    for minute, step in zip(context["minutes"], context["steps"]):
        cells = []
        for run in runs:
            p = next(p for p in points if p["run"] == run and p["step"] == step)
            reads = f"{p['read_exact']:.1%} / {p['read_chars']:.1%}"
            cells.append(f"{reads} / {p['fd']:.3f} ({p['fd_floor']:.3f})")
        lines.append(f"| {minute:g} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], context: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for run in dict.fromkeys(p["run"] for p in points):
        mine = {p["step"]: p["read_exact"] for p in points if p["run"] == run}
        axis.plot(context["minutes"], [100 * mine[s] for s in context["steps"]], marker="o", label=run)
    axis.axhline(90, color="grey", linestyle="--", linewidth=1, label="target 90%")
    axis.set(xlabel="training minutes (2-core CPU)", ylabel="read exactly (%)", ylim=(0, 100))
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [Path(r) for r in args.runs.split(",")]
    clock = Path(args.clock) if args.clock else runs[0]
    minutes = [float(m) for m in args.minutes.split(",")]
    steps = steps_at_minutes(kept_checkpoints(clock), minutes)
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            kept = kept_checkpoints(run)
            for step in dict.fromkeys(steps):
                if step not in kept:
                    raise SystemExit(f"{run} kept no checkpoint at step {step}")
                result = evaluate_at(run, step, args, Path(scratch))
                keys = ("read_exact", "read_chars", "read_exact_floor", "fd", "fd_floor", "misread")
                points.append({"run": str(run), "step": step, **{k: result[k] for k in keys}})
                print(json.dumps(points[-1]), flush=True)
    context = {
        "command": harness.command_line("captcha-curve", argv),
        "machine": harness.machine_line(),
        "versions": harness.versions(),
        "clock": str(clock),
        "minutes": minutes,
        "steps": steps,
    }
    harness.publish(args, {"context": context, "points": points}, report(points, args, context))
    if not args.no_write:
        plot(points, context, Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
