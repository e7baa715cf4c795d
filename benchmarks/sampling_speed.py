"""Sampling throughput of ddpmlab against diffusers at the MNIST configuration, on the CPU.

Run by hand (not a test; diffusers is a dev-only dependency):

    .venv/bin/python benchmarks/sampling_speed.py                    # the default run (~8 min, 2 idle cores)
    .venv/bin/python benchmarks/sampling_speed.py --rounds 5 --ddpm-timed-steps 50
    .venv/bin/python benchmarks/sampling_speed.py --ddpm-timed-steps 1000   # the whole DDPM-1000 loop (long)
    .venv/bin/python benchmarks/sampling_speed.py --rows ddim ddim-cfg --batch 16 --rounds 2 --no-write

Contestants, in one process, float32, eval mode, the same batch and class labels:

- ddpmlab: our ``UNet`` configured like ``our_unet(base)`` of unet_speed.py (class-conditional, 10 classes
  plus the "no class" row), driven by our ``DDPMSampler`` / ``DDIMSampler`` (clip_x0=1), with
  ``ClassifierFreeGuidance`` (w = 3, null class 10) for the CFG rows. The initial noise and the DDPM
  noise come from one generator per seed block of 8 samples, as ``ddpmlab sample`` draws them
  (``--seed-block 0``: one generator for the batch, as diffusers).
- diffusers: ``UNet2DModel`` configured to the same network (``diffusers_twin``: ``diffusers_unet(base)``
  of unet_speed.py but with ``num_class_embeds=11``, the extra index 10 being the null class), driven
  by ``DDPMScheduler`` / ``DDIMScheduler`` (linear betas, clip_sample=True, trailing spacing) in the
  usual diffusers loop under ``torch.inference_mode()``: ``unet(x, t, class_labels=labels).sample``
  then ``scheduler.step``; for CFG the standard two-branch batched call on ``torch.cat([x, x])`` with
  ``[labels; null]``, then ``uncond + w (cond - uncond)``. DDIM steps pass
  ``use_clipped_model_output=True`` (an option of DDIMPipeline): eps is re-derived from the clipped x0,
  as our DDIMSampler does with clip_x0.

Same weights: diffusers' (seeded) initial weights are copied into our UNet, parameter by parameter. The
one difference between the networks is the middle attention block: ours normalises its input with a
GroupNorm, diffusers' (with resnet_time_scale_shift="scale_shift") has none; that norm keeps its initial
identity affine weights. Before timing, the script checks the mapping: with that GroupNorm removed from
a copy of our UNet, both networks must compute the same function (max |output difference| at float32
rounding), and our loops must produce the same samples as diffusers' loops (DDIM-50 with CFG, and the
first steps of DDPM-1000 with one shared generator). The parameter counts (within 5%) are reported.

Rows: DDPM-1000 and DDIM-50, each without and with CFG. DDPM-1000 at batch 64 takes minutes per loop on
two CPU cores, so by default only the first ``--ddpm-timed-steps`` steps (of the 1000-step schedule,
noisiest first) are timed: the row reports the time per step and images/s *extrapolated* to the whole
``--ddpm-steps`` loop (the per-step work does not depend on t). DDIM rows time whole loops. Every row is
warmed up, then timed in ``--rounds`` rounds; in each round both contestants run back to back, in an
order that alternates from round to round, so that load from other processes falls on both alike.
Reported: median images/s over rounds, and the median of the per-round ratios ours / diffusers.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.models import count_parameters
from ddpmlab.sampling import DDIMSampler, DDPMSampler, Sampler
from ddpmlab.schedules import make_schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_speed import HEADS, NUM_CLASSES, our_unet, write_report  # noqa: E402  (the training benchmark, next to this file)

RESULTS = Path(__file__).resolve().parent / "results"
NULL_CLASS = NUM_CLASSES  # our ClassEmbedding's extra row; diffusers gets num_class_embeds = 11
ROWS = ("ddpm", "ddpm-cfg", "ddim", "ddim-cfg")
TARGET = 1.3
SHAPE = (1, 28, 28)


def diffusers_twin(ours: nn.Module, size: int) -> nn.Module:
    """diffusers' UNet2DModel configured to the same network as our UNet ``ours`` (the blocks correspond
    as :func:`diffusers_weights_for_ours` maps them); the same parameter count. For ``our_unet(base)``
    that is unet_speed.py's ``diffusers_unet(base)`` with one more class embedding: the null class."""
    from diffusers import UNet2DModel

    levels = ours.down_levels
    widths = tuple(level.stages[0].residual.conv_1.out_channels for level in levels)
    attention = [level.stages[0].attention is not None for level in levels]
    blocks = [stage.attention for stage in ours.middle if stage.attention is not None]
    blocks += [stage.attention for level in levels for stage in level.stages if stage.attention is not None]
    head_dims = {block.qkv.out_channels // 3 // block.num_heads for block in blocks}
    if len(head_dims) != 1 or ours.patch_size != 1 or ours.text_cross_attention:
        raise ValueError(f"no UNet2DModel computes this UNet (head widths {sorted(head_dims)})")
    residual = levels[0].stages[0].residual
    encoder = ours.condition_encoder
    return UNet2DModel(
        sample_size=size,
        in_channels=ours.in_channels,
        out_channels=ours.out_channels,
        block_out_channels=widths,
        layers_per_block=len(levels[0].stages),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        attention_head_dim=head_dims.pop(),
        norm_num_groups=ours.output_norm.num_groups,
        resnet_time_scale_shift="scale_shift" if residual.scale_shift else "default",
        num_class_embeds=encoder.embedding.num_embeddings if encoder is not None else None,
        dropout=residual.dropout.p,
    )


# --------------------------------------------------------------------------------------------------
# The same weights in both networks.
# --------------------------------------------------------------------------------------------------


def diffusers_weights_for_ours(theirs: nn.Module, ours: nn.Module) -> dict[str, torch.Tensor]:
    """diffusers' state dict renamed (and reshaped) to our UNet's parameter names."""
    state = theirs.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str, transform: Callable[[torch.Tensor], torch.Tensor] = lambda w: w) -> None:
        mapped[dst] = transform(state[src])
        used.add(src)

    def resnet(src: str, dst: str) -> None:
        pairs = [("norm1", "norm_1"), ("conv1", "conv_1"), ("time_emb_proj", "emb_projection")]
        pairs += [("norm2", "norm_2"), ("conv2", "conv_2"), ("conv_shortcut", "skip")]
        for a, b in pairs:
            for p in ("weight", "bias"):
                if f"{src}.{a}.{p}" in state:
                    take(f"{src}.{a}.{p}", f"{dst}.{b}.{p}")

    def attention(src: str, dst: str) -> None:
        if f"{src}.group_norm.weight" in state:
            take(f"{src}.group_norm.weight", f"{dst}.norm.weight")
            take(f"{src}.group_norm.bias", f"{dst}.norm.bias")
        names = [f"{src}.to_{x}" for x in "qkv"]
        used.update(f"{n}.{p}" for n in names for p in ("weight", "bias"))
        # our 1x1 qkv conv: output channels [q (all heads), k, v], each head-major like to_q/to_k/to_v
        mapped[f"{dst}.qkv.weight"] = torch.cat([state[f"{n}.weight"] for n in names])[:, :, None, None]
        mapped[f"{dst}.qkv.bias"] = torch.cat([state[f"{n}.bias"] for n in names])
        take(f"{src}.to_out.0.weight", f"{dst}.projection.weight", lambda w: w[:, :, None, None])
        take(f"{src}.to_out.0.bias", f"{dst}.projection.bias")

    def stages(src: str, dst: str, level: nn.Module) -> None:
        for j, stage in enumerate(level.stages):
            resnet(f"{src}.resnets.{j}", f"{dst}.stages.{j}.residual")
            if stage.attention is not None:
                attention(f"{src}.attentions.{j}", f"{dst}.stages.{j}.attention")

    half = ours.time_embedding.dim // 2
    take("conv_in.weight", "input_conv.weight")
    take("conv_in.bias", "input_conv.bias")
    # diffusers' sinusoidal features are [cos, sin] (flip_sin_to_cos), ours [sin, cos]
    take("time_embedding.linear_1.weight", "time_embedding.linear_1.weight", lambda w: w.roll(half, 1))
    for name in (
        "time_embedding.linear_1.bias",
        "time_embedding.linear_2.weight",
        "time_embedding.linear_2.bias",
    ):
        take(name, name)
    take("class_embedding.weight", "condition_encoder.embedding.weight")
    for i, level in enumerate(ours.down_levels):
        stages(f"down_blocks.{i}", f"down_levels.{i}", level)
        if level.resample is not None:
            for p in ("weight", "bias"):
                take(f"down_blocks.{i}.downsamplers.0.conv.{p}", f"down_levels.{i}.resample.conv.{p}")
    resnet("mid_block.resnets.0", "middle.0.residual")
    attention("mid_block.attentions.0", "middle.0.attention")
    resnet("mid_block.resnets.1", "middle.1.residual")
    for k, level in enumerate(ours.up_levels):
        stages(f"up_blocks.{k}", f"up_levels.{k}", level)
        if level.resample is not None:
            for p in ("weight", "bias"):
                take(f"up_blocks.{k}.upsamplers.0.conv.{p}", f"up_levels.{k}.resample.conv.{p}")
    for a, b in (("conv_norm_out", "output_norm"), ("conv_out", "output_conv")):
        for p in ("weight", "bias"):
            take(f"{a}.{p}", f"{b}.{p}")
    unused = sorted(set(state) - used)
    if unused:
        raise SystemExit(f"diffusers parameters without a counterpart in our UNet: {unused}")
    return mapped


def load_diffusers_weights(theirs: nn.Module, ours: nn.Module) -> list[str]:
    """Load diffusers' weights into our UNet; returns our parameters diffusers has no copy of (with
    scale_shift, the middle attention's GroupNorm, which keeps its identity weights). An unconditional
    UNet has no class embedding: a placeholder one is mapped and dropped."""
    source = theirs
    if ours.condition_encoder is None:
        padded = {**theirs.state_dict(), "class_embedding.weight": torch.zeros(1)}
        source = SimpleNamespace(state_dict=lambda: padded)
    mapped = diffusers_weights_for_ours(source, ours)
    if ours.condition_encoder is None:
        mapped.pop("condition_encoder.embedding.weight")
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    if unexpected or not set(missing) <= {"middle.0.attention.norm.weight", "middle.0.attention.norm.bias"}:
        raise RuntimeError(f"weight transfer failed: missing {missing}, unexpected {unexpected}")
    return list(missing)


def build_models(base: int, seed: int) -> tuple[nn.Module, nn.Module, list[str]]:
    """(ours, diffusers) with the same weights, eval mode; and our parameters diffusers has no copy of."""
    ours = our_unet(base).eval()
    torch.manual_seed(seed)  # diffusers' initial weights, which both networks then hold
    theirs = diffusers_twin(ours, SHAPE[-1]).eval()
    try:
        missing = load_diffusers_weights(theirs, ours)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    if set(missing) != {"middle.0.attention.norm.weight", "middle.0.attention.norm.bias"}:
        raise SystemExit(f"weight transfer failed: missing {missing}")
    return ours, theirs, missing


def without_middle_norm(ours: nn.Module) -> nn.Module:
    """A copy of our UNet with the middle attention's GroupNorm removed: diffusers' network exactly."""
    twin = copy.deepcopy(ours)
    twin.middle[0].attention.norm = nn.Identity()
    return twin


# --------------------------------------------------------------------------------------------------
# The sampling loops.
# --------------------------------------------------------------------------------------------------


def diffusers_scheduler(kind: str, num_steps: int):
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, timestep_spacing="trailing"
    )
    scheduler = DDPMScheduler(**common) if kind == "ddpm" else DDIMScheduler(**common)
    scheduler.set_timesteps(num_steps)
    return scheduler


def ours_sampler(kind: str, num_steps: int) -> Sampler:
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    if kind == "ddpm":
        return DDPMSampler(diffusion, num_steps, clip_x0=1.0)
    return DDIMSampler(diffusion, num_steps, clip_x0=1.0)


def ours_loop(
    sampler: Sampler,
    model: nn.Module,
    labels: torch.Tensor,
    guidance: float | None,
    seed: int,
    seed_block: int,
    max_steps: int | None = None,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """ddpmlab's sampling, as ``sample_run`` does it; stops after ``max_steps`` steps if given."""
    batch = labels.shape[0]
    if seed_block:
        generator = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(batch // seed_block)]
    else:
        generator = torch.Generator().manual_seed(seed)
    if guidance is not None:
        model = ClassifierFreeGuidance(model, guidance, NULL_CLASS)
    steps = sampler.steps(model, (batch, *SHAPE), labels, generator, x_T=x_T)
    for count, step in enumerate(steps, 1):
        if count == max_steps:
            break
    steps.close()
    return step.x_prev


def diffusers_loop(
    scheduler,
    unet: nn.Module,
    labels: torch.Tensor,
    guidance: float | None,
    seed: int,
    max_steps: int | None = None,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """The usual diffusers loop (as in DDPMPipeline, with the standard CFG batching)."""
    generator = torch.Generator().manual_seed(seed)
    # DDIM: eps re-derived from the clipped x0, as our sampler does (DDIMPipeline's use_clipped_model_output)
    step_options = {"use_clipped_model_output": True} if "DDIM" in type(scheduler).__name__ else {}
    with torch.inference_mode():
        x = torch.randn((labels.shape[0], *SHAPE), generator=generator) if x_T is None else x_T
        if guidance is not None:
            class_labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        for t in scheduler.timesteps[:max_steps]:
            if guidance is None:
                eps = unet(x, t, class_labels=labels).sample
            else:
                cond, uncond = unet(torch.cat([x, x]), t, class_labels=class_labels).sample.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            x = scheduler.step(eps, t, x, generator=generator, **step_options).prev_sample
    return x


def check_same_work(ours: nn.Module, theirs: nn.Module, guidance: float) -> dict[str, float]:
    """Max |difference| between the two networks (our middle GroupNorm removed) and between the loops."""
    twin = without_middle_norm(ours)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(4, *SHAPE, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    labels = torch.tensor([0, 3, 9, NULL_CLASS])
    with torch.inference_mode():
        a, b = twin(x, t, labels), theirs(x, t, class_labels=labels).sample
    result = {
        "network_max_abs_diff": (a - b).abs().max().item(),
        "network_max_abs_output": b.abs().max().item(),
    }
    labels = torch.tensor([1, 7])
    x_T = torch.randn(2, *SHAPE, generator=g)
    ddim = ours_loop(ours_sampler("ddim", 50), twin, labels, guidance, 0, 0, x_T=x_T)
    reference = diffusers_loop(diffusers_scheduler("ddim", 50), theirs, labels, guidance, 0, x_T=x_T)
    result["ddim50_cfg_samples_max_abs_diff"] = (ddim - reference).abs().max().item()
    ddpm = ours_loop(ours_sampler("ddpm", 1000), twin, labels, None, 5, 0, max_steps=10)
    reference = diffusers_loop(diffusers_scheduler("ddpm", 1000), theirs, labels, None, 5, max_steps=10)
    result["ddpm1000_first10_steps_max_abs_diff"] = (ddpm - reference).abs().max().item()
    limits = {
        "network_max_abs_diff": 1e-4,
        "ddim50_cfg_samples_max_abs_diff": 1e-3,
        "ddpm1000_first10_steps_max_abs_diff": 1e-4,
    }
    failed = {key: result[key] for key, limit in limits.items() if not result[key] <= limit}
    if failed:
        raise SystemExit(f"the two contestants do not compute the same thing: {failed} (limits {limits})")
    return result


# --------------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------------


class Row:
    """One comparison (a sampler, with or without CFG): both contestants' loops and their timings."""

    def __init__(self, name: str, args, ours: nn.Module, theirs: nn.Module, labels: torch.Tensor):
        kind = "ddpm" if name.startswith("ddpm") else "ddim"
        self.name, self.kind = name, kind
        self.guidance = args.guidance if name.endswith("cfg") else None
        self.num_steps = args.ddpm_steps if kind == "ddpm" else args.ddim_steps
        timed = args.ddpm_timed_steps if kind == "ddpm" else None
        self.timed_steps = min(timed, self.num_steps) if timed else self.num_steps
        self.sampler = ours_sampler(kind, self.num_steps)
        self.scheduler = diffusers_scheduler(kind, self.num_steps)
        self.batch = labels.shape[0]
        self.runs = {
            "ddpmlab": lambda steps, seed: ours_loop(
                self.sampler, ours, labels, self.guidance, seed, args.seed_block, steps
            ),
            "diffusers": lambda steps, seed: diffusers_loop(
                self.scheduler, theirs, labels, self.guidance, seed, steps
            ),
        }
        self.seconds_per_step: dict[str, list[float]] = {name: [] for name in self.runs}
        self.ratios: list[float] = []

    @property
    def label(self) -> str:
        name = f"{self.kind.upper()}-{self.num_steps}" + (
            f" + CFG w={self.guidance:g}" if self.guidance else ""
        )
        if self.timed_steps < self.num_steps:
            name += f" (first {self.timed_steps} of {self.num_steps} steps timed, img/s extrapolated)"
        return name

    def warm_up(self, steps: int) -> None:
        for run in self.runs.values():
            run(min(steps, self.timed_steps), 0)

    def timed_round(self, round_index: int) -> dict[str, float]:
        order = list(self.runs) if round_index % 2 == 0 else list(self.runs)[::-1]
        per_step = {}
        for name in order:
            started = time.perf_counter()
            self.runs[name](self.timed_steps, round_index + 1)
            per_step[name] = (time.perf_counter() - started) / self.timed_steps
            self.seconds_per_step[name].append(per_step[name])
        rates = {name: self.images_per_second(s) for name, s in per_step.items()}
        self.ratios.append(rates["ddpmlab"] / rates["diffusers"])
        return rates

    def images_per_second(self, seconds_per_step: float) -> float:
        """Images per second of the whole ``num_steps`` loop at this per-step time."""
        return self.batch / (seconds_per_step * self.num_steps)

    def result(self) -> dict:
        contestants = {}
        for name, times in self.seconds_per_step.items():
            rates = [self.images_per_second(s) for s in times]
            contestants[name] = {
                "median_seconds_per_step": statistics.median(times),
                "median_images_per_s": statistics.median(rates),
                "min_images_per_s": min(rates),
                "max_images_per_s": max(rates),
                "seconds_per_step": times,
            }
        return {
            "label": self.label,
            "sampler": self.kind,
            "num_steps": self.num_steps,
            "timed_steps_per_loop": self.timed_steps,
            "extrapolated": self.timed_steps < self.num_steps,
            "guidance": self.guidance,
            "contestants": contestants,
            "ratio_ours_over_diffusers": {
                "median_of_round_ratios": statistics.median(self.ratios),
                "min": min(self.ratios),
                "max": max(self.ratios),
                "rounds": self.ratios,
            },
        }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args) -> dict:
    import diffusers

    ours, theirs, unmatched = build_models(args.base, args.seed)
    params = {"ddpmlab": count_parameters(ours), "diffusers": count_parameters(theirs)}
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch}, base {args.base}"
    )
    print(f"parameters: ddpmlab {params['ddpmlab']:,}, diffusers {params['diffusers']:,}")
    if abs(params["ddpmlab"] - params["diffusers"]) > 0.05 * params["diffusers"]:
        raise SystemExit(f"parameter counts differ by more than 5%: {params}")
    check = None
    if not args.no_check:
        check = check_same_work(ours, theirs, args.guidance)
        print(
            "same work (our middle GroupNorm removed): " + ", ".join(f"{k} {v:.1e}" for k, v in check.items())
        )
    labels = torch.arange(args.batch) % NUM_CLASSES
    rows = [Row(name, args, ours, theirs, labels) for name in args.rows]
    for row in rows:
        row.warm_up(args.warmup_steps)
    for r in range(args.rounds):
        for row in rows:
            rates = row.timed_round(r)
            print(
                f"round {r + 1}/{args.rounds} {row.label}: "
                + ", ".join(f"{n} {v:.2f} img/s" for n, v in rates.items())
                + f", ratio {row.ratios[-1]:.3f}"
            )
    return {
        "config": {
            "input": list(SHAPE),
            "base_channels": args.base,
            "channel_mults": [1, 2, 2],
            "num_res_blocks": 2,
            "attention_levels": [2],
            "num_heads": HEADS,
            "num_groups": 32,
            "classes": NUM_CLASSES,
            "null_class": NULL_CLASS,
            "scale_shift": True,
            "batch": args.batch,
            "dtype": "float32",
            "mode": "eval",
            "schedule": "linear, T = 1000",
            "clip_x0": 1.0,
            "guidance": args.guidance,
            "ddpm_steps": args.ddpm_steps,
            "ddpm_timed_steps": args.ddpm_timed_steps,
            "ddim_steps": args.ddim_steps,
            "seed_block": args.seed_block,
            "weights": f"diffusers' initial weights (seed {args.seed}) copied into ours; our middle "
            "attention GroupNorm, absent from diffusers' network, keeps identity weights",
            "ours_parameters_without_diffusers_counterpart": unmatched,
        },
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "warmup_steps": args.warmup_steps,
        "rounds": args.rounds,
        "parameters": params,
        "same_work_check": check,
        "target_ratio": TARGET,
        "rows": [row.result() for row in rows],
    }


def markdown(result: dict) -> str:
    cfg = result["config"]
    p = result["parameters"]
    lines = [
        "# Sampling throughput on the CPU: ddpmlab vs diffusers",
        "",
        f"torch {result['torch']}, diffusers {result['diffusers']}, {result['threads']} threads, "
        f"{result['cpu']} ({result['cpu_count']} CPUs), Python {result['python']}. float32, eval mode, "
        f"batch {cfg['batch']}, inference mode.",
        f"Network (both): 1x28x28, base {cfg['base_channels']}, channel_mults (1, 2, 2), 2 res blocks, "
        f"attention at level 2 (7x7) + middle, {cfg['num_heads']} heads, scale-shift, 32 groups, "
        f"{cfg['classes']} classes + null class {cfg['null_class']}. Parameters: ddpmlab {p['ddpmlab']:,}, "
        f"diffusers {p['diffusers']:,} ({100 * (p['ddpmlab'] / p['diffusers'] - 1):+.3f}%: our middle "
        "attention's GroupNorm).",
        f"Weights: {cfg['weights']}.",
        f"Loops: linear schedule (T = 1000), x0 clipped to [-1, 1]; ddpmlab `DDPMSampler` / `DDIMSampler` "
        f"(+ `ClassifierFreeGuidance`), noise from one generator per {cfg['seed_block'] or 'batch'} samples; "
        "diffusers `DDPMScheduler` / `DDIMScheduler` (clip_sample, trailing spacing; DDIM with "
        "use_clipped_model_output) in the usual loop, "
        "CFG as one batched call on `torch.cat([x, x])` with [labels; null].",
        f"{result['warmup_steps']} warm-up steps per loop, then {result['rounds']} interleaved rounds "
        "(order alternating); medians over rounds.",
        "",
    ]
    check = result.get("same_work_check")
    if check:
        lines += [
            "Same work (a copy of our UNet without the middle GroupNorm vs diffusers, same weights): max "
            f"|output difference| {check['network_max_abs_diff']:.1e} (outputs up to "
            f"{check['network_max_abs_output']:.1f}); samples of DDIM-50 + CFG from the same x_T "
            f"{check['ddim50_cfg_samples_max_abs_diff']:.1e}; DDPM-1000 after 10 steps with one shared "
            f"generator {check['ddpm1000_first10_steps_max_abs_diff']:.1e}.",
            "",
        ]
    lines += [
        "| loop | ddpmlab img/s | diffusers img/s | ddpmlab s/step | diffusers s/step | ours / diffusers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ours, theirs = row["contestants"]["ddpmlab"], row["contestants"]["diffusers"]
        r = row["ratio_ours_over_diffusers"]
        lines.append(
            f"| {row['label']} | {ours['median_images_per_s']:.3f} | {theirs['median_images_per_s']:.3f} | "
            f"{ours['median_seconds_per_step']:.3f} | {theirs['median_seconds_per_step']:.3f} | "
            f"**{r['median_of_round_ratios']:.2f}x** ({r['min']:.2f}..{r['max']:.2f}) |"
        )
    met = [
        row for row in result["rows"] if row["ratio_ours_over_diffusers"]["median_of_round_ratios"] >= TARGET
    ]
    lines += [
        "",
        "img/s: images per second of the whole loop (for rows timed on a prefix: batch / (s/step x steps)). "
        "Ratio: median of the per-round ratios (both contestants timed back to back), range in brackets.",
        "",
        f"Target: ddpmlab >= {TARGET}x diffusers for sampling on this CPU: met in {len(met)} of "
        f"{len(result['rows'])} rows" + (f" ({', '.join(row['label'] for row in met)})." if met else "."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, default=32, help="base channels (32: the MNIST configuration)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="steps of the DDPM loop (its schedule)")
    parser.add_argument(
        "--ddpm-timed-steps",
        type=int,
        default=20,
        help="time only this many first steps of each DDPM loop and extrapolate (0: the whole loop)",
    )
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0, help="CFG scale w of the CFG rows")
    parser.add_argument(
        "--seed-block", type=int, default=8, help="samples per generator for ddpmlab (0: one)"
    )
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per loop before timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (shared) initial weights")
    parser.add_argument("--no-check", action="store_true", help="skip the same-network / same-samples check")
    parser.add_argument(
        "--out", default=str(RESULTS / "sampling_speed_cpu"), help="output path without suffix"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.seed_block and args.batch % args.seed_block:
        parser.error(f"--batch must be a multiple of --seed-block ({args.seed_block})")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    text = markdown(result)
    print(text)
    if not args.no_write:
        write_report(args.out, result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
