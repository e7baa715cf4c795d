"""GPU speed of ddpmlab at Ho et al.'s CIFAR-10 configuration: training, sampling, memory, loss, FLOPs.

One command measures everything the GPU issue asks for, within a wall budget, and writes
``benchmarks/results/gpu_speed.{json,md}`` (rewritten after every row, so a run cut short keeps what
it measured)::

    python -m benchmarks gpu                                  # every section, 420 s wall budget
    python -m benchmarks gpu --sections train,sample --budget-s 300
    python -m benchmarks gpu --peak-tflops 989                # MFU against another bf16 peak
    python -m benchmarks gpu --smoke                          # every section on the CPU, tiny model, ~20 s

Without installing ddpmlab (e.g. on a bare GPU machine that has torch): from the repository root,
``PYTHONPATH=src python -m benchmarks gpu --out DIR/gpu_speed``; diffusers must be importable too (it is
pure Python: ``pip install --no-deps diffusers`` next to torch, numpy, huggingface_hub, safetensors).
Give the command ~1.3x ``--budget-s`` of wall time: the budget is checked between rows, and a compile
cannot be interrupted. A run cut short (``timeout`` sends SIGTERM) keeps every row written so far.

On the project's lent GPU machine (torch present; no ddpmlab, no diffusers, no internet), one device call:
first, here, ``.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
--implementation cp --platform manylinux2014_x86_64 diffusers -d .venv/gpu-wheels`` (match the machine's
Python), then run with ``carry=[".venv/gpu-wheels"]`` and a timeout of ~570 s::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .venv/gpu-wheels/*.whl \
      || exit 1; export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1; nvidia-smi -L;
    timeout -k 15 540 python3 -m benchmarks gpu --budget-s 420 --out $OUT/gpu_speed 2>&1 \
      | tee $OUT/gpu_speed.log

and copy ``gpu_speed.json`` / ``.md`` from the returned files into ``benchmarks/results/``.

Network: ``configs/cifar10.yaml`` (35.7M parameters: base 128, mults 1,2,2,2, 2 residual blocks,
attention at 16x16, 1 head, dropout 0.1, additive time embedding), 3x32x32, batch 128; the CFG rows use
``configs/cifar10_cond.yaml`` (the same network plus a class embedding). diffusers' ``UNet2DModel`` is
configured to the same network (``diffusers_twin`` of sampling_speed.py; same parameter count) and,
where the weights matter (sampling), holds the same weights (copied with ``load_diffusers_weights`` of
sampling_speed.py; the copy is checked: same outputs in fp32).

Sections (``--sections``, run in this order):

- ``flops``: FLOPs per image of one forward pass and of a training step (forward + backward), counted
  by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device, for ours, diffusers' twin and the
  imagenet100_128 UNet; on a GPU also which SDPA backends accept the attention shapes.
- ``memory``: peak GPU memory of training steps of ``configs/imagenet100_128.yaml`` at batch 64 (bf16
  autocast, channels_last, fused AdamW), with and without ``gradient_checkpointing``; also the bytes of
  activations autograd saves (device independent) and the step time.
- ``train``: training images/s, one row per speed-up, each added to the previous row's settings (fp32
  with TF32 off, + TF32, + bf16 autocast, + channels_last, + cudnn.benchmark, + fused AdamW, +
  torch.compile), diffusers fp32 and diffusers at its best settings (bf16 autocast, SDPA attention,
  TF32, cudnn.benchmark, fused AdamW), all in one process, timed in interleaved rounds; then the
  library's own ``Trainer.fit`` as shipped (bf16, compile, fused AdamW). A step is the library's
  ``GaussianDiffusion.training_loss`` on a fixed batch (t and noise drawn on the device), backward,
  gradient clipping at 1.0, AdamW, EMA update, for ours and diffusers alike.
- ``loss``: the same seed and number of steps in fp32 (TF32 off) and at the fastest setting, on
  synthetic smooth images (no CIFAR-10 on the GPU machine); mean loss of the last N steps, and the
  fastest setting with another seed as the scale of run-to-run noise.
- ``sample``: 256 images, DDPM-1000 with our ``DDPMSampler`` against a DDPMPipeline-style diffusers
  loop (``UNet2DModel`` + ``DDPMScheduler.step`` in a Python loop), and DDIM-50 with CFG (w = 3) against
  the usual batched diffusers CFG loop; our rows add bf16 autocast, channels_last, a manual
  ``torch.cuda.CUDAGraph`` of one denoiser call, and ``torch.compile(mode="reduce-overhead")``. Rows time
  a prefix of the loop (per-step cost does not depend on t) and extrapolate; the fastest DDPM row is
  then also timed over the whole loop.

Benchmark-side, not ddpmlab options: channels_last, the TF32 / cudnn.benchmark flags, and for sampling
bf16 autocast, torch.compile and CUDA graphs (wrappers around the model that our sampler calls as any
denoiser). The library's own options are used for the rest: the sampler loop, seed blocks of device
generators as ``ddpmlab sample`` draws noise, CFG, the diffusion loss, the Trainer (bf16, compile,
fused AdamW on CUDA), ``gradient_checkpointing``.

Timing: every row runs untimed warm-up steps first (compile and CUDA-graph capture happen there and are
reported separately), then ``--rounds`` timed rounds between ``torch.cuda.synchronize()`` calls; medians.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import ddpmlab
from ddpmlab.config import Config, TrainConfig, load_config
from ddpmlab.data.batches import SampledBatches
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.models import count_parameters
from ddpmlab.runs import DataInfo, build_diffusion, build_model_for, seed_generators
from ddpmlab.sampling import make_sampler
from ddpmlab.training.ema import EMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling_speed import cpu_name, diffusers_scheduler, diffusers_twin, load_diffusers_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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
SMOKE = {
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, count: int, device: torch.device) -> float:
    """Seconds for ``count`` calls of ``fn``, between device synchronizations."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(count):
        fn()
    synchronize(device)
    return time.perf_counter() - started


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
        info = {"type": device.type, "name": cpu_name(), "threads": torch.get_num_threads()}
    info["peak_bf16_tflops"], info["peak_source"] = peak_tflops(info["name"], override)
    return info


def versions() -> dict:
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


# --------------------------------------------------------------------------------------------------
# Models: ours from the configs, diffusers' twin, wrappers.
# --------------------------------------------------------------------------------------------------


def config_path(name: str) -> Path:
    path = ROOT / "configs" / f"{name}.yaml"
    return path if path.is_file() else Path(ddpmlab.__file__).parent / "configs" / f"{name}.yaml"


def load(name: str, args, overrides: tuple[str, ...] = ()) -> Config:
    """A config of configs/, with ``--base`` (and in --smoke, a smaller network) applied."""
    options = list(SMOKE_OVERRIDES[name] if args.smoke else ()) + list(overrides)
    if args.base:
        options.append(f"model.base_channels={args.base}")
    return load_config(config_path(name), options)


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


def bypass_label_check(model: nn.Module) -> bool:
    """Benchmark-side: ``ClassEmbedding.labels`` checks the label range (``labels.min() < 0 or ...``) at
    every call, a device-to-host sync that a CUDA graph cannot capture, that makes torch.compile break
    its graph, and that meta tensors cannot answer. The benchmark's labels are valid by construction, so
    on this model copy the embedding takes them unchecked. True if there was a check to bypass."""
    encoder = getattr(model, "condition_encoder", None)
    if encoder is None or not hasattr(encoder, "embedding"):
        return False
    encoder.labels = lambda cond: torch.as_tensor(cond, device=encoder.embedding.weight.device).long()
    return True


class DiffusersDenoiser(nn.Module):
    """diffusers' UNet2DModel called as a ddpmlab denoiser: ``(x_t, t, cond=None) -> eps``."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.unet(x_t, t, class_labels=cond, return_dict=False)[0]


class PreparedDenoiser(nn.Module):
    """Benchmark-side: runs ``model`` under bf16 autocast and/or on a channels-last copy of x_t."""

    def __init__(self, model: nn.Module, bf16: bool, channels_last: bool, device_type: str) -> None:
        super().__init__()
        self.model, self.bf16, self.channels_last, self.device_type = model, bf16, channels_last, device_type

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        # no cast cache: the casts must happen inside a captured CUDA graph (as make_graphed_callables asks)
        with torch.autocast(self.device_type, torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            return self.model(x_t, t) if cond is None else self.model(x_t, t, cond)


class CompiledDenoiser(nn.Module):
    """Benchmark-side: ``torch.compile`` of a denoiser. With CUDA graphs (mode reduce-overhead) every call
    starts a new graph step, and the output is copied out before the next replay overwrites it."""

    def __init__(self, denoiser: nn.Module, backend: str, mode: str | None) -> None:
        super().__init__()
        self.cudagraphs = mode == "reduce-overhead"
        self.fn = compile_module(denoiser, backend, mode)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self.fn(x_t, t) if cond is None else self.fn(x_t, t, cond)
        return out.clone() if self.cudagraphs else out


class GraphedDenoiser(nn.Module):
    """Benchmark-side: one manually captured ``torch.cuda.CUDAGraph`` of ``denoiser(x_t, t[, cond])``.

    Captured at the first call, for its shapes, after ``warmup`` calls on a side stream; every call then
    copies its inputs into the static buffers, replays the graph and returns a copy of the output."""

    def __init__(self, denoiser: nn.Module, warmup: int = 3) -> None:
        super().__init__()
        self.denoiser, self.warmup = denoiser, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, Any] = {}
        self.output: torch.Tensor | None = None
        self.capture_seconds = 0.0

    def _call_static(self) -> torch.Tensor:
        s = self.static
        return (
            self.denoiser(s["x"], s["t"]) if s["cond"] is None else self.denoiser(s["x"], s["t"], s["cond"])
        )

    def _capture(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> None:
        started = time.perf_counter()
        self.static = {"x": x_t.clone(), "t": t.clone(), "cond": None if cond is None else cond.clone()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self._call_static()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._call_static()
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - started

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.graph is None:
            self._capture(x_t, t, cond)
        if x_t.shape != self.static["x"].shape:
            raise ValueError(f"graph captured for {list(self.static['x'].shape)}, got {list(x_t.shape)}")
        self.static["x"].copy_(x_t)
        self.static["t"].copy_(t)
        if cond is not None:
            self.static["cond"].copy_(cond)
        self.graph.replay()
        return self.output.clone()


def compile_module(module: nn.Module, backend: str, mode: str | None = None):
    """``torch.compile`` with static shapes; ``mode`` only for inductor (other backends take none)."""
    if backend != "inductor":
        mode = None
    return torch.compile(module, backend=backend, mode=mode, dynamic=False)


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


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Context and report.
# --------------------------------------------------------------------------------------------------


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


class Report:
    """The results so far; written (JSON and Markdown) after every row when ``out`` is given."""

    def __init__(self, meta: dict, out: Path | None) -> None:
        self.data = {**meta, "sections": {}}
        self.out = out

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"rows": []})

    def add_row(self, name: str, row: dict) -> dict:
        self.section(name)["rows"].append(row)
        self.save()
        return row

    def save(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for suffix, text in ((".json", json.dumps(self.data, indent=2) + "\n"), (".md", markdown(self.data))):
            path = self.out.with_suffix(suffix)
            temporary = path.with_suffix(suffix + ".tmp")
            temporary.write_text(text)
            os.replace(temporary, path)


class Context:
    """What every section needs: options, device, budget, report, and FLOP counts (cached)."""

    def __init__(self, args, device: torch.device, budget: Budget, report: Report) -> None:
        self.args, self.device, self.budget, self.report = args, device, budget, report
        self.peak = report.data["device"]["peak_bf16_tflops"]
        self._flops: dict[tuple, float] = {}

    def flops(self, name: str, contestant: str, train: bool) -> float:
        """FLOPs per image of ``contestant`` ("ours" / "diffusers") on config ``name``."""
        key = (name, contestant, train)
        if key not in self._flops:
            self._flops[key] = count_flops(name, contestant, train, self.args)
        return self._flops[key]

    def rates(self, images_per_s: float, flops_per_image: float) -> tuple[float, float | None]:
        """(TFLOP/s, MFU against the bf16 peak or None)."""
        tflops = images_per_s * flops_per_image / 1e12
        return tflops, (tflops / self.peak if self.peak else None)

    def skip(self, section: str, key: str, label: str, reason: str) -> None:
        say(f"[{section}] {label}: skipped ({reason})")
        self.report.add_row(section, {"key": key, "label": label, "skipped": reason})

    def failed(self, section: str, key: str, label: str, error: Exception) -> None:
        """A row that raised: recorded (with its traceback) so that the other rows still run."""
        text = str(error).strip()
        message = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        trace = traceback.format_exc()
        say(f"[{section}] {label}: ERROR {message}\n{trace}")
        row = {"key": key, "label": label, "skipped": f"error: {message}", "error": message}
        self.report.add_row(section, {**row, "traceback": trace})
        free_memory(self.device)


# --------------------------------------------------------------------------------------------------
# FLOPs.
# --------------------------------------------------------------------------------------------------


def count_flops(name: str, contestant: str, train: bool, args, batch: int = 2) -> float:
    """FLOPs per image of one forward pass (``train``: forward + backward of a mean-square loss), as
    counted by FlopCounterMode; on the meta device, so no time on the GPU."""
    from diffusers import UNet2DModel  # noqa: F401  (imported outside the meta device context)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        ours = build_ours(name, args)
        bypass_label_check(ours)
        size = image_size(name, args, load(name, args))
        model = ours if contestant == "ours" else DiffusersDenoiser(diffusers_twin(ours, size))
        x = torch.randn(batch, 3, size, size)
        t = torch.randint(0, 1000, (batch,))
        cond = torch.randint(0, NUM_CLASSES[name], (batch,)) if NUM_CLASSES[name] else None
    model.train(train)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = model(x, t) if cond is None else model(x, t, cond)
        if train:
            out.float().square().mean().backward()
    return counter.get_total_flops() / batch


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
            seconds = timed(run, 5, device) / 5
    except RuntimeError as error:
        return f"no ({str(error).splitlines()[0][:80]})"
    return f"{seconds * 1e3:.2f} ms fwd+bwd"


def run_flops(ctx: Context) -> None:
    section = ctx.report.section("flops")
    section["method"] = "torch.utils.flop_counter.FlopCounterMode on the meta device, batch 2, per image"
    for name, contestant in (("cifar10", "ours"), ("cifar10", "diffusers"), ("imagenet100_128", "ours")):
        forward, train = ctx.flops(name, contestant, False), ctx.flops(name, contestant, True)
        size = image_size(name, ctx.args, load(name, ctx.args))
        with torch.device("meta"):
            ours = build_ours(name, ctx.args)
            params = count_parameters(ours if contestant == "ours" else diffusers_twin(ours, size))
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


# --------------------------------------------------------------------------------------------------
# Training rows.
# --------------------------------------------------------------------------------------------------


def make_adamw(parameters: list[nn.Parameter], lr: float, fused: bool) -> torch.optim.Optimizer:
    if fused:
        return torch.optim.AdamW(parameters, lr=lr, fused=True)
    return torch.optim.AdamW(parameters, lr=lr, foreach=True)


class TrainRow:
    """A model with its optimizer and EMA, trained with one row's settings.

    A step: ``diffusion.training_loss`` (t and noise from a device generator) under autocast when bf16,
    backward, gradient clipping at 1.0, AdamW, EMA update: what ``Trainer`` does per step, without its
    logging (the Trainer row measures the library's loop itself)."""

    def __init__(
        self,
        key: str,
        label: str,
        net: nn.Module,
        speedups: Speedups,
        ctx: Context,
        lr: float,
        config="cifar10",
    ):
        self.key, self.label, self.speedups, self.ctx = key, label, speedups, ctx
        self.model = net.to(ctx.device)
        if speedups.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_adamw(self.parameters, lr, speedups.fused_adamw)
        self.ema = EMA(self.model, 0.9999)
        backend = ctx.args.compile_backend
        self.forward = compile_module(self.model, backend) if speedups.compile else self.model
        self.generator = torch.Generator(ctx.device).manual_seed(ctx.args.seed)
        self.diffusion = build_diffusion(load(config, ctx.args))
        self.step_seconds: list[float] = []
        self.first_step_s = self.warmup_s = 0.0
        self.round_steps = ctx.args.min_steps

    def activate(self) -> None:
        set_flags(self.speedups.tf32, self.speedups.cudnn_benchmark)

    def step(self, x0: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.speedups.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.ctx.device.type, torch.bfloat16, enabled=self.speedups.bf16):
            loss = self.diffusion.training_loss(self.forward, x0, cond, self.generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        return loss.detach()

    def warm_up(self, x0: torch.Tensor, steps: int) -> float:
        """Untimed steps (the first compiles); returns an estimate of the seconds per step."""
        self.activate()
        device = self.ctx.device
        self.first_step_s = timed(lambda: self.step(x0), 1, device)
        rest = timed(lambda: self.step(x0), max(steps - 1, 1), device) / max(steps - 1, 1)
        self.warmup_s = self.first_step_s + rest * max(steps - 1, 1)
        return rest

    def timed_round(self, x0: torch.Tensor, steps: int) -> float:
        self.activate()
        seconds = timed(lambda: self.step(x0), steps, self.ctx.device) / steps
        self.step_seconds.append(seconds)
        return seconds


def steps_per_round(seconds_per_step: float, args) -> int:
    """Steps that fill ``--round-seconds``, within [--min-steps, --max-steps]."""
    wanted = int(args.round_seconds / max(seconds_per_step, 1e-6))
    return max(args.min_steps, min(args.max_steps, wanted))


def train_specs(args) -> list[tuple[str, str, str, Speedups]]:
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
    return DiffusersDenoiser(diffusers_twin(ours, args.image_size))


def train_row_result(row: TrainRow, ctx: Context, contestant: str) -> dict:
    batch = ctx.args.batch
    median = statistics.median(row.step_seconds)
    images_per_s = batch / median
    tflops, mfu = ctx.rates(images_per_s, ctx.flops("cifar10", contestant, True))
    result = {
        "key": row.key,
        "label": row.label,
        "contestant": contestant,
        "settings": asdict(row.speedups),
        "parameters": count_parameters(row.model),
        "median_images_per_s": images_per_s,
        "median_step_ms": median * 1e3,
        "images_per_s_by_round": [batch / s for s in row.step_seconds],
        "tflops": tflops,
        "mfu": mfu,
        "first_step_s": row.first_step_s,
        "warmup_s": row.warmup_s,
    }
    if row.speedups.compile:
        result["compile_s"] = row.first_step_s - median
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
    for key, label, contestant, speedups in train_specs(args):
        if speedups.compile and not args.compile:
            ctx.skip("train", key, label, "--no-compile")
            continue
        if speedups.compile and ctx.budget.left() < args.compile_reserve_s:
            ctx.skip("train", key, label, f"less than --compile-reserve-s {args.compile_reserve_s:g} s left")
            continue
        if ctx.budget.left() <= 0:
            ctx.skip("train", key, label, "out of time")
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
        order = rows[r % len(rows) :] + rows[: r % len(rows)]
        for row, _ in order:
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


def run_trainer_row(ctx: Context, x0: torch.Tensor) -> None:
    """The library's own loop, ``Trainer.fit``, as a user runs it: precision bf16, compile, fused AdamW on
    CUDA, EMA, clipping, a loss read back every step; data: the fixed batch, already on the device."""
    from ddpmlab.training.trainer import Trainer

    args = ctx.args
    key, label = "trainer", "ddpmlab Trainer.fit (bf16, compile, fused AdamW; as shipped)"
    compile_on = args.compile and args.compile_backend == "inductor"
    if ctx.budget.left() <= 0:
        return ctx.skip("train", key, label, "out of time")
    if compile_on and ctx.budget.left() < args.compile_reserve_s:
        return ctx.skip(
            "train", key, label, f"less than --compile-reserve-s {args.compile_reserve_s:g} s left"
        )
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
    set_flags(False, False)  # the platform's defaults: the Trainer sets no flags
    torch.manual_seed(args.seed)
    trainer = Trainer(build_ours("cifar10", args), build_diffusion(load("cifar10", args)), batches, config)
    warm = args.warmup + 2
    first = timed(lambda: trainer.fit(until_step=warm), 1, ctx.device)
    probe = timed(lambda: trainer.fit(until_step=warm + args.min_steps), 1, ctx.device) / args.min_steps
    steps = steps_per_round(probe, args)
    seconds = []
    for _ in range(args.rounds):
        target = trainer.state.step + steps
        seconds.append(timed(lambda target=target: trainer.fit(until_step=target), 1, ctx.device) / steps)
    median = statistics.median(seconds)
    tflops, mfu = ctx.rates(args.batch / median, ctx.flops("cifar10", "ours", True))
    row = {
        "key": key,
        "label": label,
        "contestant": "ours",
        "settings": {"precision": "bf16", "compile": compile_on},
        "parameters": count_parameters(trainer.model),
        "median_images_per_s": args.batch / median,
        "median_step_ms": median * 1e3,
        "images_per_s_by_round": [args.batch / s for s in seconds],
        "tflops": tflops,
        "mfu": mfu,
        "first_step_s": first,
        "warmup_s": first,
        "steps_per_round": steps,
    }
    say(f"[train] {label}: {describe_train(row)}")
    ctx.report.add_row("train", row)


def run_train(ctx: Context) -> None:
    args = ctx.args
    section = ctx.report.section("train")
    section["setup"] = {
        "config": "cifar10",
        "batch": args.batch,
        "image_size": args.image_size,
        "lr": args.lr,
        "step": "training_loss + backward + clip_grad_norm_(1.0) + AdamW + EMA(0.9999)",
        "data": "one fixed synthetic batch on the device",
        "rounds": args.rounds,
    }
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


# --------------------------------------------------------------------------------------------------
# Loss: fp32 against the fastest setting.
# --------------------------------------------------------------------------------------------------


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


def run_loss(ctx: Context) -> None:
    args = ctx.args
    section = ctx.report.section("loss")
    section["setup"] = {
        "config": "cifar10",
        "batch": args.batch,
        "steps": args.loss_steps,
        "last": args.loss_last,
        "lr": args.lr,
        "data": f"{args.loss_pool} synthetic smooth images (fixed seed), batches by seed",
    }
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


# --------------------------------------------------------------------------------------------------
# Memory: imagenet100_128 at batch 64, with and without gradient checkpointing.
# --------------------------------------------------------------------------------------------------


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


def memory_case(ctx: Context, checkpointing: bool) -> dict:
    """Fresh model and optimizer; peak memory over two steps (the second holds the AdamW state too)."""
    args, device = ctx.args, ctx.device
    overrides = ("model.gradient_checkpointing=true",) if checkpointing else ()
    torch.manual_seed(args.seed)
    net = build_ours("imagenet100_128", args, overrides)
    speedups = Speedups(tf32=True, bf16=True, channels_last=True, cudnn_benchmark=True, fused_adamw=True)
    size = image_size("imagenet100_128", args, load("imagenet100_128", args))
    free_memory(device)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = TrainRow("memory", speedups.describe(), net, speedups, ctx, args.lr, "imagenet100_128")
    x0 = synthetic_images(args.memory_batch, size, args.seed, device)
    labels = torch.randint(0, NUM_CLASSES["imagenet100_128"], (args.memory_batch,), device=device)
    row.activate()
    with saved_activation_bytes(row.model) as storages:
        row.step(x0, labels)
    saved = sum(storages.values())
    first = timed(lambda: row.step(x0, labels), 1, device)
    result = {
        "key": "checkpointing" if checkpointing else "no_checkpointing",
        "gradient_checkpointing": checkpointing,
        "parameters": count_parameters(row.model),
        "saved_activations_gib": saved / 2**30,
        "peak_allocated_gib": None,
        "peak_reserved_gib": None,
    }
    if device.type == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
        result["baseline_allocated_gib"] = baseline / 2**30
    seconds = timed(lambda: row.step(x0, labels), args.memory_steps, device) / args.memory_steps
    result.update({"step_s": seconds, "images_per_s": args.memory_batch / seconds, "second_step_s": first})
    return result


def run_memory(ctx: Context) -> None:
    args = ctx.args
    section = ctx.report.section("memory")
    size = image_size("imagenet100_128", args, load("imagenet100_128", args))
    section["setup"] = {
        "config": "imagenet100_128",
        "batch": args.memory_batch,
        "image_size": size,
        "settings": "bf16 autocast + channels_last + cudnn.benchmark + fused AdamW + EMA, eager",
        "peak": "torch.cuda.max_memory_allocated over two training steps from a fresh model",
    }
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


# --------------------------------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------------------------------


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
        self.scheduler = diffusers_scheduler(kind, self.num_steps)
        torch.manual_seed(args.seed)
        self.ours = build_ours(self.name, args).eval()
        self.theirs = diffusers_twin(self.ours, args.image_size).eval()
        load_diffusers_weights(self.theirs, self.ours)
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
        with torch.inference_mode():
            a = self.ours(x, t) if cond is None else self.ours(x, t, cond)
            b = self.theirs(x, t, class_labels=cond).sample
        check = {"max_abs_diff": (a - b).abs().max().item(), "max_abs_output": b.abs().max().item()}
        if not check["max_abs_diff"] <= 1e-3 * max(1.0, check["max_abs_output"]):
            raise RuntimeError(f"ours and diffusers' twin differ: {check}")
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
        device = self.ctx.device
        model = copy.deepcopy(self.ours)
        if s.cuda_graph or s.compile:
            bypass_label_check(model)
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
        batch, block, device = self.shape[0], self.args.seed_block, self.ctx.device
        if block:
            generator = seed_generators(seed, 0, batch, block, device)
        else:
            generator = torch.Generator(device).manual_seed(seed)
        loop = self.sampler.steps(denoiser, self.shape, self.labels, generator=generator, device=device)
        for count, step in enumerate(loop, 1):
            if count == steps:
                break
        loop.close()
        return step.x_prev

    def diffusers_run(self, unet: nn.Module, dtype: torch.dtype, steps: int, seed: int) -> torch.Tensor:
        """The DDPMPipeline loop (batched CFG for the CFG rows), with its generator on the device."""
        generator = torch.Generator(self.ctx.device).manual_seed(seed)
        options = {"use_clipped_model_output": True} if self.kind == "ddim" else {}
        with torch.inference_mode():
            x = torch.randn(self.shape, generator=generator, device=self.ctx.device, dtype=dtype)
            if self.guidance is not None:
                both = torch.cat([self.labels, torch.full_like(self.labels, NUM_CLASSES[self.name])])
            for t in self.scheduler.timesteps[:steps]:
                if self.guidance is None:
                    eps = unet(x, t).sample
                else:
                    cond, uncond = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
                    eps = uncond + self.guidance * (cond - uncond)
                x = self.scheduler.step(eps, t, x, generator=generator, **options).prev_sample
        return x


def sample_row(ctx: Context, loop: SampleLoop, spec: SampleSpec) -> dict:
    """Warm-up (compile / capture included), then ``--rounds`` timed prefixes of the loop."""
    args, device = ctx.args, ctx.device
    s = spec.speedups
    set_flags(s.tf32, s.cudnn_benchmark)
    run, denoiser = loop.runner(spec)
    warm_steps = min(loop.num_steps, args.warmup + (3 if s.compile or s.cuda_graph else 0))
    warmup_s = timed(lambda: run(warm_steps, 0), 1, device)
    probe = timed(lambda: run(args.min_steps, 0), 1, device) / args.min_steps
    steps = max(args.min_steps, min(loop.num_steps, int(args.round_seconds / max(probe, 1e-6))))
    seconds = [timed(lambda r=r: run(steps, r + 1), 1, device) / steps for r in range(args.rounds)]
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
    if spec.contestant == "ours" and loop.guidance is not None and (s.compile or s.cuda_graph):
        row["label_check_bypassed"] = True  # see bypass_label_check
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


def sample_rows(ctx: Context, loop: SampleLoop, specs: list[SampleSpec]) -> list[dict]:
    rows = []
    for spec in specs:
        s = spec.speedups
        if s.cuda_graph and ctx.device.type != "cuda":
            ctx.skip("sample", spec.key, spec.label, "CUDA graphs need a GPU")
            continue
        if s.compile and not ctx.args.compile:
            ctx.skip("sample", spec.key, spec.label, "--no-compile")
            continue
        if s.compile and ctx.budget.left() < ctx.args.compile_reserve_s:
            reason = f"less than --compile-reserve-s {ctx.args.compile_reserve_s:g} s left"
            ctx.skip("sample", spec.key, spec.label, reason)
            continue
        if ctx.budget.left() <= 0:
            ctx.skip("sample", spec.key, spec.label, "out of time")
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
    seconds = timed(lambda: run(loop.num_steps, 7), 1, ctx.device)
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


def run_sample(ctx: Context) -> None:
    args = ctx.args
    section = ctx.report.section("sample")
    section["setup"] = {
        "config": "cifar10 (DDPM), cifar10_cond (DDIM + CFG)",
        "batch": args.sample_batch,
        "image_size": args.image_size,
        "seed_block": args.seed_block,
        "mode": "eval, inference_mode",
        "weights": "diffusers' seeded initial weights copied into ours (checked: same outputs in fp32)",
        "flags": "TF32 and cudnn.benchmark on in every row",
    }
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


# --------------------------------------------------------------------------------------------------
# Markdown.
# --------------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**NOT met**")


def md_flops(section: dict) -> list[str]:
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


def md_train(section: dict) -> list[str]:
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
            f"{r['tflops']:.2f} | {_pct(r['mfu'])} | {gain} | {r['warmup_s']:.1f} | {compiled} |"
        )
        previous = r["median_images_per_s"] if chained else previous
    s = section.get("summary") or {}
    if s:
        lines += [
            "",
            f"Best ours: {s['best_ours']}, {s['best_ours_images_per_s']:.0f} img/s (MFU "
            f"{_pct(s['best_ours_mfu'])}; {s['best_ours_tflops_by_issue_count']:.0f} TFLOP/s by the issue's "
            f"3 x 12.1 GFLOP per image); target >= {TARGETS['train_images_per_s']:.0f} img/s: "
            f"{_met(s.get('images_per_s_met'))}.",
            "TFLOP/s and MFU count each model's own FLOPs (flops section): ours does fewer for the same "
            "function (its upsampling), so compare the models by img/s.",
        ]
        if "ratio_vs_diffusers_best" in s:
            lines.append(
                "Ours / diffusers best (median of per-round ratios): "
                f"**{s['ratio_vs_diffusers_best']:.2f}x**; "
                f"target >= {TARGETS['train_ratio_vs_diffusers']}: {_met(s.get('ratio_met'))}."
            )
    return lines


def md_loss(section: dict) -> list[str]:
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
            f"{3 * s['se_of_difference']:.5f}: within noise {_met(s['within_3_se'])}"
            + (f"; seed-to-seed difference of the fastest setting {seed:+.5f}." if seed is not None else "."),
        ]
    return lines


def md_memory(section: dict) -> list[str]:
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


def md_sample(section: dict) -> list[str]:
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
            f"| {r['images_per_s']:.1f} | {r['tflops']:.1f} | {_pct(r['mfu'])} | {gain} "
            f"| {r['warmup_s']:.1f} | {extra} |"
        )
    lines += [
        "",
        "~: a prefix of the loop timed, the whole loop extrapolated (per-step cost is the same at every t).",
    ]
    for kind in ("ddpm", "ddim"):
        s = section.get(f"summary_{kind}") or {}
        if "ratio_vs_diffusers_bf16" in s:
            lines.append(
                f"- {kind.upper()}: ours ({s['best_ours']}) / diffusers bf16: "
                f"**{s['ratio_vs_diffusers_bf16']:.2f}x**; "
                f"target >= {TARGETS['sample_ratio_vs_diffusers']}: {_met(s.get('ratio_met'))}."
            )
        if "seconds_for_the_batch" in s:
            how = "whole loop timed" if s["seconds_measured_whole"] else "extrapolated"
            lines.append(
                f"- DDPM: {s['seconds_for_the_batch']:.2f} s for the batch ({how}); target <= "
                f"{TARGETS['ddpm_seconds']:.0f} s (256 images): {_met(s.get('seconds_met'))}."
            )
    return lines


MARKDOWN_SECTIONS = {
    "flops": md_flops,
    "memory": md_memory,
    "train": md_train,
    "loss": md_loss,
    "sample": md_sample,
}


def markdown(data: dict) -> str:
    device, v = data["device"], data["versions"]
    peak = device.get("peak_bf16_tflops")
    lines = [
        "# GPU speed: ddpmlab vs diffusers (CIFAR-10 configuration of Ho et al.)",
        "",
        f"Device: **{device['name']}** ({device['type']}); bf16 peak for MFU: "
        f"{f'{peak:g} TFLOP/s' if peak else 'unknown'} ({device['peak_source']}).",
        f"torch {v['torch']} (CUDA {v['cuda']}, cuDNN {v['cudnn']}), diffusers {v['diffusers']}, triton "
        f"{v['triton']}, Python {v['python']}.",
        f"Command: `{data['command']}`"
        + (" — **smoke run: tiny model on the CPU, numbers meaningless**" if data["smoke"] else ""),
        f"Wall: {data.get('elapsed_s', 0):.0f} s of a {data['settings']['budget_s']:g} s budget"
        + (f"; stopped early: {data['stopped']}" if data.get("stopped") else "")
        + ".",
        "",
    ]
    for name, section in data["sections"].items():
        lines += [f"## {name}", ""]
        if "setup" in section:
            lines += ["Setup: " + "; ".join(f"{k} {v}" for k, v in section["setup"].items()) + ".", ""]
        if section.get("error"):
            lines += [f"**Error:** `{section['error']}`", ""]
        if section.get("stopped"):
            lines += [f"Stopped: {section['stopped']}", ""]
        if section["rows"]:
            lines += MARKDOWN_SECTIONS[name](section)
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------------

RUNNERS = {
    "flops": run_flops,
    "memory": run_memory,
    "train": run_train,
    "loss": run_loss,
    "sample": run_sample,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="wall budget; sections stop when it is spent"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny model on the CPU, every section, a temporary --out"
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument(
        "--peak-tflops", type=float, help="bf16 dense peak for MFU (default: from the device name)"
    )
    p.add_argument("--out", help="output path without suffix (default benchmarks/results/gpu_speed)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", type=int, help="override model.base_channels of the configs (smoke: 32)")
    p.add_argument("--image-size", type=int, default=32, help="CIFAR-10 image side")
    p.add_argument("--batch", type=int, default=128, help="training batch (train, loss)")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate, constant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row (compile/graph rows: more)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per row")
    p.add_argument("--round-seconds", type=float, default=1.0, help="wanted length of one timed round")
    p.add_argument("--min-steps", type=int, default=3, help="fewest steps in a timed round")
    p.add_argument("--max-steps", type=int, default=40, help="most training steps in a timed round")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile rows"
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (smoke: eager)")
    p.add_argument(
        "--compile-reserve-s", type=float, default=90.0, help="skip a compile row with less time left"
    )
    p.add_argument(
        "--trainer-row", action=argparse.BooleanOptionalAction, default=True, help="time Trainer.fit"
    )
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale w of the DDIM rows")
    p.add_argument(
        "--seed-block", type=int, default=8, help="samples per noise generator (0: one), as ddpmlab"
    )
    p.add_argument("--memory-batch", type=int, default=64)
    p.add_argument("--memory-image-size", type=int, help="imagenet100_128 image side (default: the config's)")
    p.add_argument("--memory-steps", type=int, default=2, help="timed steps per memory case")
    p.add_argument("--loss-steps", type=int, default=200)
    p.add_argument("--loss-last", type=int, default=50, help="N: the mean of the last N losses is compared")
    p.add_argument("--loss-pool", type=int, default=1024, help="synthetic images the loss runs draw from")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.device = "cpu" if args.device == "auto" else args.device
    if args.seed_block and args.sample_batch % args.seed_block:
        p.error(f"--sample-batch {args.sample_batch} must be a multiple of --seed-block {args.seed_block}")
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = [name for name in SECTIONS if name in args.sections]
    return args


def out_path(args) -> Path | None:
    if args.no_write:
        return None
    if args.out:
        return Path(args.out)
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="gpu_speed_smoke_")) / "gpu_speed"
    return RESULTS / "gpu_speed"


def quiet_diffusers() -> None:
    """diffusers warns about ``.to(torch.bfloat16)`` (from_pretrained's torch_dtype is its way); the
    bf16 rows cast on purpose."""
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        return
    diffusers_logging.set_verbosity_error()


def run_section(name: str, ctx: Context, later: list[str]) -> None:
    """One section, with the reserves of the later ones held back; errors are recorded, not raised."""
    budget = ctx.budget
    budget.keep = 0.0 if ctx.args.smoke else sum(SECTION_RESERVE_S[n] for n in later)
    section = ctx.report.section(name)
    if budget.left() <= 0:
        section["stopped"] = "not started: out of time"
        say(f"[{name}] not started: out of time")
        return
    say(f"== {name} ({budget.left():.0f} s left for it)")
    started = time.perf_counter()
    try:
        RUNNERS[name](ctx)
    except OutOfTime as stop:
        section["stopped"] = str(stop)
        say(f"[{name}] stopped: {stop}")
    except Exception as error:  # noqa: BLE001  (one broken section must not lose the others' numbers)
        section["error"] = f"{type(error).__name__}: {error}"
        section["traceback"] = traceback.format_exc()
        say(f"[{name}] ERROR {section['error']}\n{section['traceback']}")
    section["seconds"] = time.perf_counter() - started
    ctx.report.data["elapsed_s"] = budget.elapsed()
    ctx.report.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    budget = Budget(args.budget_s)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "no_write")}
    meta = {
        "benchmark": "gpu_speed",
        "command": "python -m benchmarks gpu " + " ".join(sys.argv[1:] if argv is None else argv),
        "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_info(device, args.peak_tflops),
        "versions": versions(),
        "settings": settings,
        "targets": TARGETS,
    }
    quiet_diffusers()
    report = Report(meta, out_path(args))
    ctx = Context(args, device, budget, report)
    say(
        f"device {meta['device']['name']} ({device.type}), "
        f"peak {meta['device']['peak_bf16_tflops']} TFLOP/s; "
        f"torch {torch.__version__}; budget {args.budget_s:g} s; sections {', '.join(args.sections)}"
    )

    def on_term(signum, frame):  # a `timeout` in front of us: stop where we are, keep what was saved
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for index, name in enumerate(args.sections):
            run_section(name, ctx, args.sections[index + 1 :])
    except (Terminated, KeyboardInterrupt) as stop:
        report.data["stopped"] = f"{type(stop).__name__}: {stop}"
        say(f"stopped: {report.data['stopped']}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        report.data["elapsed_s"] = budget.elapsed()
        report.save()
    if report.out is not None:
        say(f"wrote {report.out.with_suffix('.json')} and {report.out.with_suffix('.md')}")
    sections = report.data["sections"].values()
    errors = [s for s in sections if s.get("error") or any("error" in row for row in s["rows"])]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
