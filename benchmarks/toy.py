"""Toy-data benchmark: train + sample 10,000 points per shipped toy config, 3 seeds, against the floor.

Run by hand (not a test):

    .venv/bin/python -m benchmarks toy                       # all toy configs, seeds 0 1 2
    .venv/bin/python -m benchmarks toy --configs mog1d --seeds 0 --no-write

For each config and seed it times, in one process and wall clock, building + training the run and then
sampling ``sample.num`` points with the config's sampler (the work ``ddpmlab train`` + ``ddpmlab
sample`` do, without interpreter start-up and plots), then measures the samples:

- 1-D: W1 to the true distribution and its floor (the median W1 of an exact sample of the same size);
- 2-D: sliced W1 to a fresh exact sample and its floor (the median between two exact samples).

It prints a Markdown table and writes it, with the raw numbers, to ``benchmarks/results/toy.{md,json}``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from ddpmlab.config import load_config
from ddpmlab.metrics import toy_metrics
from ddpmlab.runs import make_run_sampler, open_run, sample_run, train_run

TOY = ["mog1d", "mog2d", "moons", "swiss_roll", "circles"]
TARGETS = {
    "mog1d": (30.0, 1.3),
    "mog2d": (60.0, 1.5),
    "moons": (60.0, 1.5),
    "swiss_roll": (60.0, 1.5),
    "circles": (60.0, 1.5),
}


def run_once(name: str, seed: int, workdir: Path) -> dict:
    config = load_config(
        harness.config_path(name), [f"train.seed={seed}", "train.progress=false", "train.tensorboard=false"]
    )
    run_dir = workdir / f"{name}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    train_run(config, run_dir, report=False)
    trained = time.perf_counter()
    run = open_run(run_dir)
    samples, _ = sample_run(run, config.sample.num, make_run_sampler(run), seed=seed)
    finished = time.perf_counter()
    metrics = toy_metrics(samples, run.info.dataset, torch.Generator().manual_seed(1000 + seed))
    key = "w1" if run.info.shape == (1,) else "sliced_w1"
    return {
        "config": name,
        "seed": seed,
        "train_s": trained - started,
        "sample_s": finished - trained,
        "total_s": finished - started,
        "metric": key,
        "value": metrics[key],
        "floor": metrics[f"{key}_floor"],
        "ratio": metrics[key] / metrics[f"{key}_floor"],
        "all_metrics": metrics,
    }


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        time_target, ratio_target = TARGETS.get(name, (float("nan"), float("nan")))
        median_ratio = statistics.median(r["ratio"] for r in mine)
        max_time = max(r["total_s"] for r in mine)
        table.append(
            {
                "config": name,
                "metric": mine[0]["metric"],
                "seconds (max over seeds)": round(max_time, 1),
                "seconds per seed": [round(r["total_s"], 1) for r in mine],
                "ratio per seed": [round(r["ratio"], 2) for r in mine],
                "median ratio": round(median_ratio, 2),
                "floor": round(statistics.median(r["floor"] for r in mine), 4),
                "targets": f"<= {time_target:.0f} s, ratio <= {ratio_target}",
                "met": max_time <= time_target and median_ratio <= ratio_target,
            }
        )
    return table


def markdown(table: list[dict]) -> str:
    header = (
        "| config | metric | wall s per seed (train + sample 10k) | ratio to floor per seed | median ratio "
        "| floor | target | met |"
    )
    lines = [header, "|" + "---|" * 8]
    for row in table:
        lines.append(
            f"| {row['config']} | {row['metric']} | {row['seconds per seed']} | {row['ratio per seed']} | "
            f"{row['median ratio']} | {row['floor']} | {row['targets']} | {'yes' if row['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=TOY)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    harness.add_output_options(parser, "toy")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.configs:
            for seed in args.seeds:
                row = run_once(name, seed, Path(workdir))
                print(
                    f"{name} seed {seed}: {row['total_s']:.1f} s, {row['metric']} {row['value']:.4f} "
                    f"floor {row['floor']:.4f} ratio {row['ratio']:.2f}",
                    flush=True,
                )
                rows.append(row)
    table = summarise(rows)
    machine = harness.machine_line()
    command = harness.command_line("toy", argv)
    text = f"# Toy benchmark\n\nMachine: {machine}\n\nCommand: `{command}`\n\n{markdown(table)}\n"
    harness.publish(args, {"machine": machine, "rows": rows, "table": table}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
