"""GPU benchmark section ``flops``: FLOPs per image, and which SDPA kernels take the attention shapes.

FLOPs per image of one forward pass and of a training step (forward + backward), counted by
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no time on the GPU), for our CIFAR-10
UNet, diffusers' twin of it and the imagenet100_128 UNet; with the parameter counts (the twin's equal
ours). On a GPU also which SDPA backends (flash, memory-efficient, cuDNN, math) accept the attention
shapes of the two configs in bf16, forward + backward, and their time.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from benchmarks import harness
from benchmarks.gpu.common import TARGETS, build_ours, image_size, load, say
from benchmarks.gpu.report import Context
from ddpmlab.models import count_parameters


def probe_sdpa(ctx: Context) -> dict:
    """Which SDPA backends accept (forward + backward, bf16) the attention shapes of the two configs, and
    their time; the fused kernels need e.g. head_dim <= 256 (CIFAR-10's one head is 256 wide)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    args = ctx.args
    cifar = load("cifar10", args)
    width = 2 * cifar.model.options.get("base_channels", 128)
    side = args.image_size // 2
    shapes = {"cifar10 (level 1)": (args.batch, 1, side * side, width)}
    imagenet = (args.memory_image_size or 128) // 4
    shapes["imagenet100_128 (level 2)"] = (args.memory_batch, width // 64, imagenet * imagenet, 64)
    backends = [getattr(SDPBackend, n) for n in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")]
    result = {}
    for label, shape in shapes.items():
        q, k, v = (
            torch.randn(shape, device=ctx.device, dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"
        )
        result[label] = {"shape_b_h_l_d": list(shape)}
        for backend in backends + [SDPBackend.MATH]:
            result[label][backend.name] = _time_sdpa(backend, sdpa_kernel, q, k, v, ctx.device)
    return result


def _time_sdpa(backend, sdpa_kernel, q, k, v, device) -> str:
    def run() -> None:
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    try:
        with sdpa_kernel([backend]):
            run()
            seconds = harness.timed(run, 5, device) / 5
    except RuntimeError as error:
        return f"no ({str(error).splitlines()[0][:80]})"
    return f"{seconds * 1e3:.2f} ms fwd+bwd"


def run(ctx: Context) -> None:
    section = ctx.report.section("flops")
    section["method"] = "torch.utils.flop_counter.FlopCounterMode on the meta device, batch 2, per image"
    for name, contestant in (("cifar10", "ours"), ("cifar10", "diffusers"), ("imagenet100_128", "ours")):
        forward, train = ctx.flops(name, contestant, False), ctx.flops(name, contestant, True)
        size = image_size(name, ctx.args, load(name, ctx.args))
        with torch.device("meta"):
            ours = build_ours(name, ctx.args)
            params = count_parameters(ours if contestant == "ours" else harness.diffusers_twin(ours, size))
        row = {
            "key": f"{name}_{contestant}",
            "config": name,
            "contestant": contestant,
            "parameters": params,
            "forward_gflop_per_image": forward / 1e9,
            "train_step_gflop_per_image": train / 1e9,
            "train_over_forward": train / forward,
        }
        say(
            f"[flops] {name} {contestant}: {params:,} parameters, forward {forward / 1e9:.2f} GFLOP/image, "
            f"training step {train / 1e9:.2f} GFLOP/image ({train / forward:.2f}x)"
        )
        ctx.report.add_row("flops", row)
    if ctx.device.type == "cuda":
        section["sdpa_backends"] = probe_sdpa(ctx)
        say(f"[flops] SDPA backends: {json.dumps(section['sdpa_backends'])}")
        ctx.report.save()


def markdown(section: dict) -> list[str]:
    lines = ["| config | model | parameters | forward GFLOP/image | train step GFLOP/image | ratio |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for r in section["rows"]:
        lines.append(
            f"| {r['config']} | {r['contestant']} | {r['parameters']:,} | "
            f"{r['forward_gflop_per_image']:.2f} | {r['train_step_gflop_per_image']:.2f} | "
            f"{r['train_over_forward']:.2f}x |"
        )
    lines += [
        "",
        f"Counted with {section.get('method', 'FlopCounterMode')}. The issue's figure: "
        f"{TARGETS['issue_forward_gflop_per_image']} GFLOP per 32x32 image (forward). Ours computes the "
        "nearest-neighbour upsampling + 3x3 conv as four 2x2 convs at the low resolution (fewer FLOPs, "
        "same function), hence below diffusers' count.",
    ]
    if "sdpa_backends" in section:
        lines += ["", "SDPA backends on the attention shapes (bf16, forward + backward):", ""]
        lines += [f"- {label}: {json.dumps(result)}" for label, result in section["sdpa_backends"].items()]
    return lines
