"""GPU speed of ddpmlab at Ho et al.'s CIFAR-10 configuration: training, sampling, memory, loss, FLOPs.

The driver of ``python -m benchmarks gpu`` (what it measures, and the one-call recipe for a GPU machine:
the package's docstring, ``benchmarks/gpu/__init__.py``): the options (``--smoke`` sets the defaults of
a tiny CPU run), the device and version facts of the report, and the sections in order under the wall
budget, each with the reserves of the later ones held back; a section that fails or runs out of time is
recorded, and the others still run. SIGTERM (e.g. from ``timeout``) stops the run, keeping what was
written.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.gpu import flops, loss, memory, sample, train
from benchmarks.gpu.common import (
    SECTION_RESERVE_S,
    SECTIONS,
    SMOKE,
    TARGETS,
    Budget,
    OutOfTime,
    Terminated,
    device_info,
    say,
)
from benchmarks.gpu.report import Context, Report

# Each section's module: ``run(ctx)`` measures and records, ``markdown(section)`` renders the table.
MODULES = {"flops": flops, "memory": memory, "train": train, "loss": loss, "sample": sample}


def section_list(text: str) -> list[str]:
    """``--sections``: comma-separated names, validated, in the benchmark's order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in names]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sections",
        type=section_list,
        default=",".join(SECTIONS),
        help=f"comma-separated, of {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="wall budget; sections stop when it is spent"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny model on the CPU, every section, a temporary --out"
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument(
        "--peak-tflops", type=float, help="bf16 dense peak for MFU (default: from the device name)"
    )
    p.add_argument("--out", help="output path without suffix (default benchmarks/results/gpu_speed)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", type=int, help="override model.base_channels of the configs (smoke: 32)")
    p.add_argument("--image-size", type=int, default=32, help="CIFAR-10 image side")
    p.add_argument("--batch", type=int, default=128, help="training batch (train, loss)")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate, constant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row (compile/graph rows: more)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per row")
    p.add_argument("--round-seconds", type=float, default=1.0, help="wanted length of one timed round")
    p.add_argument("--min-steps", type=int, default=3, help="fewest steps in a timed round")
    p.add_argument("--max-steps", type=int, default=40, help="most training steps in a timed round")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile rows"
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (smoke: eager)")
    p.add_argument(
        "--compile-reserve-s", type=float, default=90.0, help="skip a compile row with less time left"
    )
    p.add_argument(
        "--trainer-row", action=argparse.BooleanOptionalAction, default=True, help="time Trainer.fit"
    )
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale w of the DDIM rows")
    p.add_argument(
        "--seed-block", type=int, default=8, help="samples per noise generator (0: one), as ddpmlab"
    )
    p.add_argument("--memory-batch", type=int, default=64)
    p.add_argument("--memory-image-size", type=int, help="imagenet100_128 image side (default: the config's)")
    p.add_argument("--memory-steps", type=int, default=2, help="timed steps per memory case")
    p.add_argument("--loss-steps", type=int, default=200)
    p.add_argument("--loss-last", type=int, default=50, help="N: the mean of the last N losses is compared")
    p.add_argument("--loss-pool", type=int, default=1024, help="synthetic images the loss runs draw from")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; with ``--smoke``, parsed again with the smoke settings as defaults."""
    p = parser()
    args = p.parse_args(argv)
    if args.smoke:
        p.set_defaults(**SMOKE)
        args = p.parse_args(argv)
    if args.seed_block and args.sample_batch % args.seed_block:
        p.error(f"--sample-batch {args.sample_batch} must be a multiple of --seed-block {args.seed_block}")
    return args


def out_path(args) -> Path | None:
    if args.no_write:
        return None
    if args.out:
        return Path(args.out)
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="gpu_speed_smoke_")) / "gpu_speed"
    return harness.RESULTS / "gpu_speed"


def quiet_diffusers() -> None:
    """diffusers warns about ``.to(torch.bfloat16)`` (from_pretrained's torch_dtype is its way); the
    bf16 rows cast on purpose."""
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        return
    diffusers_logging.set_verbosity_error()


def run_section(name: str, ctx: Context, later: list[str]) -> None:
    """One section, with the reserves of the later ones held back; errors are recorded, not raised."""
    budget = ctx.budget
    budget.keep = 0.0 if ctx.args.smoke else sum(SECTION_RESERVE_S[n] for n in later)
    section = ctx.report.section(name)
    if budget.left() <= 0:
        section["stopped"] = "not started: out of time"
        say(f"[{name}] not started: out of time")
        return
    say(f"== {name} ({budget.left():.0f} s left for it)")
    started = time.perf_counter()
    try:
        MODULES[name].run(ctx)
    except OutOfTime as stop:
        section["stopped"] = str(stop)
        say(f"[{name}] stopped: {stop}")
    except Exception as error:  # noqa: BLE001  (one broken section must not lose the others' numbers)
        section["error"] = f"{type(error).__name__}: {error}"
        section["traceback"] = traceback.format_exc()
        say(f"[{name}] ERROR {section['error']}\n{section['traceback']}")
    section["seconds"] = time.perf_counter() - started
    ctx.report.data["elapsed_s"] = budget.elapsed()
    ctx.report.save()


def start(args, argv: list[str] | None) -> Context:
    """The device, the budget and the report's header (device, versions, settings, targets)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "no_write")}
    meta = {
        "benchmark": "gpu_speed",
        "command": harness.command_line("gpu", argv),
        "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_info(device, args.peak_tflops),
        "versions": harness.versions(),
        "settings": settings,
        "targets": TARGETS,
    }
    renderers = {name: module.markdown for name, module in MODULES.items()}
    report = Report(meta, out_path(args), renderers)
    return Context(args, device, Budget(args.budget_s), report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_diffusers()
    ctx = start(args, argv)
    report, budget = ctx.report, ctx.budget
    say(
        f"device {report.data['device']['name']} ({ctx.device.type}), "
        f"peak {report.data['device']['peak_bf16_tflops']} TFLOP/s; "
        f"torch {torch.__version__}; budget {args.budget_s:g} s; sections {', '.join(args.sections)}"
    )

    def on_term(signum, frame):  # a `timeout` in front of us: stop where we are, keep what was saved
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for index, name in enumerate(args.sections):
            run_section(name, ctx, args.sections[index + 1 :])
    except (Terminated, KeyboardInterrupt) as stop:
        report.data["stopped"] = f"{type(stop).__name__}: {stop}"
        say(f"stopped: {report.data['stopped']}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        report.data["elapsed_s"] = budget.elapsed()
        report.save()
    if report.out is not None:
        say(f"wrote {report.out.with_suffix('.json')} and {report.out.with_suffix('.md')}")
    sections = report.data["sections"].values()
    errors = [s for s in sections if s.get("error") or any("error" in row for row in s["rows"])]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
