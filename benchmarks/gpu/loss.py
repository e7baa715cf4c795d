"""GPU benchmark section ``loss``: does the fastest setting train as well as fp32?

The same seed (initial weights, batches, t, noise, dropout) and number of steps (``--loss-steps``) in
fp32 with TF32 off and at the fastest setting (TF32, bf16 autocast, channels_last, cudnn.benchmark,
fused AdamW, torch.compile), on synthetic smooth images (no CIFAR-10 on the GPU machine); then the
fastest setting with another seed, as the scale of run-to-run noise. Reported: the mean of the last
``--loss-last`` losses of each run, and whether fastest - fp32 lies within 3 standard errors.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, replace

import torch

from benchmarks.gpu.common import OutOfTime, Speedups, build_ours, free_memory, say, synthetic_images
from benchmarks.gpu.report import Context, met
from benchmarks.gpu.train_step import TrainRow


def fastest_speedups(args) -> Speedups:
    return Speedups(True, True, True, True, True, compile=args.compile)


def loss_curve(ctx: Context, speedups: Speedups, seed: int) -> list[float]:
    """Per-step losses of ``--loss-steps`` steps from the seed's initial weights, batches, t and noise."""
    args = ctx.args
    torch.manual_seed(seed)
    model = build_ours("cifar10", args)
    row = TrainRow("loss", speedups.describe(), model, speedups, ctx, args.lr)
    row.generator.manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks (eager rows draw the same ones)
    pool = synthetic_images(args.loss_pool, args.image_size, 1234, ctx.device)
    order = torch.Generator().manual_seed(seed)
    row.activate()
    losses = []
    for step in range(args.loss_steps):
        if step % 10 == 0 and step and ctx.budget.left() <= 0:
            raise OutOfTime(f"loss run {speedups.describe()} stopped at step {step}")
        index = torch.randint(0, args.loss_pool, (args.batch,), generator=order)
        losses.append(row.step(pool[index.to(ctx.device)]))
    return torch.stack(losses).float().cpu().tolist()


def tail_stats(losses: list[float], last: int) -> dict:
    tail = losses[-last:]
    std = statistics.stdev(tail) if len(tail) > 1 else 0.0
    return {
        "mean_last": statistics.fmean(tail),
        "std_last": std,
        "se_last": std / len(tail) ** 0.5,
        "first": losses[0],
        "final": losses[-1],
    }


def run(ctx: Context) -> None:
    args = ctx.args
    section = ctx.start(
        "loss",
        config="cifar10",
        batch=args.batch,
        steps=args.loss_steps,
        last=args.loss_last,
        lr=args.lr,
        data=f"{args.loss_pool} synthetic smooth images (fixed seed), batches by seed",
    )
    fastest = fastest_speedups(args)
    if fastest.compile and ctx.budget.left() < args.compile_reserve_s:
        fastest = replace(fastest, compile=False)
        section["note"] = f"compile left out: less than --compile-reserve-s {args.compile_reserve_s:g} s left"
    runs = [
        ("fp32", Speedups(), args.seed),
        ("fastest", fastest, args.seed),
        ("fastest_seed2", fastest, args.seed + 1),
    ]
    stats = {}
    for key, speedups, seed in runs:
        started = time.perf_counter()
        losses = loss_curve(ctx, speedups, seed)
        stats[key] = tail_stats(losses, args.loss_last)
        row = {
            "key": key,
            "settings": asdict(speedups),
            "label": speedups.describe(),
            "seed": seed,
            "seconds": time.perf_counter() - started,
            **stats[key],
            "losses": losses,
        }
        say(
            f"[loss] {key} ({speedups.describe()}, seed {seed}): mean of last {args.loss_last} "
            f"{stats[key]['mean_last']:.5f} +- {stats[key]['se_last']:.5f} ({row['seconds']:.1f} s)"
        )
        ctx.report.add_row("loss", row)
        free_memory(ctx.device)
    section["summary"] = loss_summary(stats)
    say(f"[loss] summary: {json.dumps(section['summary'])}")
    ctx.report.save()


def loss_summary(stats: dict) -> dict:
    """fastest - fp32 (same seed) against 3 standard errors of that difference, and the seed-to-seed
    difference of the fastest setting as a second scale of the noise."""
    a, b = stats["fp32"], stats["fastest"]
    difference = b["mean_last"] - a["mean_last"]
    se = (a["se_last"] ** 2 + b["se_last"] ** 2) ** 0.5
    summary = {"difference_fastest_minus_fp32": difference, "se_of_difference": se}
    summary["within_3_se"] = abs(difference) <= 3 * se
    if "fastest_seed2" in stats:
        summary["seed_to_seed_difference"] = stats["fastest_seed2"]["mean_last"] - b["mean_last"]
    return summary


def markdown(section: dict) -> list[str]:
    lines = [
        "| run | settings | seed | first | mean of last N | std | s.e. | s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in section["rows"]:
        lines.append(
            f"| {r['key']} | {r['label']} | {r['seed']} | {r['first']:.4f} | {r['mean_last']:.5f} | "
            f"{r['std_last']:.5f} | {r['se_last']:.5f} | {r['seconds']:.1f} |"
        )
    s = section.get("summary") or {}
    if s:
        seed = s.get("seed_to_seed_difference")
        lines += [
            "",
            f"fastest - fp32 (same seed): {s['difference_fastest_minus_fp32']:+.5f}, 3 s.e. = "
            f"{3 * s['se_of_difference']:.5f}: within noise {met(s['within_3_se'])}"
            + (f"; seed-to-seed difference of the fastest setting {seed:+.5f}." if seed is not None else "."),
        ]
    return lines
