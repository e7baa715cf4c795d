"""How many network evaluations each sampler needs on a trained image model to match DDPM-1000.

Run by hand (not a test), after ``make demo`` (the class-conditional mnist5k model) and a judge:

    .venv/bin/ddpmlab train-judge --config configs/mnist5k_judge.yaml --run runs/mnist5k_judge
    .venv/bin/python -m benchmarks sampler-quality --run runs/demo-mnist5k --features judge:runs/mnist5k_judge

Every setting draws the same ``--num`` samples (default 1,000; the same seed, so the same x_T, and
labels 0..9 in blocks: deterministic samplers differ only by their discretisation), at the run's
guidance scale, and measures them with :func:`ddpmlab.runs.sweep.sweep_run` against the run's real
images (FD and KID in the judge's features, precision, recall, class accuracy). DDPM with all 1000
steps is the reference; for each sampler the report gives the fewest network evaluations (NFE; a CFG
step counts two) whose FD is within
``--tolerance`` (5%) of the reference's and whose KID is within the reference's KID standard deviation,
and the wall time per image there, with CFG (the measured row) and without (the same sampler and steps
at w = 1, one forward per step, timed on ``--timing-num`` images).

Rows are appended to ``OUT.partial.json`` as they finish (a long run cut short keeps what it measured;
a rerun skips the rows already there). Wall times come from a shared 2-core machine: read them as
+-15%.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import harness
from ddpmlab.runs import open_run, plan_conditions
from ddpmlab.runs.evaluate import load_feature_network, real_data
from ddpmlab.runs.sampling import make_run_sampler, sample_run
from ddpmlab.runs.sweep import sweep_run

# (sampler, step counts), cheapest first; the reference goes last.
GRID = (
    ("ddim", (10, 20, 50, 100)),
    ("dpm++2m", (5, 10, 15, 20, 30)),
    ("dpm++3m", (10, 20)),
    ("heun", (5, 10)),
    ("ddpm", (1000, 100)),
    ("sde-dpm++2m", (20, 50)),
)
REFERENCE = ("ddpm", 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo-mnist5k")
    parser.add_argument("--features", default="judge:runs/mnist5k_judge")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--timing-num", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated samplers to measure (default: all)")
    harness.add_output_options(parser, "sampler_quality")
    return parser.parse_args(argv)


def _load_partial(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _save_partial(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    temporary.replace(path)


def seconds_without_cfg(run, name: str, steps: int, num: int, seed: int) -> float:
    """Wall seconds per image of ``name`` with ``steps`` at w = 1 (one network evaluation per step)."""
    sampler = make_run_sampler(run, name, steps)
    plan = plan_conditions(run, num, "all", None)
    started = time.perf_counter()
    sample_run(run, plan.num, sampler, 1.0, plan.labels, seed)
    return (time.perf_counter() - started) / plan.num


def matching_point(rows: list[dict], reference: dict, tolerance: float) -> dict[str, dict]:
    """Per sampler, its cheapest row within ``tolerance`` of the reference's FD and within the
    reference's KID standard deviation of its KID (absent when no row qualifies)."""
    found: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r["nfe"]):
        close_fd = abs(row["fd"] - reference["fd"]) <= tolerance * reference["fd"]
        close_kid = abs(row["kid"] - reference["kid"]) <= reference["kid_std"]
        if close_fd and close_kid and row["sampler"] not in found:
            found[row["sampler"]] = row
    return found


def report(rows: list[dict], matches: dict[str, dict], args, context: dict) -> str:
    ref = next(r for r in rows if (r["sampler"], r["steps"]) == REFERENCE)
    lines = [
        "# Network evaluations to match DDPM-1000 on the make-demo model",
        "",
        f"Command: `{context['command']}`",
        f"Machine: {context['machine']}; torch {context['versions'].get('torch')}.",
        f"Run: {context['run']} (step {context['step']}), guidance w = {context['guidance']}, "
        f"N = {args.num} samples per setting (labels 0..9 in turn, seed {args.seed}), "
        f"features {args.features}, reference {context['n_reference']} real images.",
        f"Real-vs-real floors at this N: FD {ref['fd_floor']:.3f}.",
        "",
        "| sampler | steps | NFE | s/image | FD | KID +- std | precision | recall | class acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['seconds_per_image']:.3f} | {r['fd']:.3f} | "
            f"{r['kid']:.4f} +- {r['kid_std']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r.get('class_accuracy') or float('nan'):.3f} |"
        )
    lines += [
        "",
        f"Within {args.tolerance:.0%} of DDPM-1000's FD ({ref['fd']:.3f}) and within its KID std "
        f"({ref['kid']:.4f} +- {ref['kid_std']:.4f}): the cheapest setting of each sampler.",
        "",
        "| sampler | steps | NFE (with CFG) | s/image with CFG | s/image without CFG (w=1) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, _ in GRID:
        match = matches.get(name)
        if match is None:
            lines.append(f"| {name} | not reached in the grid | | | |")
        else:
            plain = match.get("seconds_per_image_without_cfg")
            plain_text = "" if plain is None else f"{plain:.3f}"
            cfg_text = f"{match['seconds_per_image']:.3f}"
            lines.append(f"| {name} | {match['steps']} | {match['nfe']} | {cfg_text} | {plain_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    partial = Path(args.out).with_suffix(".partial.json")
    rows = _load_partial(partial)
    network = load_feature_network(args.features)
    run = open_run(args.run)
    plan = plan_conditions(run, args.num, "all", None)
    real = real_data(run, 10_000, args.seed)
    wanted = None if args.only is None else set(args.only.split(","))
    for name, counts in GRID:
        for steps in counts:
            done = any((r["sampler"], r["steps"]) == (name, steps) for r in rows)
            if done or (wanted is not None and name not in wanted):
                continue
            [row] = sweep_run(
                run, network, real, [name], [steps], [None], plan.num, plan.labels, args.seed, True
            )
            rows.append(row)
            _save_partial(partial, rows)
            print(json.dumps(row), flush=True)
    if not any((r["sampler"], r["steps"]) == REFERENCE for r in rows):
        print("the DDPM-1000 reference is not measured yet; rerun without --only")
        return 1
    reference = next(r for r in rows if (r["sampler"], r["steps"]) == REFERENCE)
    matches = matching_point(rows, reference, args.tolerance)
    for match in matches.values():
        match["seconds_per_image_without_cfg"] = seconds_without_cfg(
            run, match["sampler"], match["steps"], args.timing_num, args.seed
        )
    context = {
        "command": harness.command_line("sampler-quality", argv),
        "machine": harness.machine_line(),
        "versions": harness.versions(),
        "run": str(run.run_dir),
        "step": run.step,
        "guidance": run.config.sample.guidance,
        "n_reference": len(real.images),
    }
    result = {"context": context, "rows": rows, "matches": matches}
    harness.publish(args, result, report(rows, matches, args, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
