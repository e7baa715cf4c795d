"""Training throughput of ddpmlab's UNet against diffusers' UNet2DModel, matched, on the CPU.

Run by hand (not a test):

    .venv/bin/python -m benchmarks training              # base 32 (the mnist5k config), batch 64, 2 threads
    .venv/bin/python -m benchmarks training --base 32 64 --rounds 9
    git show 05da493:src/ddpmlab/models/unet.py > /tmp/unet_before.py
    .venv/bin/python -m benchmarks training --extra /tmp/unet_before.py --extra-name "UNet before"

``--extra`` adds another copy of unet.py (e.g. an earlier commit's) as a third contestant, and first
checks that it computes the same function as the current UNet (same weights; outputs and gradients).

Configuration (the MNIST demo's shape, ``harness.mnist_unet``): 1 x 28 x 28 input, ``base`` channels,
channel_mults (1, 2, 2), 2 residual blocks per level, self-attention at level 2 (7x7) and in the middle,
4 heads, FiLM (scale-shift) time conditioning, dropout 0.1, GroupNorm with 32 groups, class-conditional
with 10 classes. diffusers' model is configured to the same network (``harness.diffusers_twin`` with
10 class embeddings): block_out_channels = widths, layers_per_block=2, (DownBlock2D, DownBlock2D,
AttnDownBlock2D) / (AttnUpBlock2D, UpBlock2D, UpBlock2D), resnet_time_scale_shift="scale_shift",
attention_head_dim = width / 4, num_class_embeds=10, norm_num_groups=32, dropout 0.1. The parameter
counts differ only by our extra "no class" embedding row.

A training step is: forward on (x_t, t, labels), MSE loss against a fixed target, backward, AdamW step
(float32, train mode). Every model is warmed up, then timed in ``rounds`` rounds; in each round every
model runs ``steps`` steps back to back, and the order of the models rotates from round to round, so
that load from other processes on a shared machine falls on all of them alike. Reported: the median
images/s over rounds of each model, and the median of the per-round ratios ours / diffusers (paired:
both numbers of a ratio come from the same round).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys

import torch
import torch.nn.functional as F

import ddpmlab.models.unet
from benchmarks import harness
from benchmarks.harness import HEADS, MNIST_SHAPE, NUM_CLASSES, mnist_unet
from ddpmlab.models import count_parameters


def load_unet_module(path: str):
    """Another copy of unet.py (e.g. an earlier commit's) as a module, for before/after runs."""
    spec = importlib.util.spec_from_file_location(f"unet_extra_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Zero-initialised layers would hide differences: add noise to every parameter."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def _compare(reference, other, inputs) -> tuple[float, float, float]:
    """(max |output diff|, max |grad diff| over parameters, max |output|) of two modules, same weights."""
    other.load_state_dict(reference.state_dict())
    results = []
    for model in (reference, other):
        model.eval().zero_grad()
        out = model(*inputs)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    grad_diff = max(harness.max_abs_diff(a, b) for a, b in zip(grads_a, grads_b))
    return harness.max_abs_diff(out_a, out_b), grad_diff, out_a.abs().max().item()


def check_same_function(base: int, old) -> dict:
    """Does ddpmlab's UNet compute what the UNet of module ``old`` (e.g. an earlier commit's) computes?

    With the same perturbed weights: the whole model in float32 (the time embedding is float32 only) and
    each block in float64, where equal mathematics agrees to ~1e-12 whatever the order of operations.
    Outputs in eval mode (dropout off), and the gradients of every parameter.
    """
    new = ddpmlab.models.unet
    g = torch.Generator().manual_seed(0)
    result = {}
    reference = mnist_unet(base, old.UNet)
    _perturb(reference, g)
    x = torch.randn(16, *MNIST_SHAPE, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    labels = torch.randint(0, NUM_CLASSES + 1, (16,), generator=g)  # NUM_CLASSES means "no class"
    result["unet_float32"] = _compare(reference, mnist_unet(base, new.UNet), (x, t, labels))
    c = 2 * base
    x = torch.randn(8, c, 14, 14, generator=g, dtype=torch.float64)
    emb = torch.randn(8, 4 * base, generator=g, dtype=torch.float64)
    blocks = {
        "residual_scale_shift": (lambda m: m.ResidualBlock(c, base, 4 * base, 0.1, 32, True), (x, emb)),
        "residual_additive": (lambda m: m.ResidualBlock(c, base, 4 * base, 0.1, 32, False), (x, emb)),
        "residual_same_width": (lambda m: m.ResidualBlock(c, c, 4 * base, 0.1, 32, True), (x, emb)),
        "attention": (lambda m: m.AttentionBlock(c, HEADS, 32), (x,)),
        "upsample": (lambda m: m.Upsample(c), (x,)),
    }
    for name, (build, inputs) in blocks.items():
        reference = build(old).double()
        _perturb(reference, g)
        result[f"{name}_float64"] = _compare(reference, build(new).double(), inputs)
    return result


def training_batch(batch: int) -> dict[str, torch.Tensor]:
    """The fixed batch every step trains on: x_t, t, class labels and the MSE target (seed 0)."""
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(batch, *MNIST_SHAPE, generator=g),
        "t": torch.randint(0, 1000, (batch,), generator=g),
        "labels": torch.randint(0, NUM_CLASSES, (batch,), generator=g),
        "target": torch.randn(batch, *MNIST_SHAPE, generator=g),
    }


def matched_pair(base: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our MNIST UNet and diffusers' twin of it (10 class embeddings, as diffusers would train it)."""
    ours = mnist_unet(base)
    return ours, harness.diffusers_twin(ours, MNIST_SHAPE[-1], class_embeds=NUM_CLASSES)


class Contestant:
    """A model, its optimizer and a function doing one training step on the shared batch."""

    def __init__(self, name: str, model: torch.nn.Module, kind: str, batch: dict, channels_last: bool):
        self.name, self.model, self.kind, self.batch = name, model, kind, batch
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = batch["x"].contiguous(memory_format=torch.channels_last) if channels_last else batch["x"]
        self.rates: list[float] = []

    def step(self) -> None:
        if self.kind == "diffusers":
            out = self.model(self.x, self.batch["t"], class_labels=self.batch["labels"]).sample
        else:
            out = self.model(self.x, self.batch["t"], self.batch["labels"])
        loss = F.mse_loss(out, self.batch["target"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed(self, steps: int) -> float:
        """Images/s of ``steps`` steps back to back (recorded in ``rates``)."""
        rate = steps * self.batch["x"].shape[0] / harness.timed(self.step, steps)
        self.rates.append(rate)
        return rate


def contestants(args, base: int) -> tuple[list[Contestant], dict | None]:
    """ddpmlab's UNet, diffusers' twin and (``--extra``) another unet.py's UNet, checked first."""
    torch.manual_seed(0)
    batch = training_batch(args.batch)
    ours, theirs = matched_pair(base)
    field = [
        Contestant("ddpmlab UNet", ours, "ours", batch, args.channels_last),
        Contestant("diffusers UNet2DModel", theirs, "diffusers", batch, args.channels_last),
    ]
    check = None
    if args.extra:
        old = load_unet_module(args.extra)
        name = args.extra_name or f"UNet from {args.extra}"
        check = check_same_function(base, old)
        print(f"same function as {name} (same weights; max |output diff|, max |grad diff|, max |output|):")
        for key, values in check.items():
            print(f"  {key}: " + ", ".join(f"{v:.1e}" for v in values))
        field.append(Contestant(name, mnist_unet(base, old.UNet), "ours", batch, args.channels_last))
    return field, check


def run(args, base: int) -> dict:
    field, check = contestants(args, base)
    params = {c.name: count_parameters(c.model) for c in field}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, base {base}")
    for name, count in params.items():
        print(f"  {name}: {count:,} parameters")
    harness.require_similar_size({c.name: params[c.name] for c in field[:2]})
    harness.warm_up([c.step for c in field], args.warmup)
    ratios = []
    for r in range(args.rounds):
        rates = {c.name: c.timed(args.steps) for c in harness.rotated(field, r)}
        ratios.append(rates[field[0].name] / rates[field[1].name])
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n} {v:.1f} img/s" for n, v in rates.items())
            + f", ratio {ratios[-1]:.3f}"
        )
    ratio_of_medians = statistics.median(field[0].rates) / statistics.median(field[1].rates)
    config = {"dropout": 0.1, "batch": args.batch, "dtype": "float32", "channels_last": args.channels_last}
    return {
        "config": {**harness.mnist_config(base), **config},
        "torch": torch.__version__,
        "diffusers": harness.versions()["diffusers"],
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "warmup_steps": args.warmup,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "models": {
            c.name: {"parameters": params[c.name], **harness.rate_stats(c.rates), "rates": c.rates}
            for c in field
        },
        "check_against_extra": check,
        "ratio_ours_over_diffusers": harness.ratio_stats(ratios, ratio_of_medians=ratio_of_medians),
    }


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"## base_channels {cfg['base_channels']}",
        "",
        f"torch {result['torch']}, diffusers {result['diffusers']}, {result['threads']} threads, "
        f"Python {result['python']} ({result['machine']}); float32, batch {cfg['batch']}, "
        f"channels_last={cfg['channels_last']}.",
        f"Config: 1x28x28, base {cfg['base_channels']}, channel_mults (1, 2, 2), 2 res blocks, attention at "
        f"level 2 (7x7) + middle, {cfg['num_heads']} heads, scale-shift, dropout 0.1, 32 groups, "
        f"{cfg['classes']} classes.",
        f"Step = forward + MSE + backward + AdamW. {result['warmup_steps']} warm-up steps each, then "
        f"{result['rounds']} interleaved rounds of {result['steps_per_round']} steps per model (order "
        "rotating); medians over rounds.",
        "",
        "| model | parameters | median img/s | min..max img/s |",
        "|---|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        lines.append(
            f"| {name} | {m['parameters']:,} | {m['median_images_per_s']:.1f} | "
            f"{m['min_images_per_s']:.1f}..{m['max_images_per_s']:.1f} |"
        )
    r = result["ratio_ours_over_diffusers"]
    check = result.get("check_against_extra")
    if check:
        lines += [
            "",
            "Same function as the extra UNet, with the same (perturbed) weights (max |output difference|, "
            "max |gradient difference|, max |output|):",
            "",
        ]
        lines += [f"- {key}: " + ", ".join(f"{v:.1e}" for v in values) for key, values in check.items()]
    lines += [
        "",
        f"**ours / diffusers: {r['median_of_round_ratios']:.2f}x** (median of per-round ratios; "
        f"range {r['min']:.2f}..{r['max']:.2f}; ratio of medians {r['ratio_of_medians']:.2f}x). "
        f"The project's target, >= 1.2x, is {'met' if r['median_of_round_ratios'] >= 1.2 else 'NOT met'}.",
        "",
        "The machine's 2 cores are shared with other jobs, so single rounds are noisy; the per-round "
        "ratios (both models timed back to back) are more stable than the absolute rates.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", type=int, nargs="+", default=[32], help="base channels, one run each (32: mnist5k config)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--extra", help="path of another unet.py whose UNet joins the comparison")
    parser.add_argument("--extra-name", help="the name of --extra's UNet in the report")
    harness.add_output_options(parser, "unet_speed_cpu")
    args = parser.parse_args(argv)
    try:
        results = [run(args, base) for base in args.base]
    except harness.DifferentWork as error:
        raise SystemExit(str(error)) from None
    title = ["# UNet training throughput on the CPU: ddpmlab vs diffusers", ""]
    harness.publish(args, {"runs": results}, "\n".join(title + [markdown(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
