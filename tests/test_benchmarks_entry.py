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
