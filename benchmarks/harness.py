"""What every benchmark shares: timing, same-work checks, result files, machine info, diffusers' twins.

- **Timing.** :func:`timed` measures calls between device synchronisations; :func:`warm_up` runs the
  untimed calls first; :func:`rotated` gives the order of the contestants in each timed round (rotating
  from round to round, so that load from other processes on a shared machine falls on all alike);
  :func:`rate_stats` and :func:`ratio_stats` summarise the rounds (medians, and the median of per-round
  ratios, both numbers of a ratio coming from the same round).
- **Same work.** Before timing, the speed benchmarks check that the contestants compute the same thing:
  :func:`compare_outputs` (max |difference| of two networks on one input), :func:`require_same_work`
  (every difference within its limit) and :func:`require_similar_size` (parameter counts).
- **Results.** :func:`add_output_options` (``--out``, ``--no-write``), :func:`write_report` (``OUT.json``,
  the data, and ``OUT.md``, the table, both replaced atomically), :func:`publish` and
  :func:`command_line` (the command quoted in a report).
- **Machine and versions.** :func:`cpu_name`, :func:`machine_line`, :func:`versions`.
- **The networks.** :func:`mnist_unet` (the MNIST network of the CPU benchmarks), :func:`diffusers_twin`
  (diffusers' ``UNet2DModel`` configured to the same network as one of our UNets) and
  :func:`load_diffusers_weights` (its weights copied into ours), both by the library's mapping
  (:mod:`ddpmlab.models.diffusers_format`), :func:`without_middle_norm`.
- **The sampling loops.** :func:`ours_sampling_loop` (our sampler, noise drawn as ``ddpmlab sample``
  draws it) and :func:`diffusers_sampling_loop` (the usual diffusers loop, with the standard batched
  classifier-free guidance), with :func:`diffusers_scheduler`.

diffusers is a dev-only dependency: it is imported where it is used.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ddpmlab
from ddpmlab.models import UNet
from ddpmlab.models.diffusers_format import state_dict_from_diffusers, unet2d_config
from ddpmlab.runs import seed_generators
from ddpmlab.sampling import Sampler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The MNIST network of the CPU benchmarks (the mnist5k config's shape): class-conditional, 10 classes
# plus our "no class" row, which is also the null class of classifier-free guidance.
NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES
HEADS = 4
MNIST_SHAPE = (1, 28, 28)


# --------------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------------


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], count: int = 1, device: torch.device | None = None) -> float:
    """Seconds for ``count`` calls of ``fn``, between device synchronisations."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(count):
        fn()
    synchronize(device)
    return time.perf_counter() - started


def warm_up(fns: Iterable[Callable[[], object]], calls: int) -> None:
    """``calls`` untimed calls of each function, one function after the other."""
    for fn in fns:
        for _ in range(calls):
            fn()


def rotated(items: Sequence, round_index: int) -> list:
    """``items`` rotated by the round's index: the order in which the contestants of a round run."""
    shift = round_index % len(items)
    return list(items[shift:]) + list(items[:shift])


def rate_stats(rates: list[float]) -> dict[str, float]:
    """Median, min and max images/s over rounds."""
    return {
        "median_images_per_s": statistics.median(rates),
        "min_images_per_s": min(rates),
        "max_images_per_s": max(rates),
    }


def ratio_stats(ratios: list[float], **extra: float) -> dict:
    """The median of per-round ratios ours / reference, their range, ``extra`` figures and the rounds."""
    return {
        "median_of_round_ratios": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        **extra,
        "rounds": ratios,
    }


# --------------------------------------------------------------------------------------------------
# Same-work checks.
# --------------------------------------------------------------------------------------------------


class DifferentWork(RuntimeError):
    """The contestants of a comparison do not compute the same thing (or not the same amount of it)."""


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def compare_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, t: torch.Tensor, cond=None) -> dict:
    """Max |difference| between our network and diffusers' on one input (inference mode), and the
    largest output (the scale of the difference)."""
    with torch.inference_mode():
        a = ours(x, t) if cond is None else ours(x, t, cond)
        b = theirs(x, t, class_labels=cond).sample
    return {"max_abs_diff": max_abs_diff(a, b), "max_abs_output": b.abs().max().item()}


def require_same_work(found: dict[str, float], limits: dict[str, float]) -> None:
    """Raise DifferentWork unless every ``found[key] <= limits[key]``."""
    failed = {key: found[key] for key, limit in limits.items() if not found[key] <= limit}
    if failed:
        raise DifferentWork(f"the two contestants do not compute the same thing: {failed} (limits {limits})")


def require_similar_size(parameters: dict[str, int], tolerance: float = 0.05) -> None:
    """Raise DifferentWork unless the two parameter counts differ by at most ``tolerance``."""
    ours, theirs = parameters.values()
    if abs(ours - theirs) > tolerance * theirs:
        raise DifferentWork(f"parameter counts differ by more than {tolerance:.0%}: {parameters}")


# --------------------------------------------------------------------------------------------------
# Result files.
# --------------------------------------------------------------------------------------------------


def add_output_options(parser: argparse.ArgumentParser, name: str | None) -> None:
    """``--out`` (default ``benchmarks/results/NAME``; none when ``name`` is None) and ``--no-write``."""
    default = None if name is None else str(RESULTS / name)
    parser.add_argument("--out", default=default, help=f"output path without suffix (default {default})")
    parser.add_argument("--no-write", action="store_true", help="measure without writing the results")


def write_report(out: str | Path, result: dict, text: str, announce: bool = True) -> None:
    """Write a benchmark's results as ``out``.json (the data) and ``out``.md (the table). Each file is
    written beside and then moved into place, so a reader (or a run cut short) never sees half a file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(result, indent=2) + "\n"), (".md", text)):
        path = out.with_suffix(suffix)
        temporary = path.with_suffix(suffix + ".tmp")
        temporary.write_text(content)
        os.replace(temporary, path)
    if announce:
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def publish(args: argparse.Namespace, result: dict, text: str) -> None:
    """Print the table; write both files unless ``--no-write``."""
    print(text)
    if not args.no_write:
        write_report(args.out, result, text)


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The command that ran benchmark ``name`` with ``argv`` (default: this process's arguments)."""
    return shlex.join(["python", "-m", "benchmarks", name, *(sys.argv[1:] if argv is None else argv)])


# --------------------------------------------------------------------------------------------------
# Machine and versions.
# --------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: str | None = None) -> str:
    """One line: processor, torch threads, (device,) torch and Python versions."""
    where = f", device {device}" if device else ""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads{where}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def versions() -> dict[str, Any]:
    """torch (CUDA, cuDNN), Python, ddpmlab, and diffusers / triton where installed (else None)."""
    from importlib import metadata

    found = {}
    for package in ("diffusers", "triton"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "python": platform.python_version(),
        "ddpmlab": ddpmlab.__version__,
        **found,
    }


def config_path(name: str) -> Path:
    """configs/NAME.yaml of the repository, else the copy shipped inside the ddpmlab package."""
    path = ROOT / "configs" / f"{name}.yaml"
    return path if path.is_file() else Path(ddpmlab.__file__).parent / "configs" / f"{name}.yaml"


# --------------------------------------------------------------------------------------------------
# The networks: our MNIST UNet, diffusers' twin of any of our UNets, the same weights in both.
# --------------------------------------------------------------------------------------------------

MNIST_UNET = {
    "in_channels": MNIST_SHAPE[0],
    "channel_mults": (1, 2, 2),
    "num_res_blocks": 2,
    "attention_levels": [2],
    "num_heads": HEADS,
    "dropout": 0.1,
    "image_size": MNIST_SHAPE[-1],
    "condition": "class",
    "num_classes": NUM_CLASSES,
    "scale_shift": True,
    "num_groups": 32,
}


def mnist_unet(base: int, unet_class: type[nn.Module] = UNet) -> nn.Module:
    """The CPU benchmarks' network: 1x28x28, ``base`` channels, mults (1, 2, 2), 2 residual blocks per
    level, attention at level 2 (7x7) and in the middle, 4 heads, FiLM (scale-shift), dropout 0.1, 32
    groups, 10 classes (+ "no class"). ``unet_class``: another copy of our UNet (e.g. an older one)."""
    return unet_class(base_channels=base, **MNIST_UNET)


def mnist_config(base: int) -> dict[str, Any]:
    """The MNIST network's settings, as the reports list them."""
    return {
        "input": list(MNIST_SHAPE),
        "base_channels": base,
        "channel_mults": list(MNIST_UNET["channel_mults"]),
        "num_res_blocks": MNIST_UNET["num_res_blocks"],
        "attention_levels": MNIST_UNET["attention_levels"],
        "num_heads": HEADS,
        "num_groups": MNIST_UNET["num_groups"],
        "classes": NUM_CLASSES,
        "scale_shift": MNIST_UNET["scale_shift"],
    }


def diffusers_twin(ours: nn.Module, size: int, class_embeds: int | None = None) -> nn.Module:
    """diffusers' UNet2DModel configured to the same network as our UNet ``ours``, by the library's
    mapping (:func:`ddpmlab.models.diffusers_format.unet2d_config`); the same parameter count.

    As diffusers' own users configure it, the twin has no GroupNorm in its middle attention when the
    residual blocks use scale_shift (``attn_norm_num_groups`` null): :func:`without_middle_norm` makes
    ours the same network for the comparisons that need it. ``class_embeds``: rows of diffusers' class
    embedding; default our embedding's rows (the classes and the null class, which the sampling
    benchmarks need for classifier-free guidance). The training benchmark passes the real classes only,
    as diffusers' own training would configure it.
    """
    from diffusers import UNet2DModel

    config = {key: value for key, value in unet2d_config(ours, size).items() if not key.startswith("_")}
    config["attn_norm_num_groups"] = None
    if class_embeds is not None:
        config["num_class_embeds"] = class_embeds
    return UNet2DModel(**config)


MIDDLE_NORM = ("middle.0.attention.norm.weight", "middle.0.attention.norm.bias")


def load_diffusers_weights(theirs: nn.Module, ours: nn.Module) -> list[str]:
    """Load diffusers' weights into our UNet (the library's mapping,
    :func:`ddpmlab.models.diffusers_format.state_dict_from_diffusers`); returns our parameters
    diffusers has no copy of (with scale_shift, the middle attention's GroupNorm, which keeps its
    identity weights)."""
    try:
        flip = theirs.config.flip_sin_to_cos
        mapped = state_dict_from_diffusers(theirs.state_dict(), ours, flip, strict=False)
    except ValueError as error:
        raise DifferentWork(f"weight transfer failed: {error}") from None
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    if unexpected or not set(missing) <= set(MIDDLE_NORM):
        raise DifferentWork(f"weight transfer failed: missing {missing}, unexpected {unexpected}")
    return list(missing)


def without_middle_norm(ours: nn.Module) -> nn.Module:
    """A copy of our UNet whose middle attention block does not normalise its input: diffusers' network
    exactly when diffusers has no GroupNorm there (scale_shift). ``ours`` itself is left as it is."""
    twin = copy.deepcopy(ours)
    twin.set_submodule("middle.0.attention.norm", nn.Identity())
    return twin


# --------------------------------------------------------------------------------------------------
# The sampling loops.
# --------------------------------------------------------------------------------------------------


def diffusers_scheduler(kind: str, num_steps: int):
    """diffusers' DDPM / DDIM scheduler at our settings: linear betas, T = 1000, x0 clipped, trailing."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, timestep_spacing="trailing"
    )
    scheduler = DDPMScheduler(**common) if kind == "ddpm" else DDIMScheduler(**common)
    scheduler.set_timesteps(num_steps)
    return scheduler


def ours_sampling_loop(
    sampler: Sampler,
    denoiser: Callable[..., torch.Tensor],
    shape: tuple[int, ...],
    cond: Any,
    seed: int,
    seed_block: int,
    max_steps: int | None = None,
    x_T: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Our sampler's loop as ``ddpmlab sample`` runs it: noise from one generator per ``seed_block``
    samples (0: one generator for the batch, as diffusers); stops after ``max_steps`` steps if given."""
    device = torch.device(device)
    if seed_block:
        generator = seed_generators(seed, 0, shape[0], seed_block, device)
    else:
        generator = torch.Generator(device).manual_seed(seed)
    steps = sampler.steps(denoiser, shape, cond, generator=generator, x_T=x_T, device=device)
    for count, step in enumerate(steps, 1):
        if count == max_steps:
            break
    steps.close()
    return step.x_prev


def diffusers_sampling_loop(
    scheduler,
    unet: nn.Module,
    shape: tuple[int, ...],
    labels: torch.Tensor | None,
    guidance: float | None,
    seed: int,
    max_steps: int | None = None,
    x_T: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    null_class: int = NULL_CLASS,
) -> torch.Tensor:
    """The usual diffusers loop (as in DDPMPipeline), with one generator on ``device``; for classifier-
    free guidance (``guidance`` w) the standard batched call on ``cat([x, x])`` with ``[labels; null]``,
    then ``uncond + w (cond - uncond)``; ``null_class``: the twin's extra class-embedding row."""
    generator = torch.Generator(device).manual_seed(seed)
    # DDIM: eps re-derived from the clipped x0, as our sampler does (DDIMPipeline's use_clipped_model_output)
    step_options = {"use_clipped_model_output": True} if "DDIM" in type(scheduler).__name__ else {}
    with torch.inference_mode():
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype) if x_T is None else x_T
        if guidance is not None:
            both = torch.cat([labels, torch.full_like(labels, null_class)])
        for t in scheduler.timesteps[:max_steps]:
            if guidance is None:
                eps = unet(x, t, class_labels=labels).sample
            else:
                cond, uncond = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            x = scheduler.step(eps, t, x, generator=generator, **step_options).prev_sample
    return x
