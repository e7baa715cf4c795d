"""``ddpmlab sweep``: one run sampled with several samplers, step counts and guidance scales, each
setting measured against the same real data (its features computed once) and timed.

Each row holds the sampler, its steps, the network evaluations per sample (``nfe``: a classifier-free
guided step evaluates the network on the conditional and the unconditional input, so it counts twice),
the guidance scale, the wall time per image, and the numbers of :func:`ddpmlab.runs.evaluate.evaluate_images`
(FD with its floor, KID, precision, recall, class accuracy, and a reader's exact and per-character
reading accuracy for text runs). The table answers "how many steps does each
sampler need?" (quality against seconds per image) and shows the fidelity-diversity trade-off of
classifier-free guidance (Ho & Salimans 2022): as w grows, precision and class accuracy rise while recall
falls, and FD has a minimum at a moderate w.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path
from typing import Any

from ddpmlab.data.base import to_uint8
from ddpmlab.metrics import extract_features
from ddpmlab.runs.evaluate import RealData, evaluate_images
from ddpmlab.runs.guided import guidance_scale
from ddpmlab.runs.rundir import Run
from ddpmlab.runs.sampling import make_run_sampler, sample_run

__all__ = ["SWEEP_COLUMNS", "network_evaluations", "sweep_run", "write_sweep"]

SWEEP_COLUMNS = (
    "sampler",
    "steps",
    "nfe",
    "guidance",
    "seconds_per_image",
    "fd_label",
    "fd",
    "fd_floor",
    "kid",
    "kid_std",
    "precision",
    "recall",
    "class_accuracy",
    "read_exact",
    "read_chars",
)


def network_evaluations(sampler: Any, guidance: float | None, conditional: bool) -> int:
    """Network evaluations per sample: the sampler's (Heun takes two per step), doubled under CFG (w = 0
    and w = 1 evaluate the unconditional or the conditional model alone: one forward per step)."""
    count = int(getattr(sampler, "num_evaluations", sampler.num_steps))
    return 2 * count if conditional and guidance not in (None, 0.0, 1.0) else count


def sweep_run(
    run: Run,
    network: Any,
    real: RealData,
    samplers: list[str],
    steps: list[int | None],
    guidances: list[float | None],
    num: int,
    labels: Any = None,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps, guidance): ``num`` samples drawn with the same seed (so the settings
    differ only by the sampler, not by the noise), timed, and measured in ``network``'s features against
    ``real``. Guidance values apply to conditional runs only (None: the run's own scale)."""
    real_features = extract_features(real.images, network)
    guidances = guidances if run.conditional else [None]
    rows = []
    for name, count, guidance in itertools.product(samplers, steps, guidances):
        sampler = make_run_sampler(run, name, count)
        started = time.perf_counter()
        samples, used = sample_run(run, num, sampler, guidance, labels, seed, progress=progress)
        seconds = time.perf_counter() - started
        result = evaluate_images(to_uint8(samples), used, real, network, seed, real_features=real_features)
        scale = guidance_scale(run, guidance)
        row = {
            "sampler": name,
            "steps": sampler.num_steps,
            "guidance": scale,
            "nfe": network_evaluations(sampler, scale, run.conditional),
            "seconds_per_image": seconds / num,
        }
        row.update({key: result.get(key) for key in SWEEP_COLUMNS if key not in row})
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))

    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "---|" * len(SWEEP_COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in SWEEP_COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_sweep(rows: list[dict[str, Any]], folder: str | Path, context: dict[str, Any]) -> dict[str, Path]:
    """The sweep as ``sweep.csv``, ``sweep.md`` (with ``context``: run, N, features, floors), ``sweep.json``
    and ``sweep.png`` (:func:`ddpmlab.plots.plot_sweep`) in ``folder``; returns their paths."""
    from ddpmlab.plots import plot_sweep

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"sweep.{kind}" for kind in ("csv", "md", "json", "png")}
    with open(paths["csv"], "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=SWEEP_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = "\n".join(f"- {key}: {value}" for key, value in context.items())
    paths["md"].write_text(f"# Sweep\n\n{header}\n\n{_markdown(rows)}")
    paths["json"].write_text(json.dumps({"context": context, "rows": rows}, indent=2) + "\n")
    plot_sweep(rows, paths["png"])
    return paths
