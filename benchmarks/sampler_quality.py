"""How many network evaluations each sampler needs on a trained image model to match DDPM-1000.

Run by hand (not a test), after ``make demo`` (the class-conditional mnist5k model) and a judge:

    .venv/bin/ddpmlab train-judge --config configs/mnist5k_judge.yaml --run runs/mnist5k_judge
    .venv/bin/python -m benchmarks sampler-quality --run runs/demo-mnist5k --features judge:runs/mnist5k_judge

Every setting draws the same ``--num`` samples (default 1,000; the same seed, so the same x_T, and
labels 0..9 in blocks: deterministic samplers differ only by their discretisation), at the run's
guidance scale, and measures them with :func:`ddpmlab.runs.sweep.sweep_run` against the run's real
images (FD and KID in the judge's features, precision, recall, class accuracy). DDPM with all 1000
steps is the reference. For each sampler the report gives the fewest network evaluations (NFE; a CFG
step counts two) at which it *matches* the reference: FD at most ``--tolerance`` (5%) above the
reference's and KID at most one reference KID standard deviation above it. The test is one-sided on
purpose: with guidance, the deterministic samplers land *below* DDPM-1000's FD (DDPM's fresh noise at
every step trades recall for precision at w = 3), and a sampler better than the reference has matched it.

Wall times per image at each matching point are measured by this process on this machine, with CFG (the
run's w, two evaluations per step) and without (w = 1, one per step), on ``--timing-num`` images (fewer
for the costly settings: about ``--timing-num`` x 40 image-evaluations each). The rows themselves may
come from another machine (a GPU; the partial file records where): their FD and KID do not depend on it,
their ``seconds_per_image`` does.

Rows are appended to ``OUT.partial.json`` as they finish (a long run cut short keeps what it measured;
a rerun skips the rows already there). Wall times come from a shared 2-core machine: read them as
+-15%.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

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


def _load_partial(path: Path, here: str) -> tuple[list[dict], str]:
    """The rows measured so far and the machine they were measured on (``here`` for a new file)."""
    if not path.exists():
        return [], here
    saved = json.loads(path.read_text())
    return saved["rows"], saved.get("machine", here)


def _save_partial(path: Path, rows: list[dict], machine: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    temporary.replace(path)


def timing_images(nfe: int, timing_num: int) -> int:
    """Images to time a setting of ``nfe`` evaluations on: ``timing_num`` for settings of up to 40 NFE,
    fewer (at least 8) for costlier ones, so that DDPM-1000 takes seconds rather than an hour."""
    return max(8, min(timing_num, round(timing_num * 40 / nfe)))


def seconds_per_image(run, name: str, steps: int, guidance: float, num: int, seed: int) -> float:
    """Wall seconds per image of ``name`` with ``steps`` at guidance ``guidance`` (w = 1: one network
    evaluation per step; otherwise two), on ``num`` images, after one untimed warm-up image."""
    sampler = make_run_sampler(run, name, steps)
    plan = plan_conditions(run, num, "all", None)
    sample_run(run, 1, sampler, guidance, None, seed)  # warm-up
    started = time.perf_counter()
    sample_run(run, plan.num, sampler, guidance, plan.labels, seed)
    return (time.perf_counter() - started) / plan.num


def matching_point(rows: list[dict], reference: dict, tolerance: float) -> dict[str, dict]:
    """Per sampler, its cheapest row whose FD is at most ``tolerance`` (a fraction) above the
    reference's and whose KID is at most the reference's KID standard deviation above the reference's
    KID (absent when no row qualifies). One-sided: a row better than the reference matches it."""
    found: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r["nfe"]):
        close_fd = row["fd"] <= (1 + tolerance) * reference["fd"]
        close_kid = row["kid"] <= reference["kid"] + reference["kid_std"]
        if close_fd and close_kid and row["sampler"] not in found:
            found[row["sampler"]] = row
    return found


def report(rows: list[dict], matches: dict[str, dict], args, context: dict) -> str:
    ref = next(r for r in rows if (r["sampler"], r["steps"]) == REFERENCE)
    lines = [
        "# Network evaluations to match DDPM-1000 on the make-demo model",
        "",
        f"Command: `{context['command']}`",
        f"Rows (FD, KID, ..., and their s/image) measured on: {context['rows_machine']}.",
        f"Wall times at the matching points measured on: {context['machine']}; "
        f"torch {context['versions'].get('torch')}.",
        f"Run: {context['run']} (step {context['step']}), guidance w = {context['guidance']}, "
        f"N = {args.num} samples per setting (labels 0..9 in turn, seed {args.seed}), "
        f"features {args.features}, reference {context['n_reference']} real images.",
        f"Real-vs-real floors at this N: FD {ref['fd_floor']:.3f}.",
        "",
        "| sampler | steps | NFE | s/image (rows' machine) | FD | KID +- std | precision | recall "
        "| class acc |",
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
        f"The cheapest setting of each sampler that matches DDPM-1000: FD at most {args.tolerance:.0%} "
        f"above its {ref['fd']:.3f} (<= {(1 + args.tolerance) * ref['fd']:.3f}) and KID at most one std "
        f"above its {ref['kid']:.4f} +- {ref['kid_std']:.4f} (<= {ref['kid'] + ref['kid_std']:.4f}); "
        f"wall times on {context['machine']}.",
        "",
        "| sampler | steps | NFE (with CFG) | FD | s/image with CFG | s/image without CFG (w=1) "
        "| images timed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _ in GRID:
        match = matches.get(name)
        if match is None:
            lines.append(f"| {name} | not reached in the grid | | | | | |")
        else:
            lines.append(
                f"| {name} | {match['steps']} | {match['nfe']} | {match['fd']:.3f} | "
                f"{match['seconds_here_with_cfg']:.3f} | {match['seconds_here_without_cfg']:.3f} | "
                f"{match['images_timed']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    partial = Path(args.out).with_suffix(".partial.json")
    network = load_feature_network(args.features)
    run = open_run(args.run)
    gpu = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else None
    rows, rows_machine = _load_partial(partial, harness.machine_line(gpu))
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
            _save_partial(partial, rows, rows_machine)
            print(json.dumps(row), flush=True)
    if not any((r["sampler"], r["steps"]) == REFERENCE for r in rows):
        print("the DDPM-1000 reference is not measured yet; rerun without --only")
        return 1
    reference = next(r for r in rows if (r["sampler"], r["steps"]) == REFERENCE)
    matches = matching_point(rows, reference, args.tolerance)
    for match in matches.values():
        count = timing_images(match["nfe"], args.timing_num)
        for key, guidance in (("with", match["guidance"]), ("without", 1.0)):
            match[f"seconds_here_{key}_cfg"] = seconds_per_image(
                run, match["sampler"], match["steps"], guidance, count, args.seed
            )
        match["images_timed"] = count
    context = {
        "command": harness.command_line("sampler-quality", argv),
        "rows_machine": rows_machine,
        "machine": harness.machine_line(gpu),
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
