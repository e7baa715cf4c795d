"""``benchmarks/solvers_oracle.py``: its fast exact denoiser is the library's, and its smoke run writes a
self-consistent report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import solvers_oracle  # noqa: E402

from ddpmlab.schedules import make_schedule  # noqa: E402


@pytest.mark.parametrize("name", ["mog1d", "narrow_far", "mog2d"])
def test_fast_exact_denoiser_is_the_optimal_denoiser(name):
    schedule = make_schedule("linear", 1000)
    assert solvers_oracle.check_denoiser(solvers_oracle.TUNING[name], schedule) < 1e-10


def test_fast_exact_denoiser_check_catches_a_wrong_mixture():
    schedule = make_schedule("linear", 1000)
    mixture = solvers_oracle.TUNING["mog1d"]
    fast = solvers_oracle.exact_denoiser(solvers_oracle.HELD_OUT["unequal"], schedule)
    x, t = torch.randn(64, 1, dtype=torch.float64), torch.full((64,), 100)
    assert (fast(x, t) - mixture.optimal_denoiser(schedule)(x, t)).abs().max() > 0.1


def test_smoke_run_writes_a_consistent_report(tmp_path):
    report = solvers_oracle.main(["--smoke", "--out", str(tmp_path / "oracle")])
    written = json.loads((tmp_path / "oracle.json").read_text())
    text = (tmp_path / "oracle.md").read_text()
    assert (
        written["grid"] == report["grid"]
        and "torch" in written["machine"]
        and "--smoke" in written["commands"][0]
    )
    # one mixture: an exact-sample row, then every variant at NFE 5 and 10
    assert len(report["grid"]) == 1 + len(solvers_oracle.VARIANTS) * 2
    assert len(report["held_out"]) == 1 + len(solvers_oracle.CANDIDATES)
    by_label = {(r["sampler"], r["nfe"]): r for r in report["grid"]}
    assert by_label[("heun", 9)]["steps"] == 5  # Heun: K = 5 steps, 2K - 1 = 9 evaluations
    assert by_label[("dpm++3m logsnr", 10)]["steps"] == 10
    for row in report["grid"]:
        assert row["floor"] > 0 and all(r > 0 for r in row["ratios"])
    # exact samples sit near the floor; DDPM with 5 steps is far from it
    assert 0.3 < by_label[("exact sample", 0)]["mean_ratio"] < 3
    assert by_label[("ddpm fixed_small", 5)]["mean_ratio"] > 3
    # more evaluations, closer to the truth (by far, at 5 -> 10 NFE)
    assert by_label[("dpm++2m", 10)]["mean_ratio"] < by_label[("dpm++2m", 5)]["mean_ratio"]
    assert "| dpm++3m logsnr |" in text and "NFE to ratio <= 1.3" in text and "held-out" in text
    # --part held-out keeps the grid and redoes the held-out check
    again = solvers_oracle.main(["--smoke", "--part", "held-out", "--out", str(tmp_path / "oracle")])
    assert again["grid"] == report["grid"] and len(again["commands"]) == 2
