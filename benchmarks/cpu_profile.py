"""Where the CPU time goes: ddpmlab's UNet and diffusers' UNet2DModel, same network, by kind of operation.

Run by hand (not a test; diffusers is a dev-only dependency):

    .venv/bin/python -m benchmarks profile              # ~2 min on 2 idle cores, writes results/cpu_profile.*
    .venv/bin/python -m benchmarks profile --no-write   # your machine, without touching the committed results

Why it exists: the speed benchmarks (``training``, ``sampling``) compare the two implementations of one
network and report a ratio; this one shows what bounds that ratio. Both networks do their dense work,
convolutions and matrix products, in the same oneDNN / BLAS kernels, so a faster implementation can only
win by doing fewer FLOPs for the same function or on the rest: normalisation, activations, attention,
concatenations, copies, random numbers, the optimizer and the sampling loop itself. The report gives,
for a training step and for one sampling step's forward pass:

- the time per step of each kind of operation (``torch.profiler`` self CPU time of every aten op, grouped),
  for ours and for diffusers;
- the **ceiling**: diffusers' whole time over our dense time (convolutions + matrix products: ours runs
  its 1x1 convolutions as matrix products), i.e. the ratio ours would reach if everything else cost
  nothing; and what our other time would have to fall to for a target ratio (1.2x training, 1.3x
  sampling: the targets of the project's CPU speed issues);
- the dense FLOPs (counted by ``torch.utils.flop_counter``) over the dense time, against a large square
  matrix product on the same cores, the machine's practical float32 roof;
- the sampling loop's own cost per step (ours vs diffusers' schedulers) with a stand-in network that
  costs one multiplication, so that it is not hidden by the network's time.

Configurations: the training step is unet_speed.py's (forward + MSE + backward + AdamW, train mode,
dropout 0.1, batch ``--batch``); the sampling forward is sampling_speed.py's (eval mode, inference mode,
the same weights in both networks, batch ``--batch`` and, for classifier-free guidance, twice that:
both branches in one call). The profiler adds a little time per op to both contestants alike.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import harness, sampling_speed
from benchmarks.harness import MNIST_SHAPE, NULL_CLASS, NUM_CLASSES
from benchmarks.unet_speed import Contestant, matched_pair, training_batch

TARGETS = {"training": 1.2, "sampling": 1.3}

# Kinds of operation, matched against aten op names in this order (first match wins).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("convolutions", ("convolution", "conv2d")),
    (
        "matrix products (linear layers, 1x1 convs)",
        ("::mm", "::bmm", "addmm", "baddbmm", "matmul", "::linear", "mmbackward"),
    ),
    ("attention kernel", ("scaled_dot_product", "scaleddotproduct", "flash_attention")),
    ("group norm", ("group_norm", "groupnorm")),
    ("SiLU", ("silu",)),
    ("random numbers (dropout)", ("uniform_", "bernoulli", "normal_", "random_")),
    (
        "concatenation and copies",
        ("::cat", "catbackward", "copy_", "_to_copy", "clone", "contiguous", "upsample", "::pad"),
    ),
]
DENSE = ("convolutions", "matrix products (linear layers, 1x1 convs)")
OTHER = "elementwise and the rest (AdamW, adds, ...)"


def category(op_name: str) -> str:
    """The kind of operation an aten op (or an autograd node of one) belongs to."""
    name = op_name.lower()
    for kind, patterns in CATEGORIES:
        if any(pattern in name for pattern in patterns):
            return kind
    return OTHER


def profile_ms_per_step(step: Callable[[], object], steps: int) -> dict[str, float]:
    """Milliseconds per call of ``step`` spent in each kind of operation (profiler self CPU time)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {kind: 0.0 for kind, _ in CATEGORIES} | {OTHER: 0.0}
    for event in prof.key_averages():
        totals[category(event.key)] += event.self_cpu_time_total / 1000.0 / steps
    return totals


def dense_gflop(step: Callable[[], object]) -> float:
    """GFLOP of the convolutions and matrix products (forward and, where it runs, backward) of one call
    of ``step`` (the attention kernel's FLOPs are not included)."""
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_flop_counts().get("Global", {})
    return sum(count for op, count in flops.items() if "convolution" in str(op) or "mm" in str(op)) / 1e9


def matmul_roof_gflops(size: int = 1536, repeats: int = 5) -> float:
    """Float32 GFLOP/s of a large square matrix product on this machine's torch threads (best of runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(harness.timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def compare(
    name: str, steps: dict[str, Callable[[], object]], warmup: int, timed: int, target: float
) -> dict:
    """Profile the steps of both contestants and compute the ceiling of the ratio ours / diffusers."""
    harness.warm_up(steps.values(), warmup)
    # Interleave: ours, diffusers, ours, diffusers, ...: load from other processes falls on both alike.
    sums: dict[str, dict[str, float]] = {who: {} for who in steps}
    for _ in range(timed):
        for who, step in steps.items():
            for kind, ms in profile_ms_per_step(step, 1).items():
                sums[who][kind] = sums[who].get(kind, 0.0) + ms / timed
    ours, theirs = sums["ddpmlab"], sums["diffusers"]
    ours_total, theirs_total = sum(ours.values()), sum(theirs.values())
    dense_ms = {who: sum(sums[who][kind] for kind in DENSE) for who in steps}
    gflop = {who: dense_gflop(step) for who, step in steps.items()}
    return {
        "name": name,
        "ms_per_step": sums,
        "total_ms": {"ddpmlab": ours_total, "diffusers": theirs_total},
        "ratio_ours_over_diffusers": theirs_total / ours_total,
        "dense_ms": dense_ms,
        "ceiling_if_only_dense_ops_cost": theirs_total / dense_ms["ddpmlab"],
        "target": target,
        "our_other_ms": ours_total - dense_ms["ddpmlab"],
        "our_other_ms_needed_for_target": theirs_total / target - dense_ms["ddpmlab"],
        "dense_gflop": gflop,
        "dense_gflops": {who: gflop[who] / (dense_ms[who] / 1000.0) for who in steps},
    }


def training_section(args) -> dict:
    """One training step of unet_speed.py's contestants (different initial weights: timing only)."""
    torch.manual_seed(0)
    batch = training_batch(args.batch)
    ours_net, theirs_net = matched_pair(args.base)
    ours = Contestant("ddpmlab", ours_net, "ours", batch, channels_last=False)
    theirs = Contestant("diffusers", theirs_net, "diffusers", batch, channels_last=False)
    steps = {"ddpmlab": ours.step, "diffusers": theirs.step}
    return compare(f"training step, batch {args.batch}", steps, args.warmup, args.steps, TARGETS["training"])


def sampling_section(args, ours: nn.Module, theirs: nn.Module, guided: bool) -> dict:
    """One network call of a sampling step (both CFG branches in one call when ``guided``)."""
    batch = 2 * args.batch if guided else args.batch
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *MNIST_SHAPE, generator=g)
    labels = torch.arange(batch) % NUM_CLASSES
    if guided:
        labels[args.batch :] = NULL_CLASS
    t = torch.full((batch,), 500, dtype=torch.long)

    def ours_step() -> torch.Tensor:
        with torch.inference_mode():
            return ours(x, t, labels)

    def theirs_step() -> torch.Tensor:
        with torch.inference_mode():
            return theirs(x, t, class_labels=labels).sample

    steps = {"ddpmlab": ours_step, "diffusers": theirs_step}
    name = f"sampling step forward, batch {args.batch}" + (f" + CFG (one call of {batch})" if guided else "")
    return compare(name, steps, args.warmup, args.steps, TARGETS["sampling"])


class OneMultiply(nn.Module):
    """A stand-in network costing one elementwise product, in both calling conventions."""

    def forward(self, x: torch.Tensor, t, cond=None, class_labels=None):
        out = x * 0.5
        return SimpleNamespace(sample=out) if class_labels is not None else out


def loop_ms_per_step(kind: str, num_steps: int, timed: int, guidance: float | None, labels, seed_block: int):
    """Milliseconds per step of our loop and diffusers' over the first ``timed`` steps, with
    :class:`OneMultiply` as the network (ours warmed up for 5 steps first)."""
    network = OneMultiply()
    sampler = sampling_speed.ours_sampler(kind, num_steps)
    scheduler = harness.diffusers_scheduler(kind, num_steps)
    loops = {
        "ddpmlab": lambda: sampling_speed.ours_loop(sampler, network, labels, guidance, 0, seed_block, timed),
        "diffusers": lambda: sampling_speed.diffusers_loop(scheduler, network, labels, guidance, 0, timed),
    }
    sampling_speed.ours_loop(sampler, network, labels, guidance, 0, seed_block, 5)  # warm-up
    return {who: harness.timed(loop) * 1000 / timed for who, loop in loops.items()}


def loop_overhead_section(args) -> dict:
    """Milliseconds per step of the sampling loops themselves (the network costs one multiply)."""
    labels = torch.arange(args.batch) % NUM_CLASSES
    seed_block = 8 if args.batch % 8 == 0 else 0  # as `ddpmlab sample` draws noise: one generator per 8
    result = {}
    for kind, num_steps, timed in (("ddpm", 1000, 200), ("ddim", 50, 50)):
        for guidance in (None, 3.0):
            row = f"{kind.upper()}-{num_steps}" + (" + CFG" if guidance else "")
            result[row] = loop_ms_per_step(kind, num_steps, timed, guidance, labels, seed_block)
    return result


def run(args) -> dict:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    ours, theirs, _ = sampling_speed.build_models(args.base, seed=0)
    report = {
        "machine": {
            "cpu": harness.cpu_name(),
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": harness.versions()["diffusers"],
            "matmul_roof_gflops": matmul_roof_gflops(),
        },
        "settings": {"base_channels": args.base, "batch": args.batch, "steps": args.steps},
        "sections": [],
    }
    print(f"{report['machine']['cpu']}, {report['machine']['threads']} threads, torch {torch.__version__}")
    for section in (
        lambda: training_section(args),
        lambda: sampling_section(args, ours, theirs, guided=False),
        lambda: sampling_section(args, ours, theirs, guided=True),
    ):
        result = section()
        report["sections"].append(result)
        print(
            f"{result['name']}: ours {result['total_ms']['ddpmlab']:.1f} ms, diffusers "
            f"{result['total_ms']['diffusers']:.1f} ms, ratio {result['ratio_ours_over_diffusers']:.2f}x, "
            f"ceiling {result['ceiling_if_only_dense_ops_cost']:.2f}x"
        )
    report["loop_overhead_ms_per_step"] = loop_overhead_section(args)
    return report


def markdown(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# Where the CPU time goes: ddpmlab vs diffusers, same network",
        "",
        f"{machine['cpu']}, {machine['threads']} threads, Python {machine['python']}, "
        f"torch {machine['torch']}, diffusers {machine['diffusers']}; float32. "
        "Network: the MNIST benchmark configuration (1x28x28, "
        f"base {settings['base_channels']}, mults 1,2,2, 2 blocks per level, attention at 7x7 + middle). "
        f"Profiler self CPU time per aten op, grouped; mean of {settings['steps']} profiled calls per "
        "contestant, interleaved. Produced by `python -m benchmarks profile` (benchmarks/cpu_profile.py).",
        "",
        f"Large float32 matrix product on these cores: **{machine['matmul_roof_gflops']:.0f} GFLOP/s** "
        "(the practical roof for the dense work below). Dense work: convolutions and matrix products "
        "(ours runs its 1x1 convolutions as matrix products, diffusers as convolutions).",
    ]
    for section in report["sections"]:
        ours, theirs = section["ms_per_step"]["ddpmlab"], section["ms_per_step"]["diffusers"]
        lines += ["", f"## {section['name']}", ""]
        lines += ["| kind of operation | ddpmlab ms | diffusers ms |", "|---|---:|---:|"]
        for kind in ours:
            lines.append(f"| {kind} | {ours[kind]:.1f} | {theirs[kind]:.1f} |")
        total = section["total_ms"]
        gflop, gflops, dense = section["dense_gflop"], section["dense_gflops"], section["dense_ms"]
        lines += [
            f"| **total** | **{total['ddpmlab']:.1f}** | **{total['diffusers']:.1f}** |",
            "",
            f"- Dense work: {gflop['ddpmlab']:.2f} GFLOP in {dense['ddpmlab']:.1f} ms (ours: the upsampling "
            f"convolution runs at the input resolution) vs {gflop['diffusers']:.2f} GFLOP in "
            f"{dense['diffusers']:.1f} ms: {gflops['ddpmlab']:.0f} vs {gflops['diffusers']:.0f} GFLOP/s.",
            f"- Ratio ours / diffusers (profiled): **{section['ratio_ours_over_diffusers']:.2f}x**; ceiling "
            "if everything but our dense work cost nothing: "
            f"{section['ceiling_if_only_dense_ops_cost']:.2f}x.",
            f"- For {section['target']}x, the rest of our time would have to fall from "
            f"{section['our_other_ms']:.1f} ms to {section['our_other_ms_needed_for_target']:.1f} ms per "
            f"step (diffusers' rest: {total['diffusers'] - dense['diffusers']:.1f} ms).",
        ]
    lines += [
        "",
        "## The sampling loops themselves (stand-in network: one multiply)",
        "",
        "| loop | ddpmlab ms/step | diffusers ms/step |",
        "|---|---:|---:|",
    ]
    for row, ms in report["loop_overhead_ms_per_step"].items():
        lines.append(f"| {row} | {ms['ddpmlab']:.2f} | {ms['diffusers']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=32, help="base channels (32: the MNIST configuration)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per contestant and section")
    parser.add_argument("--steps", type=int, default=5, help="profiled calls per contestant and section")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    harness.add_output_options(parser, "cpu_profile")
    args = parser.parse_args(argv)
    if args.base % 32 or args.base <= 0 or args.batch <= 0 or args.steps <= 0 or args.warmup < 0:
        parser.error("--base must be a positive multiple of 32 (32 groups); --batch, --steps positive")
    report = run(args)
    harness.publish(args, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
