"""What the GPU benchmark's sections share: settings, the wall budget, device flags and facts, the models.

- the settings: sections, targets, the bf16 peaks of known GPUs, the ``--smoke`` settings;
- :class:`Budget` (the run's wall clock, with reserves held back for later sections), :class:`OutOfTime`
  and :class:`Terminated`;
- the platform flags of a row (:func:`set_flags`, :class:`Speedups`), :func:`device_info`;
- our UNets as ``ddpmlab train`` builds them from the configs (:func:`load`, :func:`build_ours`), their
  FLOPs per image (:func:`count_flops`), and synthetic images (no datasets on the GPU machine).
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import harness
from benchmarks.gpu.denoisers import DiffusersDenoiser
from ddpmlab.config import Config, load_config
from ddpmlab.runs import DataInfo, build_model_for

SECTIONS = ("flops", "memory", "train", "loss", "sample")
# Seconds each section needs at least on a GPU: a running section leaves this much to those after it.
SECTION_RESERVE_S = {"flops": 5, "memory": 15, "train": 60, "loss": 40, "sample": 60}
NUM_CLASSES = {"cifar10": 0, "cifar10_cond": 10, "imagenet100_128": 100}
# Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA data sheets); the first name found in the device name wins.
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
)
TARGETS = {
    "train_images_per_s": 4000.0,
    "train_ratio_vs_diffusers": 1.5,
    "ddpm_seconds": 10.0,
    "sample_ratio_vs_diffusers": 2.0,
    "issue_forward_gflop_per_image": 12.1,
}
# --smoke: the defaults of these options (explicit options still win), on the CPU.
SMOKE = {
    "device": "cpu",
    "base": 32,
    "image_size": 16,
    "batch": 4,
    "sample_batch": 4,
    "seed_block": 2,
    "ddpm_steps": 10,
    "ddim_steps": 4,
    "memory_batch": 2,
    "memory_image_size": 16,
    "loss_steps": 6,
    "loss_last": 3,
    "warmup": 1,
    "rounds": 2,
    "round_seconds": 0.0,
    "min_steps": 1,
    "max_steps": 2,
    "compile_backend": "eager",
    "compile_reserve_s": 0.0,
    "threads": 1,
}
# In --smoke, fewer levels and blocks too: tracing (torch.compile) and every step cost less.
SMOKE_OVERRIDES = {
    "cifar10": ("model.channel_mults=[1,2]", "model.num_res_blocks=1"),
    "cifar10_cond": ("model.channel_mults=[1,2]", "model.num_res_blocks=1"),
    "imagenet100_128": ("model.channel_mults=[1,2]", "model.num_res_blocks=1", "model.attention_levels=[1]"),
}


def say(text: str) -> None:
    """Print one line at once (partial output of a run cut short stays useful)."""
    print(text, flush=True)


# --------------------------------------------------------------------------------------------------
# Budget, device and flags.
# --------------------------------------------------------------------------------------------------


class OutOfTime(Exception):
    """The wall budget left to a section is spent."""


class Terminated(BaseException):
    """SIGTERM (e.g. from ``timeout``): stop every section, keep what was saved."""


class Budget:
    """The run's wall-clock budget; ``keep`` seconds are held back for the sections still to come."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.keep = 0.0

    def left(self) -> float:
        return self.deadline - self.keep - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def need(self, seconds: float, what: str) -> None:
        """Raise OutOfTime unless ``seconds`` are left for ``what``."""
        if self.left() < seconds:
            raise OutOfTime(f"{what}: needs ~{seconds:.0f} s, {max(self.left(), 0):.0f} s left")


def set_flags(tf32: bool, cudnn_benchmark: bool) -> None:
    """TF32 for fp32 matmuls and convolutions, and cuDNN autotuning (global flags, set before each row).

    The legacy setters are used on purpose: they keep every getter of the old and new flag APIs working
    (a mix of the two makes some getters raise in torch >= 2.9)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    """The bf16 dense peak of a device, and where the number comes from."""
    if override:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value, f"table ({key})"
    return None, "unknown device: pass --peak-tflops for MFU"


def device_info(device: torch.device, override: float | None) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info = {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    else:
        info = {"type": device.type, "name": harness.cpu_name(), "threads": torch.get_num_threads()}
    info["peak_bf16_tflops"], info["peak_source"] = peak_tflops(info["name"], override)
    return info


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Speedups:
    """The settings of one row; each is a platform feature whose effect gets its own row."""

    tf32: bool = False
    bf16: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    fused_adamw: bool = False
    compile: bool = False
    cuda_graph: bool = False

    def describe(self) -> str:
        names = [name for name, on in asdict(self).items() if on]
        return " + ".join(names) if names else "fp32 (TF32 off)"


# --------------------------------------------------------------------------------------------------
# Models from the configs, their FLOPs, synthetic data.
# --------------------------------------------------------------------------------------------------


def load(name: str, args, overrides: tuple[str, ...] = ()) -> Config:
    """A config of configs/, with ``--base`` (and in --smoke, a smaller network) applied."""
    options = list(SMOKE_OVERRIDES[name] if args.smoke else ()) + list(overrides)
    if args.base:
        options.append(f"model.base_channels={args.base}")
    return load_config(harness.config_path(name), options)


def image_size(name: str, args, config: Config) -> int:
    if name == "imagenet100_128":
        return args.memory_image_size or config.data.image_size or 128
    return args.image_size


def build_ours(name: str, args, overrides: tuple[str, ...] = ()) -> nn.Module:
    """Our UNet as ``ddpmlab train`` builds it from configs/NAME.yaml (3 channels, ``image_size``)."""
    config = load(name, args, overrides)
    size = image_size(name, args, config)
    info = DataInfo("image", (3, size, size), NUM_CLASSES[name])
    return build_model_for(config, info)


def count_flops(name: str, contestant: str, train: bool, args, batch: int = 2) -> float:
    """FLOPs per image of one forward pass (``train``: forward + backward of a mean-square loss), as
    counted by FlopCounterMode; on the meta device, so no time on the GPU."""
    from diffusers import UNet2DModel  # noqa: F401  (imported outside the meta device context)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        ours = build_ours(name, args)
        size = image_size(name, args, load(name, args))
        model = ours if contestant == "ours" else DiffusersDenoiser(harness.diffusers_twin(ours, size))
        x = torch.randn(batch, 3, size, size)
        t = torch.randint(0, 1000, (batch,))
        cond = torch.randint(0, NUM_CLASSES[name], (batch,)) if NUM_CLASSES[name] else None
    model.train(train)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = model(x, t) if cond is None else model(x, t, cond)
        if train:
            out.float().square().mean().backward()
    return counter.get_total_flops() / batch


def synthetic_images(count: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """Smooth random RGB images in (-1, 1): a few octaves of upsampled noise (CIFAR-10 is not on the GPU
    machine; the loss comparison only needs the same learnable data for every run)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 3, size, size)
    for cells in (2, 4, 8, 16):
        if cells <= size:
            coarse = torch.randn(count, 3, cells, cells, generator=g)
            images += F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) / cells
    return torch.tanh(1.5 * images).to(device)
