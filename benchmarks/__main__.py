"""``python -m benchmarks NAME [options]``: run one of the benchmarks in this folder and print its table.

From the repository root (the benchmarks need the dev extra: diffusers is their reference)::

    .venv/bin/python -m benchmarks                       # list the benchmarks
    .venv/bin/python -m benchmarks training --no-write   # UNet training images/s against diffusers
    .venv/bin/python -m benchmarks sampling --no-write   # DDPM-1000 / DDIM-50 (+CFG) images/s vs diffusers
    .venv/bin/python -m benchmarks profile --no-write    # where the time goes, by kind of op, vs diffusers
    .venv/bin/python -m benchmarks sampling --help       # each benchmark's own options

``--no-write`` measures your machine without overwriting the committed results in ``benchmarks/results/``.
Every benchmark is also a plain script (``python benchmarks/unet_speed.py``); this is only a front door.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, what it measures)
BENCHMARKS = {
    "training": (
        "unet_speed.py",
        "UNet training images/s against diffusers' UNet2DModel (same batch, dtype)",
    ),
    "sampling": (
        "sampling_speed.py",
        "sampling images/s, DDPM-1000 / DDIM-50 with and without CFG, vs diffusers",
    ),
    "toy": (
        "toy.py",
        "toy configs: wall time of train + sample 10k, distance to the truth vs the noise floor",
    ),
    "profile": (
        "cpu_profile.py",
        "where the CPU time goes, by kind of op, ours vs diffusers; the ceiling of the speed ratio",
    ),
    "judge": ("mnist_judge.py", "a CNN trained on real MNIST that judges generated digits (train | judge)"),
    "classifier-guidance": ("classifier_guidance.py", "judge accuracy of classifier-guided mnist5k samples"),
    "gpu": (
        "gpu_speed.py",
        "CIFAR-10 UNet on a GPU: train/sample speed vs diffusers, MFU, memory, loss (--smoke: CPU)",
    ),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = ["usage: python -m benchmarks NAME [options]   (NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, options = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"error: unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    script = HERE / BENCHMARKS[name][0]
    sys.path.insert(0, str(HERE))  # the scripts import each other by file name
    sys.argv = [str(script), *options]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the scripts end with sys.exit(main()) or argparse's exit
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
