"""GPU benchmark section ``train``: training images/s per speed-up, MFU, ours against diffusers.

One row per speed-up, each added to the previous row's settings: fp32 with TF32 off, + TF32, + bf16
autocast, + channels_last, + cudnn.benchmark, + fused AdamW, + torch.compile; then diffusers' twin in
fp32 and at its best settings (bf16 autocast, SDPA attention, TF32, cudnn.benchmark, fused AdamW). All
rows live in one process and are timed in interleaved rounds (order rotating, rounds filling
``--round-seconds``); the step is :class:`~benchmarks.gpu.train_step.TrainRow`'s. Then the library's own
``Trainer.fit`` as a user runs it (bf16, compile, fused AdamW), timed on its own. Reported per row:
images/s, ms/step, TFLOP/s and MFU (each model's own FLOPs), warm-up and compile time; the summary
compares our best row with diffusers' best, the ratio paired by round.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn

from benchmarks import harness
from benchmarks.gpu.common import (
    TARGETS,
    Speedups,
    build_ours,
    free_memory,
    load,
    say,
    set_flags,
    synthetic_images,
)
from benchmarks.gpu.denoisers import DiffusersDenoiser
from benchmarks.gpu.report import Context, met, pct
from benchmarks.gpu.train_step import TrainRow, steps_per_round
from ddpmlab.config import TrainConfig
from ddpmlab.data.batches import SampledBatches
from ddpmlab.models import count_parameters
from ddpmlab.runs import build_diffusion


def train_specs() -> list[tuple[str, str, str, Speedups]]:
    """(key, label, contestant, settings) of every training row; ours add one speed-up per row."""
    chain = [
        ("fp32", "ours fp32 (TF32 off)", {}),
        ("tf32", "ours + TF32", {"tf32": True}),
        ("bf16", "ours + bf16 autocast", {"bf16": True}),
        ("channels_last", "ours + channels_last", {"channels_last": True}),
        ("cudnn_benchmark", "ours + cudnn.benchmark", {"cudnn_benchmark": True}),
        ("fused_adamw", "ours + fused AdamW", {"fused_adamw": True}),
        ("compile", "ours + torch.compile", {"compile": True}),
    ]
    specs, speedups = [], Speedups()
    for key, label, change in chain:
        speedups = replace(speedups, **change)
        specs.append((f"ours_{key}", label, "ours", speedups))
    best = Speedups(tf32=True, bf16=True, cudnn_benchmark=True, fused_adamw=True)
    specs.append(("diffusers_fp32", "diffusers fp32 (TF32 off)", "diffusers", Speedups()))
    label = "diffusers best: bf16 autocast, SDPA, TF32, cudnn.benchmark, fused AdamW"
    specs.append(("diffusers_best", label, "diffusers", best))
    return specs


def build_train_net(contestant: str, args) -> nn.Module:
    torch.manual_seed(args.seed)
    ours = build_ours("cifar10", args)
    if contestant == "ours":
        return ours
    return DiffusersDenoiser(harness.diffusers_twin(ours, args.image_size))


def speed_fields(ctx: Context, step_seconds: list[float], contestant: str) -> dict:
    """Images/s, ms/step (medians over rounds), images/s by round, TFLOP/s and MFU of a row."""
    batch = ctx.args.batch
    median = statistics.median(step_seconds)
    tflops, mfu = ctx.rates(batch / median, ctx.flops("cifar10", contestant, True))
    return {
        "median_images_per_s": batch / median,
        "median_step_ms": median * 1e3,
        "images_per_s_by_round": [batch / s for s in step_seconds],
        "tflops": tflops,
        "mfu": mfu,
    }


def train_row_result(row: TrainRow, ctx: Context, contestant: str) -> dict:
    result = {
        "key": row.key,
        "label": row.label,
        "contestant": contestant,
        "settings": asdict(row.speedups),
        "parameters": count_parameters(row.model),
        **speed_fields(ctx, row.step_seconds, contestant),
        "first_step_s": row.first_step_s,
        "warmup_s": row.warmup_s,
    }
    if row.speedups.compile:
        result["compile_s"] = row.first_step_s - statistics.median(row.step_seconds)
    if contestant == "diffusers":
        processors = {type(m.processor).__name__ for m in row.model.modules() if hasattr(m, "processor")}
        result["attention_processors"] = sorted(processors)  # AttnProcessor2_0: SDPA
    return result


def describe_train(row: dict) -> str:
    mfu = f", MFU {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else ""
    compiled = f", compile {row['compile_s']:.1f} s" if "compile_s" in row else ""
    return (
        f"{row['median_images_per_s']:.1f} img/s ({row['median_step_ms']:.2f} ms/step, "
        f"{row['tflops']:.2f} TFLOP/s{mfu}{compiled})"
    )


def start_train_rows(ctx: Context, x0: torch.Tensor) -> list[tuple[TrainRow, str]]:
    """Build and warm up every row the budget allows (a compile row needs --compile-reserve-s)."""
    args, rows = ctx.args, []
    for key, label, contestant, speedups in train_specs():
        reason = ctx.compile_skip_reason() if speedups.compile else None
        if reason is None and ctx.budget.left() <= 0:
            reason = "out of time"
        if reason is not None:
            ctx.skip("train", key, label, reason)
            continue
        try:
            row = TrainRow(key, label, build_train_net(contestant, args), speedups, ctx, args.lr)
            per_step = row.warm_up(x0, args.warmup + (2 if speedups.compile else 0))
        except Exception as error:  # noqa: BLE001  (e.g. a failed compile: the other rows still run)
            ctx.failed("train", key, label, error)
            continue
        row.round_steps = steps_per_round(per_step, args)
        say(
            f"[train] {label}: warm-up {row.warmup_s:.1f} s (first step {row.first_step_s:.2f} s), "
            f"~{per_step * 1e3:.2f} ms/step, {row.round_steps} steps per round"
        )
        rows.append((row, contestant))
    return rows


def run_train_rounds(ctx: Context, rows: list[tuple[TrainRow, str]], x0: torch.Tensor) -> None:
    """Interleaved rounds (order rotating); stops early, after a whole round, when time is up. The
    section's rows are rewritten after every round, so a run cut short keeps the rounds done."""
    section = ctx.report.section("train")
    untimed = list(section["rows"])  # the skipped and failed rows
    for r in range(ctx.args.rounds):
        if r > 0 and ctx.budget.left() <= 0:
            say(f"[train] out of time after {r} rounds")
            break
        for row, _ in harness.rotated(rows, r):
            row.timed_round(x0, row.round_steps)
        say(
            f"[train] round {r + 1}: "
            + ", ".join(f"{row.key} {ctx.args.batch / row.step_seconds[-1]:.0f}" for row, _ in rows)
            + " img/s"
        )
        section["rows"] = untimed + [train_row_result(row, ctx, contestant) for row, contestant in rows]
        section["summary"] = train_summary(section["rows"])
        ctx.report.save()


def train_summary(results: list[dict]) -> dict:
    """Best ours row against diffusers' best row, with the ratio paired by round."""
    results = [row for row in results if "skipped" not in row and row["key"] != "trainer"]
    by_key = {row["key"]: row for row in results}
    ours = [row for row in results if row["contestant"] == "ours"]
    summary: dict[str, Any] = {}
    if not ours:
        return summary
    best = max(ours, key=lambda row: row["median_images_per_s"])
    summary["best_ours"] = best["key"]
    summary["best_ours_images_per_s"] = best["median_images_per_s"]
    summary["best_ours_mfu"] = best["mfu"]
    # the issue's count: 4,000 img/s ~ 145 TFLOP/s, i.e. 3 x 12.1 GFLOP per image and step
    issue_flops = 3 * TARGETS["issue_forward_gflop_per_image"] * 1e9
    summary["best_ours_tflops_by_issue_count"] = best["median_images_per_s"] * issue_flops / 1e12
    summary["target_images_per_s"] = TARGETS["train_images_per_s"]
    summary["images_per_s_met"] = best["median_images_per_s"] >= TARGETS["train_images_per_s"]
    reference = by_key.get("diffusers_best")
    if reference:
        pairs = zip(best["images_per_s_by_round"], reference["images_per_s_by_round"])
        ratios = [a / b for a, b in pairs]
        summary["ratio_vs_diffusers_best"] = statistics.median(ratios)
        summary["ratio_by_round"] = ratios
        summary["target_ratio"] = TARGETS["train_ratio_vs_diffusers"]
        summary["ratio_met"] = summary["ratio_vs_diffusers_best"] >= TARGETS["train_ratio_vs_diffusers"]
    return summary


def shipped_trainer(ctx: Context, x0: torch.Tensor, compile_on: bool):
    """The library's Trainer as a user runs it: precision bf16, compile, fused AdamW on CUDA, EMA,
    clipping, a loss read back every step; data: the fixed batch, already on the device."""
    from ddpmlab.training.trainer import Trainer

    args = ctx.args
    config = TrainConfig(
        steps=10**9,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=0,
        lr_schedule="constant",
        ema_decay=0.9999,
        precision="bf16",
        compile=compile_on,
        device=str(ctx.device),
        log_every=10**9,
        checkpoint_every=None,
        tensorboard=False,
        progress=False,
        seed=args.seed,
    )
    batches = SampledBatches(lambda n, generator, return_labels=True: (x0, None), args.batch, args.seed)
    torch.manual_seed(args.seed)
    return Trainer(build_ours("cifar10", args), build_diffusion(load("cifar10", args)), batches, config)


def run_trainer_row(ctx: Context, x0: torch.Tensor) -> None:
    """The library's own loop, ``Trainer.fit``: warmed up, then ``--rounds`` rounds of steps."""
    args = ctx.args
    key, label = "trainer", "ddpmlab Trainer.fit (bf16, compile, fused AdamW; as shipped)"
    compile_on = args.compile and args.compile_backend == "inductor"
    if ctx.budget.left() <= 0:
        return ctx.skip("train", key, label, "out of time")
    if compile_on and ctx.budget.left() < args.compile_reserve_s:
        return ctx.skip(
            "train", key, label, f"less than --compile-reserve-s {args.compile_reserve_s:g} s left"
        )
    set_flags(False, False)  # the platform's defaults: the Trainer sets no flags
    trainer = shipped_trainer(ctx, x0, compile_on)

    def fit_seconds(until_step: int) -> float:
        return harness.timed(lambda: trainer.fit(until_step=until_step), 1, ctx.device)

    warm = args.warmup + 2
    first = fit_seconds(warm)
    steps = steps_per_round(fit_seconds(warm + args.min_steps) / args.min_steps, args)
    seconds = [fit_seconds(trainer.state.step + steps) / steps for _ in range(args.rounds)]
    row = {
        "key": key,
        "label": label,
        "contestant": "ours",
        "settings": {"precision": "bf16", "compile": compile_on},
        "parameters": count_parameters(trainer.model),
        **speed_fields(ctx, seconds, "ours"),
        "first_step_s": first,
        "warmup_s": first,
        "steps_per_round": steps,
    }
    say(f"[train] {label}: {describe_train(row)}")
    ctx.report.add_row("train", row)


def run(ctx: Context) -> None:
    args = ctx.args
    section = ctx.start(
        "train",
        config="cifar10",
        batch=args.batch,
        image_size=args.image_size,
        lr=args.lr,
        step="training_loss + backward + clip_grad_norm_(1.0) + AdamW + EMA(0.9999)",
        data="one fixed synthetic batch on the device",
        rounds=args.rounds,
    )
    x0 = synthetic_images(args.batch, args.image_size, args.seed, ctx.device)
    rows = start_train_rows(ctx, x0)
    if rows:
        run_train_rounds(ctx, rows, x0)
    for result in section["rows"]:
        if "skipped" not in result:
            say(f"[train] {result['label']}: {describe_train(result)}")
    section["summary"] = train_summary(section["rows"])
    say(f"[train] summary: {json.dumps(section['summary'])}")
    ctx.report.save()
    del rows
    free_memory(ctx.device)
    if args.trainer_row:
        run_trainer_row(ctx, x0)
        trainer = next((r for r in section["rows"] if r["key"] == "trainer" and "skipped" not in r), None)
        if trainer:  # not interleaved with the others: reported beside the summary, not in it
            section["summary"]["trainer_images_per_s"] = trainer["median_images_per_s"]
        ctx.report.save()
    free_memory(ctx.device)


def markdown(section: dict) -> list[str]:
    lines = ["| row | img/s | ms/step | TFLOP/s | MFU | vs ours row above | warm-up s | compile s |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    previous = None
    for r in section["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['label']} | skipped: {r['skipped']} | | | | | | |")
            continue
        chained = r["contestant"] == "ours" and r["key"].startswith("ours_")
        gain = f"{r['median_images_per_s'] / previous:.2f}x" if chained and previous else ""
        compiled = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        lines.append(
            f"| {r['label']} | {r['median_images_per_s']:.1f} | {r['median_step_ms']:.2f} | "
            f"{r['tflops']:.2f} | {pct(r['mfu'])} | {gain} | {r['warmup_s']:.1f} | {compiled} |"
        )
        previous = r["median_images_per_s"] if chained else previous
    return lines + summary_lines(section.get("summary") or {})


def summary_lines(s: dict) -> list[str]:
    if not s:
        return []
    lines = [
        "",
        f"Best ours: {s['best_ours']}, {s['best_ours_images_per_s']:.0f} img/s (MFU "
        f"{pct(s['best_ours_mfu'])}; {s['best_ours_tflops_by_issue_count']:.0f} TFLOP/s by the issue's "
        f"3 x 12.1 GFLOP per image); target >= {TARGETS['train_images_per_s']:.0f} img/s: "
        f"{met(s.get('images_per_s_met'))}.",
        "TFLOP/s and MFU count each model's own FLOPs (flops section): ours does fewer for the same "
        "function (its upsampling), so compare the models by img/s.",
    ]
    if "ratio_vs_diffusers_best" in s:
        lines.append(
            "Ours / diffusers best (median of per-round ratios): "
            f"**{s['ratio_vs_diffusers_best']:.2f}x**; "
            f"target >= {TARGETS['train_ratio_vs_diffusers']}: {met(s.get('ratio_met'))}."
        )
    return lines
