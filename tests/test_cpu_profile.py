"""``python -m benchmarks profile``: the per-kind-of-operation CPU profile of ours against diffusers.

The op classification is checked on the names the profiler reports; the script is run once, tiny, and its
report must be self-consistent (the kinds add up to the total, the ceiling is above the measured ratio)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("diffusers")  # the benchmark's reference (a dev-only dependency)
from benchmarks import cpu_profile  # noqa: E402


@pytest.mark.parametrize(
    "op, kind",
    [
        ("aten::mkldnn_convolution", "convolutions"),
        ("aten::convolution_backward", "convolutions"),
        ("autograd::engine::evaluate_function: ConvolutionBackward0", "convolutions"),
        ("aten::baddbmm", "matrix products (linear layers, 1x1 convs)"),
        ("aten::mm", "matrix products (linear layers, 1x1 convs)"),
        ("autograd::engine::evaluate_function: BmmBackward0", "matrix products (linear layers, 1x1 convs)"),
        ("aten::upsample_bilinear2d", "concatenation and copies"),
        ("autograd::engine::evaluate_function: NativeGroupNormBackward0", "group norm"),
        ("autograd::engine::evaluate_function: CatBackward0", "concatenation and copies"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention kernel"),
        ("aten::native_group_norm_backward", "group norm"),
        ("aten::silu_backward", "SiLU"),
        ("aten::uniform_", "random numbers (dropout)"),
        ("aten::bernoulli_", "random numbers (dropout)"),
        ("aten::cat", "concatenation and copies"),
        ("aten::copy_", "concatenation and copies"),
        ("aten::add_", cpu_profile.OTHER),
        ("aten::lerp_", cpu_profile.OTHER),
    ],
)
def test_ops_are_grouped_by_kind(op, kind):
    assert cpu_profile.category(op) == kind


def test_profile_report_is_consistent(tmp_path):
    out = tmp_path / "profile"
    command = [sys.executable, "-m", "benchmarks", "profile", "--batch", "8", "--steps", "1", "--warmup", "1"]
    done = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["machine"]["matmul_roof_gflops"] > 0
    names = [section["name"] for section in report["sections"]]
    assert names == [
        "training step, batch 8",
        "sampling step forward, batch 8",
        "sampling step forward, batch 8 + CFG (one call of 16)",
    ]
    for section in report["sections"]:
        for who in ("ddpmlab", "diffusers"):
            kinds = section["ms_per_step"][who]
            assert kinds["convolutions"] > 0 and all(ms >= 0 for ms in kinds.values())
            assert sum(kinds.values()) == pytest.approx(section["total_ms"][who])
            assert section["dense_gflop"][who] > 0
            assert section["dense_ms"][who] == pytest.approx(
                kinds["convolutions"] + kinds[cpu_profile.DENSE[1]]
            )
        # Our dense work takes part of our time, so the ceiling lies above the measured ratio.
        assert section["ceiling_if_only_dense_ops_cost"] > section["ratio_ours_over_diffusers"] > 0
        # Ours does the nearest-neighbour upsampling's convolution at the low resolution: fewer FLOPs.
        assert section["dense_gflop"]["ddpmlab"] < section["dense_gflop"]["diffusers"]
    training = report["sections"][0]["ms_per_step"]
    assert training["ddpmlab"]["random numbers (dropout)"] > 0  # dropout 0.1 in training mode
    assert set(report["loop_overhead_ms_per_step"]) == {
        "DDPM-1000",
        "DDPM-1000 + CFG",
        "DDIM-50",
        "DDIM-50 + CFG",
    }
    assert "## The sampling loops themselves" in out.with_suffix(".md").read_text()
