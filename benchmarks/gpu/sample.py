"""GPU benchmark section ``sample``: DDPM-1000 and DDIM-50 + CFG, ours against diffusers, same weights.

256 images (``--sample-batch``): DDPM-1000 with our ``DDPMSampler`` against a DDPMPipeline-style
diffusers loop (``UNet2DModel`` + ``DDPMScheduler.step`` in a Python loop), and DDIM-50 with
classifier-free guidance (w = 3, ``configs/cifar10_cond.yaml``) against the usual batched diffusers CFG
loop (both loops: ``harness``). diffusers' seeded initial weights are copied into ours, and both
networks are checked to agree in fp32 first. Our rows add, one after the other, bf16 autocast,
channels_last, a manual ``torch.cuda.CUDAGraph`` of one denoiser call, and
``torch.compile(mode="reduce-overhead")``: the benchmark-only wrappers of ``denoisers.py``. Rows time a
prefix of the loop (the per-step cost does not depend on t) and extrapolate; the fastest DDPM row is
then also timed over the whole loop (the issue's seconds for 256 images).
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from benchmarks import harness
from benchmarks.gpu.common import (
    NUM_CLASSES,
    TARGETS,
    Speedups,
    build_ours,
    free_memory,
    load,
    say,
    set_flags,
)
from benchmarks.gpu.denoisers import CompiledDenoiser, GraphedDenoiser, PreparedDenoiser
from benchmarks.gpu.report import Context, met, pct
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.runs import build_diffusion
from ddpmlab.samplers import make_sampler


@dataclass
class SampleSpec:
    key: str
    label: str
    contestant: str  # "ours" or "diffusers"
    speedups: Speedups


def sample_specs(prefix: str, full: bool) -> list[SampleSpec]:
    """Rows of one loop; ours add one speed-up per row (``full``: also fp32 rows)."""
    rows = []
    if full:
        rows.append(
            SampleSpec(
                f"{prefix}diffusers_fp32", "diffusers fp32 (TF32 on)", "diffusers", Speedups(tf32=True)
            )
        )
    best = Speedups(tf32=True, bf16=True, cudnn_benchmark=True)
    rows.append(SampleSpec(f"{prefix}diffusers_bf16", "diffusers bf16 weights, SDPA", "diffusers", best))
    chain = [
        ("bf16", "ours + bf16 autocast", {"bf16": True}),
        ("channels_last", "ours + channels_last", {"channels_last": True}),
        ("cuda_graph", "ours + CUDA graph (manual capture)", {"cuda_graph": True}),
        ("compile", "ours + torch.compile reduce-overhead", {"cuda_graph": False, "compile": True}),
    ]
    speedups = Speedups(tf32=True, cudnn_benchmark=True)
    if full:
        rows.append(SampleSpec(f"{prefix}ours_fp32", "ours fp32 (TF32 on)", "ours", speedups))
    for key, label, change in chain:
        speedups = replace(speedups, **change)
        if full or key != "bf16":
            rows.append(SampleSpec(f"{prefix}ours_{key}", label, "ours", speedups))
    return rows


class SampleLoop:
    """One sampling loop (DDPM or DDIM + CFG) with both contestants' models (the same weights)."""

    def __init__(self, ctx: Context, kind: str, guidance: float | None) -> None:
        args = self.args = ctx.args
        self.ctx, self.kind, self.guidance = ctx, kind, guidance
        self.name = "cifar10_cond" if guidance is not None else "cifar10"
        config = load(self.name, args)
        self.num_steps = args.ddpm_steps if kind == "ddpm" else args.ddim_steps
        self.sampler = make_sampler(
            kind, build_diffusion(config), self.num_steps, clip_x0=config.sample.clip_x0
        )
        self.scheduler = harness.diffusers_scheduler(kind, self.num_steps)
        torch.manual_seed(args.seed)
        self.ours = build_ours(self.name, args).eval()
        self.theirs = harness.diffusers_twin(self.ours, args.image_size).eval()
        harness.load_diffusers_weights(self.theirs, self.ours)
        self.ours.to(ctx.device)
        self.theirs.to(ctx.device)
        batch = args.sample_batch
        self.shape = (batch, 3, args.image_size, args.image_size)
        self.labels = (torch.arange(batch, device=ctx.device) % 10) if guidance is not None else None
        self.check = self.same_network()
        self.fastest: tuple[dict, Any] | None = None  # our fastest row so far and its run function

    @property
    def label(self) -> str:
        cfg = f" + CFG w={self.guidance:g}" if self.guidance is not None else ""
        return f"{self.kind.upper()}-{self.num_steps}{cfg}, {self.shape[0]} images"

    def same_network(self) -> dict:
        """Both networks in fp32 (TF32 off) on the same input: they must agree to float rounding."""
        set_flags(False, False)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, *self.shape[1:], generator=g).to(self.ctx.device)
        t = torch.tensor([10, 900], device=self.ctx.device)
        cond = None if self.labels is None else self.labels[:2]
        check = harness.compare_outputs(self.ours, self.theirs, x, t, cond)
        harness.require_same_work(check, {"max_abs_diff": 1e-3 * max(1.0, check["max_abs_output"])})
        return check

    def runner(self, spec: SampleSpec):
        """A function ``run(steps, seed)`` of the row (and the denoiser, for capture and compile times)."""
        if spec.contestant == "diffusers":
            bf16 = spec.speedups.bf16
            unet = copy.deepcopy(self.theirs).to(torch.bfloat16) if bf16 else self.theirs
            dtype = torch.bfloat16 if bf16 else torch.float32
            return (lambda steps, seed: self.diffusers_run(unet, dtype, steps, seed)), None
        denoiser = self.our_denoiser(spec.speedups)
        return (lambda steps, seed: self.ours_run(denoiser, steps, seed)), denoiser

    def our_denoiser(self, s: Speedups) -> nn.Module:
        """Our model (a copy) in the row's benchmark-only wrappers; CFG inside a captured graph."""
        device = self.ctx.device
        model = copy.deepcopy(self.ours)
        if s.channels_last:
            model = model.to(memory_format=torch.channels_last)
        denoiser: nn.Module = PreparedDenoiser(model, s.bf16, s.channels_last, device.type)
        if s.compile:
            mode = "reduce-overhead" if device.type == "cuda" else None
            denoiser = CompiledDenoiser(denoiser, self.args.compile_backend, mode)
        if self.guidance is not None:
            denoiser = ClassifierFreeGuidance(
                denoiser, self.guidance, self.ours.condition_encoder.null_condition
            )
        if s.cuda_graph:
            denoiser = GraphedDenoiser(denoiser)
        return denoiser

    def ours_run(self, denoiser: nn.Module, steps: int, seed: int) -> torch.Tensor:
        """Our sampler's loop, noise from one device generator per seed block as ``ddpmlab sample``."""
        return harness.ours_sampling_loop(
            self.sampler,
            denoiser,
            self.shape,
            self.labels,
            seed,
            self.args.seed_block,
            steps,
            device=self.ctx.device,
        )

    def diffusers_run(self, unet: nn.Module, dtype: torch.dtype, steps: int, seed: int) -> torch.Tensor:
        """The DDPMPipeline loop (batched CFG for the CFG rows), with its generator on the device."""
        return harness.diffusers_sampling_loop(
            self.scheduler,
            unet,
            self.shape,
            self.labels,
            self.guidance,
            seed,
            steps,
            device=self.ctx.device,
            dtype=dtype,
            null_class=NUM_CLASSES[self.name],
        )


def sample_row(ctx: Context, loop: SampleLoop, spec: SampleSpec) -> dict:
    """Warm-up (compile / capture included), then ``--rounds`` timed prefixes of the loop."""
    args, device = ctx.args, ctx.device
    s = spec.speedups
    set_flags(s.tf32, s.cudnn_benchmark)
    run, denoiser = loop.runner(spec)
    warm_steps = min(loop.num_steps, args.warmup + (3 if s.compile or s.cuda_graph else 0))
    warmup_s = harness.timed(lambda: run(warm_steps, 0), 1, device)
    probe = harness.timed(lambda: run(args.min_steps, 0), 1, device) / args.min_steps
    steps = max(args.min_steps, min(loop.num_steps, int(args.round_seconds / max(probe, 1e-6))))
    seconds = [harness.timed(lambda r=r: run(steps, r + 1), 1, device) / steps for r in range(args.rounds)]
    median = statistics.median(seconds)
    images_per_s = loop.shape[0] / (median * loop.num_steps)
    branches = 2 if loop.guidance is not None else 1
    flops = branches * ctx.flops(loop.name, spec.contestant, False)
    tflops, mfu = ctx.rates(images_per_s * loop.num_steps, flops)
    row = {
        "key": spec.key,
        "label": spec.label,
        "loop": loop.label,
        "contestant": spec.contestant,
        "settings": asdict(spec.speedups),
        "timed_steps": steps,
        "extrapolated": steps < loop.num_steps,
        "median_step_ms": median * 1e3,
        "step_ms_by_round": [value * 1e3 for value in seconds],
        "loop_seconds": median * loop.num_steps,
        "images_per_s": images_per_s,
        "tflops": tflops,
        "mfu": mfu,
        "warmup_s": warmup_s,
        "warmup_steps": warm_steps,
    }
    if isinstance(denoiser, GraphedDenoiser):
        row["capture_s"] = denoiser.capture_seconds
    if spec.speedups.compile:
        row["compile_s"] = warmup_s - warm_steps * median
    if spec.contestant == "ours" and (
        loop.fastest is None or median * 1e3 < loop.fastest[0]["median_step_ms"]
    ):
        loop.fastest = (row, run)  # kept (compiled / captured) for the whole-loop timing
    return row


def describe_sample(row: dict) -> str:
    mfu = f", MFU {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else ""
    extra = "".join(f", {k} {row[k]:.1f} s" for k in ("capture_s", "compile_s") if k in row)
    approx = " (extrapolated)" if row["extrapolated"] else ""
    return (
        f"{row['median_step_ms']:.2f} ms/step, loop {row['loop_seconds']:.2f} s{approx}, "
        f"{row['images_per_s']:.1f} img/s, {row['tflops']:.1f} TFLOP/s{mfu}{extra}"
    )


def skip_reason(ctx: Context, spec: SampleSpec) -> str | None:
    """Why a row cannot run here or now (None: it can)."""
    if spec.speedups.cuda_graph and ctx.device.type != "cuda":
        return "CUDA graphs need a GPU"
    if spec.speedups.compile and ctx.compile_skip_reason():
        return ctx.compile_skip_reason()
    if ctx.budget.left() <= 0:
        return "out of time"
    return None


def sample_rows(ctx: Context, loop: SampleLoop, specs: list[SampleSpec]) -> list[dict]:
    rows = []
    for spec in specs:
        reason = skip_reason(ctx, spec)
        if reason is not None:
            ctx.skip("sample", spec.key, spec.label, reason)
            continue
        try:
            row = sample_row(ctx, loop, spec)
        except Exception as error:  # noqa: BLE001  (e.g. a failed capture: the other rows still run)
            ctx.failed("sample", spec.key, spec.label, error)
            continue
        say(f"[sample] {loop.label}, {spec.label}: {describe_sample(row)}")
        rows.append(ctx.report.add_row("sample", row))
        free_memory(ctx.device)
    return rows


def full_loop(ctx: Context, loop: SampleLoop) -> dict | None:
    """The fastest of our rows, timed over the whole loop once (the issue's seconds for 256 images),
    with the row's own (already compiled / captured) denoiser."""
    if loop.fastest is None:
        return None
    best, run = loop.fastest
    if ctx.budget.left() < 1.5 * best["loop_seconds"] + 5:
        return {"row": best["key"], "skipped": "out of time"}
    settings = best["settings"]
    set_flags(settings["tf32"], settings["cudnn_benchmark"])
    seconds = harness.timed(lambda: run(loop.num_steps, 7), 1, ctx.device)
    result = {"row": best["key"], "steps": loop.num_steps, "images": loop.shape[0], "seconds": seconds}
    say(f"[sample] whole {loop.label} loop, {best['label']}: {seconds:.2f} s")
    return result


def sample_summary(rows: list[dict], prefix: str) -> dict:
    by_key = {row["key"]: row for row in rows}
    ours = [row for row in rows if row["contestant"] == "ours"]
    reference = by_key.get(f"{prefix}diffusers_bf16")
    if not ours:
        return {}
    best = min(ours, key=lambda row: row["median_step_ms"])
    summary = {"best_ours": best["key"], "best_ours_loop_seconds": best["loop_seconds"]}
    if reference:
        summary["ratio_vs_diffusers_bf16"] = reference["median_step_ms"] / best["median_step_ms"]
        summary["target_ratio"] = TARGETS["sample_ratio_vs_diffusers"]
        summary["ratio_met"] = summary["ratio_vs_diffusers_bf16"] >= TARGETS["sample_ratio_vs_diffusers"]
    fp32 = by_key.get(f"{prefix}diffusers_fp32")
    if fp32:
        summary["ratio_vs_diffusers_fp32"] = fp32["median_step_ms"] / best["median_step_ms"]
    return summary


def ddpm_target(summary: dict) -> dict:
    whole = summary.get("full_loop") or {}
    seconds = whole.get("seconds", summary.get("best_ours_loop_seconds"))
    if seconds is None:
        return {}
    return {
        "seconds_for_the_batch": seconds,
        "seconds_measured_whole": "seconds" in whole,
        "target_seconds": TARGETS["ddpm_seconds"],
        "seconds_met": seconds <= TARGETS["ddpm_seconds"],
    }


def run(ctx: Context) -> None:
    args = ctx.args
    section = ctx.start(
        "sample",
        config="cifar10 (DDPM), cifar10_cond (DDIM + CFG)",
        batch=args.sample_batch,
        image_size=args.image_size,
        seed_block=args.seed_block,
        mode="eval, inference_mode",
        weights="diffusers' seeded initial weights copied into ours (checked: same outputs in fp32)",
        flags="TF32 and cudnn.benchmark on in every row",
    )
    for prefix, kind, guidance in (("", "ddpm", None), ("cfg_", "ddim", args.guidance)):
        loop = SampleLoop(ctx, kind, guidance)
        section.setdefault("same_network_check", {})[loop.label] = loop.check
        say(f"[sample] {loop.label}: ours vs diffusers' twin, same weights: {loop.check}")
        rows = sample_rows(ctx, loop, sample_specs(prefix, full=kind == "ddpm"))
        summary = sample_summary(rows, prefix)
        if kind == "ddpm":
            summary["full_loop"] = full_loop(ctx, loop)
            summary.update(ddpm_target(summary))
        section[f"summary_{kind}"] = summary
        say(f"[sample] summary {loop.label}: {json.dumps(summary)}")
        ctx.report.save()
        del loop
        free_memory(ctx.device)


def markdown(section: dict) -> list[str]:
    lines = [
        "| loop | row | ms/step | loop s | img/s | TFLOP/s | MFU | vs ours row above | warm-up s "
        "| capture/compile s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    previous: dict[str, float] = {}
    for r in section["rows"]:
        if "skipped" in r:
            lines.append(f"| | {r['label']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        gain = ""
        if r["contestant"] == "ours" and r["loop"] in previous:
            gain = f"{previous[r['loop']] / r['median_step_ms']:.2f}x"
        if r["contestant"] == "ours":
            previous[r["loop"]] = r["median_step_ms"]
        approx = "~" if r["extrapolated"] else ""
        extra = (
            f"{r.get('capture_s', r.get('compile_s', 0.0)):.1f}"
            if {"capture_s", "compile_s"} & set(r)
            else ""
        )
        lines.append(
            f"| {r['loop']} | {r['label']} | {r['median_step_ms']:.2f} | {approx}{r['loop_seconds']:.2f} "
            f"| {r['images_per_s']:.1f} | {r['tflops']:.1f} | {pct(r['mfu'])} | {gain} "
            f"| {r['warmup_s']:.1f} | {extra} |"
        )
    lines += [
        "",
        "~: a prefix of the loop timed, the whole loop extrapolated (per-step cost is the same at every t).",
    ]
    return lines + summary_lines(section)


def summary_lines(section: dict) -> list[str]:
    lines = []
    for kind in ("ddpm", "ddim"):
        s = section.get(f"summary_{kind}") or {}
        if "ratio_vs_diffusers_bf16" in s:
            lines.append(
                f"- {kind.upper()}: ours ({s['best_ours']}) / diffusers bf16: "
                f"**{s['ratio_vs_diffusers_bf16']:.2f}x**; "
                f"target >= {TARGETS['sample_ratio_vs_diffusers']}: {met(s.get('ratio_met'))}."
            )
        if "seconds_for_the_batch" in s:
            how = "whole loop timed" if s["seconds_measured_whole"] else "extrapolated"
            lines.append(
                f"- DDPM: {s['seconds_for_the_batch']:.2f} s for the batch ({how}); target <= "
                f"{TARGETS['ddpm_seconds']:.0f} s (256 images): {met(s.get('seconds_met'))}."
            )
    return lines
