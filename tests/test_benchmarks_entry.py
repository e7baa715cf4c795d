"""The ``python -m benchmarks`` front door lists the benchmarks and refuses unknown names (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, module: str = "benchmarks") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_lists_every_benchmark_script():
    done = run()
    assert done.returncode == 0
    for name in ("training", "sampling", "toy", "judge", "classifier-guidance"):
        assert f"  {name}" in done.stdout
    package = ROOT / "benchmarks"
    modules = {path.stem for path in package.glob("*.py")} - {"__main__", "__init__", "harness"}
    modules |= {path.parent.name for path in package.glob("*/__init__.py")}  # gpu/: one module per section
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert len(listed) == len(modules)


def test_unknown_benchmark_is_one_error_line_and_exit_2():
    done = run("nope")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown benchmark 'nope'" in done.stderr


def test_forwards_options_to_the_script():
    done = run("sampling", "--help")
    assert done.returncode == 0 and "--ddpm-timed-steps" in done.stdout


def test_every_benchmark_is_a_module_of_the_package():
    for name in ("training", "sampling", "toy", "profile", "judge", "classifier-guidance", "gpu"):
        done = run(name, "--help")
        assert done.returncode == 0 and "usage: python -m benchmarks " + name in done.stdout, done.stderr
    done = run("--help", module="benchmarks.gpu")  # the packages' modules run on their own too
    assert done.returncode == 0 and "--smoke" in done.stdout


def test_sampler_quality_matches_are_one_sided_and_the_cheapest_per_sampler():
    from benchmarks.sampler_quality import matching_point, timing_images

    reference = {"sampler": "ddpm", "steps": 1000, "nfe": 2000, "fd": 8.0, "kid": 0.40, "kid_std": 0.05}

    def row(sampler, nfe, fd, kid):
        return {"sampler": sampler, "steps": nfe // 2, "nfe": nfe, "fd": fd, "kid": kid}

    rows = [
        reference,
        row("ddim", 40, 6.0, 0.30),  # better than the reference: it matches it
        row("ddim", 20, 8.5, 0.41),  # FD 6.25% above: no
        row("heun", 18, 8.3, 0.46),  # FD within 5%, KID more than one std above: no
        row("heun", 38, 8.39, 0.449),  # both just inside
        row("dpm", 10, 9.0, 0.30),
    ]
    found = matching_point(rows, reference, 0.05)
    assert {name: r["nfe"] for name, r in found.items()} == {"ddpm": 2000, "ddim": 40, "heun": 38}
    assert timing_images(10, 100) == 100 and timing_images(2000, 100) == 8 and timing_images(100, 100) == 40
