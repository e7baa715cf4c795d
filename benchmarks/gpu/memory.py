"""GPU benchmark section ``memory``: imagenet100_128 at batch 64, with and without gradient checkpointing.

For each case, a fresh model and optimizer (bf16 autocast, channels_last, cudnn.benchmark, fused AdamW,
EMA, eager) run training steps: the peak GPU memory allocated and reserved over two steps (the second
holds the AdamW state too), the bytes of activations autograd saves for backward (counted by
saved-tensor hooks, so on any device), and the time per step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from benchmarks.gpu.common import (
    NUM_CLASSES,
    Speedups,
    build_ours,
    free_memory,
    image_size,
    load,
    say,
    synthetic_images,
)
from benchmarks.gpu.report import Context
from benchmarks.gpu.train_step import TrainRow
from ddpmlab.models import count_parameters

CONFIG = "imagenet100_128"


@contextlib.contextmanager
def saved_activation_bytes(model: nn.Module):
    """Counts the bytes of the distinct storages autograd saves for backward (parameters excluded); with
    non-reentrant checkpointing, what a checkpointed stage saves is hidden by its own hooks, as it should."""
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def peak_memory(device: torch.device, baseline: int) -> dict:
    """Peak allocated / reserved GiB since the last reset (None on the CPU)."""
    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        "baseline_allocated_gib": baseline / 2**30,
    }


def memory_case(ctx: Context, checkpointing: bool) -> dict:
    """Fresh model and optimizer; peak memory over two steps (the second holds the AdamW state too)."""
    args, device = ctx.args, ctx.device
    overrides = ("model.gradient_checkpointing=true",) if checkpointing else ()
    torch.manual_seed(args.seed)
    net = build_ours(CONFIG, args, overrides)
    speedups = Speedups(tf32=True, bf16=True, channels_last=True, cudnn_benchmark=True, fused_adamw=True)
    size = image_size(CONFIG, args, load(CONFIG, args))
    free_memory(device)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = TrainRow("memory", speedups.describe(), net, speedups, ctx, args.lr, CONFIG)
    x0 = synthetic_images(args.memory_batch, size, args.seed, device)
    labels = torch.randint(0, NUM_CLASSES[CONFIG], (args.memory_batch,), device=device)
    row.activate()
    with saved_activation_bytes(row.model) as storages:
        row.step(x0, labels)
    saved = sum(storages.values())
    first = row.timed_steps(x0, 1, labels)
    result = {
        "key": "checkpointing" if checkpointing else "no_checkpointing",
        "gradient_checkpointing": checkpointing,
        "parameters": count_parameters(row.model),
        "saved_activations_gib": saved / 2**30,
        **peak_memory(device, baseline),
    }
    seconds = row.timed_steps(x0, args.memory_steps, labels) / args.memory_steps
    result.update({"step_s": seconds, "images_per_s": args.memory_batch / seconds, "second_step_s": first})
    return result


def run(ctx: Context) -> None:
    args = ctx.args
    ctx.start(
        "memory",
        config=CONFIG,
        batch=args.memory_batch,
        image_size=image_size(CONFIG, args, load(CONFIG, args)),
        settings="bf16 autocast + channels_last + cudnn.benchmark + fused AdamW + EMA, eager",
        peak="torch.cuda.max_memory_allocated over two training steps from a fresh model",
    )
    for checkpointing in (False, True):
        ctx.budget.need(5 if ctx.device.type == "cuda" else 0, "memory case")
        row = memory_case(ctx, checkpointing)
        free_memory(ctx.device)
        peak = row["peak_allocated_gib"]
        say(
            f"[memory] gradient_checkpointing={checkpointing}: peak allocated "
            f"{'n/a (CPU)' if peak is None else f'{peak:.2f} GiB'}, saved activations "
            f"{row['saved_activations_gib']:.3f} GiB, {row['step_s']:.3f} s/step"
        )
        ctx.report.add_row("memory", row)


def markdown(section: dict) -> list[str]:
    lines = [
        "| gradient_checkpointing | peak allocated GiB | peak reserved GiB | saved activations GiB | "
        "s/step | img/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in section["rows"]:
        peak = "n/a" if r["peak_allocated_gib"] is None else f"{r['peak_allocated_gib']:.2f}"
        reserved = "n/a" if r["peak_reserved_gib"] is None else f"{r['peak_reserved_gib']:.2f}"
        lines.append(
            f"| {r['gradient_checkpointing']} | {peak} | {reserved} | {r['saved_activations_gib']:.3f} | "
            f"{r['step_s']:.3f} | {r['images_per_s']:.1f} |"
        )
    return lines
