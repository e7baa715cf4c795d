"""The ``python -m benchmarks`` front door lists the benchmarks and refuses unknown names (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_lists_every_benchmark_script():
    done = run()
    assert done.returncode == 0
    for name in ("training", "sampling", "toy", "judge", "classifier-guidance"):
        assert f"  {name}" in done.stdout
    scripts = {path.name for path in (ROOT / "benchmarks").glob("*.py")} - {"__main__.py", "__init__.py"}
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert len(listed) == len(scripts)


def test_unknown_benchmark_is_one_error_line_and_exit_2():
    done = run("nope")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown benchmark 'nope'" in done.stderr


def test_forwards_options_to_the_script():
    done = run("sampling", "--help")
    assert done.returncode == 0 and "--ddpm-timed-steps" in done.stdout
