"""The GPU benchmark's report and what every section is given.

:class:`Report` holds the results so far and rewrites ``OUT.json`` / ``OUT.md`` (through
``harness.write_report``) after every row, so a run cut short keeps what it measured; the Markdown is
the header of :func:`markdown` and each section's table, rendered by that section's module.
:class:`Context` is what every section's ``run(ctx)`` gets: the options, the device, the budget, the
report, FLOP counts (cached) and the recording of skipped and failed rows.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.gpu.common import Budget, count_flops, free_memory, say

# section name -> its Markdown table (lines), from the section's rows and summary
Renderer = Callable[[dict], list[str]]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**NOT met**")


class Report:
    """The results so far; written (JSON and Markdown) after every row when ``out`` is given."""

    def __init__(self, meta: dict, out: Path | None, renderers: dict[str, Renderer]) -> None:
        self.data = {**meta, "sections": {}}
        self.out = out
        self.renderers = renderers

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"rows": []})

    def add_row(self, name: str, row: dict) -> dict:
        self.section(name)["rows"].append(row)
        self.save()
        return row

    def save(self) -> None:
        if self.out is not None:
            harness.write_report(self.out, self.data, markdown(self.data, self.renderers), announce=False)


def markdown(data: dict, renderers: dict[str, Renderer]) -> str:
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
            lines += renderers[name](section)
        lines.append("")
    return "\n".join(lines)


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

    def start(self, name: str, **setup) -> dict:
        """The section ``name`` of the report, with its setup recorded."""
        section = self.report.section(name)
        section["setup"] = setup
        return section

    def skip(self, section: str, key: str, label: str, reason: str) -> None:
        say(f"[{section}] {label}: skipped ({reason})")
        self.report.add_row(section, {"key": key, "label": label, "skipped": reason})

    def compile_skip_reason(self) -> str | None:
        """Why a torch.compile row cannot run now (None: it can)."""
        if not self.args.compile:
            return "--no-compile"
        if self.budget.left() < self.args.compile_reserve_s:
            return f"less than --compile-reserve-s {self.args.compile_reserve_s:g} s left"
        return None

    def failed(self, section: str, key: str, label: str, error: Exception) -> None:
        """A row that raised: recorded (with its traceback) so that the other rows still run."""
        text = str(error).strip()
        message = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        trace = traceback.format_exc()
        say(f"[{section}] {label}: ERROR {message}\n{trace}")
        row = {"key": key, "label": label, "skipped": f"error: {message}", "error": message}
        self.report.add_row(section, {**row, "traceback": trace})
        free_memory(self.device)
