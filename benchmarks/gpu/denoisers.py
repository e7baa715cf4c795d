"""Benchmark-only denoisers: wrappers around a model that our sampler calls as any denoiser.

Every class here is a callable with the library's denoiser signature, ``model(x_t, t, cond=None) ->
prediction``, built around an unchanged model: the benchmark measures what these speed-ups would give
without patching any library class. They are *not* ddpmlab options (``ddpmlab sample`` runs the model
as it is); a library version would be options of ``ddpmlab sample`` (bf16 autocast, channels_last,
``torch.compile``, CUDA graphs) applied to the run's model in the same way.

- :class:`DiffusersDenoiser`: diffusers' ``UNet2DModel`` called as a ddpmlab denoiser (for FLOP counts and
  training with the library's loss);
- :class:`PreparedDenoiser`: bf16 autocast and/or channels-last input;
- :class:`CompiledDenoiser`: ``torch.compile`` (with CUDA graphs in mode ``reduce-overhead``);
- :class:`GraphedDenoiser`: one manually captured ``torch.cuda.CUDAGraph`` of the denoiser call.

:func:`compile_module` is the one ``torch.compile`` call of the benchmark (training rows too).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


def compile_module(module: nn.Module, backend: str, mode: str | None = None):
    """``torch.compile`` with static shapes; ``mode`` only for inductor (other backends take none)."""
    if backend != "inductor":
        mode = None
    return torch.compile(module, backend=backend, mode=mode, dynamic=False)


class DiffusersDenoiser(nn.Module):
    """diffusers' UNet2DModel called as a ddpmlab denoiser: ``(x_t, t, cond=None) -> eps``."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.unet(x_t, t, class_labels=cond, return_dict=False)[0]


class PreparedDenoiser(nn.Module):
    """Benchmark-only: runs ``model`` under bf16 autocast and/or on a channels-last copy of x_t."""

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
    """Benchmark-only: ``torch.compile`` of a denoiser. With CUDA graphs (mode reduce-overhead) every call
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
    """Benchmark-only: one manually captured ``torch.cuda.CUDAGraph`` of ``denoiser(x_t, t[, cond])``.

    Captured at the first call, for its shapes, after ``warmup`` calls on a side stream; every call then
    copies its inputs into the static buffers, replays the graph and returns a copy of the output. The
    denoiser must not read tensors back to the host (ddpmlab's class embedding checks label ranges on
    CPU tensors only, so CUDA inputs are captured unchecked)."""

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
