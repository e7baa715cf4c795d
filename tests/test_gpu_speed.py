"""``python -m benchmarks gpu --smoke`` runs every section of the GPU benchmark on the CPU with a tiny model
and writes a JSON + Markdown report with the expected rows and positive numbers (no GPU needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("diffusers")  # the benchmark's reference (a dev-only dependency)

TRAIN_ROWS = [
    "ours_fp32",
    "ours_tf32",
    "ours_bf16",
    "ours_channels_last",
    "ours_cudnn_benchmark",
    "ours_fused_adamw",
    "ours_compile",
    "diffusers_fp32",
    "diffusers_best",
    "trainer",
]
DDPM_ROWS = [
    "diffusers_fp32",
    "diffusers_bf16",
    "ours_fp32",
    "ours_bf16",
    "ours_channels_last",
    "ours_compile",
]
CFG_ROWS = ["cfg_diffusers_bf16", "cfg_ours_channels_last", "cfg_ours_compile"]
GPU_ONLY_ROWS = {"ours_cuda_graph", "cfg_ours_cuda_graph"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path_factory.mktemp("gpu_speed") / "gpu_speed"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


def rows_by_key(data: dict, section: str) -> dict[str, dict]:
    return {row["key"]: row for row in data["sections"][section]["rows"]}


def test_every_section_ran_without_errors(smoke):
    _, data, markdown = smoke
    assert data["smoke"] and data["device"]["type"] == "cpu"
    assert list(data["sections"]) == ["flops", "memory", "train", "loss", "sample"]
    for name, section in data["sections"].items():
        assert "error" not in section and "stopped" not in section, name
        assert all("error" not in row for row in section["rows"]), name
        assert f"## {name}" in markdown
    assert data["versions"]["torch"] and data["versions"]["diffusers"]


def test_flops_per_image(smoke):
    _, data, _ = smoke
    rows = rows_by_key(data, "flops")
    assert set(rows) == {"cifar10_ours", "cifar10_diffusers", "imagenet100_128_ours"}
    for row in rows.values():
        assert row["forward_gflop_per_image"] > 0 and row["parameters"] > 0
        assert 2.5 < row["train_over_forward"] < 3.5  # backward ~ twice the forward
    # diffusers' twin is the same network: the same parameters
    assert rows["cifar10_ours"]["parameters"] == rows["cifar10_diffusers"]["parameters"]


def test_training_rows_have_positive_rates(smoke):
    _, data, _ = smoke
    section = data["sections"]["train"]
    rows = rows_by_key(data, "train")
    assert set(rows) == set(TRAIN_ROWS)
    for key in TRAIN_ROWS:
        row = rows[key]
        assert "skipped" not in row, key
        assert row["median_images_per_s"] > 0 and row["median_step_ms"] > 0 and row["tflops"] > 0
        assert row["mfu"] is None  # no bf16 peak known for a CPU
    assert "compile_s" in rows["ours_compile"]
    assert rows["diffusers_best"]["attention_processors"]
    summary = section["summary"]
    assert summary["ratio_vs_diffusers_best"] > 0 and summary["trainer_images_per_s"] > 0


def test_sampling_rows(smoke):
    _, data, _ = smoke
    section = data["sections"]["sample"]
    rows = rows_by_key(data, "sample")
    for key in DDPM_ROWS + CFG_ROWS:
        row = rows[key]
        assert "skipped" not in row, key
        assert row["median_step_ms"] > 0 and row["images_per_s"] > 0 and row["loop_seconds"] > 0
    for key in GPU_ONLY_ROWS:
        assert "GPU" in rows[key]["skipped"]
    for check in section["same_network_check"].values():
        assert check["max_abs_diff"] < 1e-4
    ddpm, ddim = section["summary_ddpm"], section["summary_ddim"]
    assert ddpm["full_loop"]["seconds"] > 0 and ddpm["seconds_measured_whole"]
    assert ddpm["ratio_vs_diffusers_bf16"] > 0 and ddim["ratio_vs_diffusers_bf16"] > 0


def test_memory_and_checkpointing(smoke):
    _, data, _ = smoke
    rows = rows_by_key(data, "memory")
    plain, checkpointed = rows["no_checkpointing"], rows["checkpointing"]
    assert plain["peak_allocated_gib"] is None  # CUDA only
    assert 0 < checkpointed["saved_activations_gib"] < plain["saved_activations_gib"]
    assert plain["step_s"] > 0 and checkpointed["step_s"] > 0


def test_loss_comparison(smoke):
    _, data, _ = smoke
    rows = rows_by_key(data, "loss")
    assert set(rows) == {"fp32", "fastest", "fastest_seed2"}
    for row in rows.values():
        assert len(row["losses"]) == data["settings"]["loss_steps"]
        assert all(0 < loss < 10 for loss in row["losses"])
    summary = data["sections"]["loss"]["summary"]
    assert summary["se_of_difference"] > 0 and "within_3_se" in summary


def test_prints_rows_as_it_goes(smoke):
    done, _, _ = smoke
    assert "[train] ours + torch.compile" in done.stdout and "[sample]" in done.stdout
    assert "wrote " in done.stdout
