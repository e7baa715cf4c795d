"""Sampling throughput of ddpmlab against diffusers at the MNIST configuration, on the CPU.

Run by hand (not a test; diffusers is a dev-only dependency):

    .venv/bin/python -m benchmarks sampling                    # the default run (~8 min, 2 idle cores)
    .venv/bin/python -m benchmarks sampling --rounds 5 --ddpm-timed-steps 50
    .venv/bin/python -m benchmarks sampling --ddpm-timed-steps 1000   # the whole DDPM-1000 loop (long)
    .venv/bin/python -m benchmarks sampling --rows ddim ddim-cfg --batch 16 --rounds 2 --no-write

Contestants, in one process, float32, eval mode, the same batch and class labels:

- ddpmlab: our ``UNet`` configured like ``harness.mnist_unet(base)`` (class-conditional, 10 classes plus
  the "no class" row), driven by our ``DDPMSampler`` / ``DDIMSampler`` (clip_x0=1), with
  ``ClassifierFreeGuidance`` (w = 3, null class 10) for the CFG rows. The initial noise and the DDPM
  noise come from one generator per seed block of 8 samples, as ``ddpmlab sample`` draws them
  (``--seed-block 0``: one generator for the batch, as diffusers).
- diffusers: ``UNet2DModel`` configured to the same network (``harness.diffusers_twin``: 11 class
  embeddings, the extra index 10 being the null class), driven by ``DDPMScheduler`` / ``DDIMScheduler``
  (linear betas, clip_sample=True, trailing spacing) in the usual diffusers loop under
  ``torch.inference_mode()``: ``unet(x, t, class_labels=labels).sample`` then ``scheduler.step``; for
  CFG the standard two-branch batched call on ``torch.cat([x, x])`` with ``[labels; null]``, then
  ``uncond + w (cond - uncond)``. DDIM steps pass ``use_clipped_model_output=True`` (an option of
  DDIMPipeline): eps is re-derived from the clipped x0, as our DDIMSampler does with clip_x0.

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
import os
import platform
import statistics
import sys

import torch
from torch import nn

from benchmarks import harness
from benchmarks.harness import MNIST_SHAPE, NULL_CLASS, NUM_CLASSES
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.models import count_parameters
from ddpmlab.sampling import DDIMSampler, DDPMSampler, Sampler
from ddpmlab.schedules import make_schedule

ROWS = ("ddpm", "ddpm-cfg", "ddim", "ddim-cfg")
TARGET = 1.3


def build_models(base: int, seed: int) -> tuple[nn.Module, nn.Module, list[str]]:
    """(ours, diffusers) with the same weights, eval mode; and our parameters diffusers has no copy of."""
    ours = harness.mnist_unet(base).eval()
    torch.manual_seed(seed)  # diffusers' initial weights, which both networks then hold
    theirs = harness.diffusers_twin(ours, MNIST_SHAPE[-1]).eval()
    missing = harness.load_diffusers_weights(theirs, ours)
    if set(missing) != set(harness.MIDDLE_NORM):
        raise harness.DifferentWork(f"weight transfer failed: missing {missing}")
    return ours, theirs, missing


def ours_sampler(kind: str, num_steps: int) -> Sampler:
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    if kind == "ddpm":
        return DDPMSampler(diffusion, num_steps, clip_x0=1.0)
    return DDIMSampler(diffusion, num_steps, clip_x0=1.0)


def guided(model: nn.Module, guidance: float | None) -> nn.Module:
    """``model`` with classifier-free guidance at scale ``guidance`` (None: the model itself)."""
    return model if guidance is None else ClassifierFreeGuidance(model, guidance, NULL_CLASS)


def ours_loop(sampler, model, labels, guidance, seed, seed_block, max_steps=None, x_T=None) -> torch.Tensor:
    """ddpmlab's sampling, as ``sample_run`` does it; stops after ``max_steps`` steps if given."""
    shape = (labels.shape[0], *MNIST_SHAPE)
    denoiser = guided(model, guidance)
    return harness.ours_sampling_loop(sampler, denoiser, shape, labels, seed, seed_block, max_steps, x_T)


def diffusers_loop(scheduler, unet, labels, guidance, seed, max_steps=None, x_T=None) -> torch.Tensor:
    """The usual diffusers loop (as in DDPMPipeline, with the standard CFG batching)."""
    shape = (labels.shape[0], *MNIST_SHAPE)
    return harness.diffusers_sampling_loop(scheduler, unet, shape, labels, guidance, seed, max_steps, x_T)


def check_same_work(ours: nn.Module, theirs: nn.Module, guidance: float) -> dict[str, float]:
    """Max |difference| between the two networks (our middle GroupNorm removed) and between the loops."""
    twin = harness.without_middle_norm(ours)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(4, *MNIST_SHAPE, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    network = harness.compare_outputs(twin, theirs, x, t, torch.tensor([0, 3, 9, NULL_CLASS]))
    result = {f"network_{key}": value for key, value in network.items()}
    labels = torch.tensor([1, 7])
    x_T = torch.randn(2, *MNIST_SHAPE, generator=g)
    ddim = ours_loop(ours_sampler("ddim", 50), twin, labels, guidance, 0, 0, x_T=x_T)
    reference = diffusers_loop(harness.diffusers_scheduler("ddim", 50), theirs, labels, guidance, 0, x_T=x_T)
    result["ddim50_cfg_samples_max_abs_diff"] = harness.max_abs_diff(ddim, reference)
    ddpm = ours_loop(ours_sampler("ddpm", 1000), twin, labels, None, 5, 0, max_steps=10)
    scheduler = harness.diffusers_scheduler("ddpm", 1000)
    reference = diffusers_loop(scheduler, theirs, labels, None, 5, max_steps=10)
    result["ddpm1000_first10_steps_max_abs_diff"] = harness.max_abs_diff(ddpm, reference)
    limits = {
        "network_max_abs_diff": 1e-4,
        "ddim50_cfg_samples_max_abs_diff": 1e-3,
        "ddpm1000_first10_steps_max_abs_diff": 1e-4,
    }
    harness.require_same_work(result, limits)
    return result


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
        self.scheduler = harness.diffusers_scheduler(kind, self.num_steps)
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
        per_step = {}
        for name in harness.rotated(list(self.runs), round_index):
            seconds = harness.timed(lambda loop=self.runs[name]: loop(self.timed_steps, round_index + 1))
            per_step[name] = seconds / self.timed_steps
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
                **harness.rate_stats(rates),
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
            "ratio_ours_over_diffusers": harness.ratio_stats(self.ratios),
        }


def time_rows(args, ours: nn.Module, theirs: nn.Module) -> list[Row]:
    """Every row warmed up, then ``--rounds`` rounds of all rows."""
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
    return rows


def run(args) -> dict:
    ours, theirs, unmatched = build_models(args.base, args.seed)
    params = {"ddpmlab": count_parameters(ours), "diffusers": count_parameters(theirs)}
    diffusers_version = harness.versions()["diffusers"]
    print(
        f"torch {torch.__version__}, diffusers {diffusers_version}, {torch.get_num_threads()} threads, "
        f"batch {args.batch}, base {args.base}"
    )
    print(f"parameters: ddpmlab {params['ddpmlab']:,}, diffusers {params['diffusers']:,}")
    harness.require_similar_size(params)
    check = None
    if not args.no_check:
        check = check_same_work(ours, theirs, args.guidance)
        print(
            "same work (our middle GroupNorm removed): " + ", ".join(f"{k} {v:.1e}" for k, v in check.items())
        )
    rows = time_rows(args, ours, theirs)
    return {
        "config": config(args, unmatched),
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "threads": torch.get_num_threads(),
        "cpu": harness.cpu_name(),
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


def config(args, unmatched: list[str]) -> dict:
    """The settings of the run, as the report lists them."""
    return {
        **harness.mnist_config(args.base),
        "null_class": NULL_CLASS,
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
    return "\n".join(lines + table(result))


def table(result: dict) -> list[str]:
    """The rows' table and the verdict on the target."""
    lines = [
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
    return lines


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
    harness.add_output_options(parser, "sampling_speed_cpu")
    args = parser.parse_args(argv)
    if args.seed_block and args.batch % args.seed_block:
        parser.error(f"--batch must be a multiple of --seed-block ({args.seed_block})")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except harness.DifferentWork as error:
        raise SystemExit(str(error)) from None
    harness.publish(args, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
