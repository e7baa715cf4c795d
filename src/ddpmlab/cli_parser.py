"""The arguments of every ``ddpmlab`` command (:func:`build_parser`); :mod:`ddpmlab.cli` runs them."""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "ParserExit", "OneLineParser", "SCHEDULES_HELP", "FEATURES_HELP"]

SCHEDULES_HELP = "comma-separated names or package.module:function (alpha_bar(tau) on [0, 1])"
FEATURES_HELP = "judge:RUN, reader:RUN (text runs: also reads the samples) or inception[:WEIGHTS]"


class ParserExit(Exception):
    """The parser is done: ``--help`` was printed (status 0) or the arguments were refused (status 2,
    after one line ``ddpmlab: error: ...`` on stderr). :func:`ddpmlab.cli.main` returns the status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``ddpmlab: error: <command>: <message>; see
    <prog> --help``, instead of the usage block and a second line; it raises :class:`ParserExit`
    rather than calling ``sys.exit``, so that ``main(argv)`` always returns a status. Sub-parsers
    (one per command) are of the same class."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{command}: " if command else ""
        line = " ".join(message.split())
        self._print_message(f"ddpmlab: error: {where}{line}; see {self.prog} --help\n", sys.stderr)
        raise ParserExit(2)

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)


def _add_schedule_parsers(sub) -> None:
    p = sub.add_parser(
        "schedules",
        help="plot and compare noise schedules",
        description="Plot beta_t, "
        "alpha_bar_t and log-SNR of noise schedules and print, for each, the timestep at which "
        "alpha_bar falls below 0.5, 0.1 and 0.01 (how long the data stays structured).",
    )
    p.add_argument("--schedules", default="linear,cosine,quadratic,sigmoid", help=SCHEDULES_HELP)
    p.add_argument("--timesteps", type=int, default=1000, help="T (default 1000)")
    p.add_argument("--out", default="schedules.png", help="where to write the plot (default schedules.png)")
    p.set_defaults(command="schedules")
    p = sub.add_parser(
        "forward",
        help="picture the forward (noising) process on real images under several schedules",
        description="Noise the same few images with q(x_t | x_0) at evenly spaced t "
        "from 0 to T-1, one block of rows per schedule, all schedules with the same noise (so the "
        "blocks differ only by the schedule); columns are labelled with t and alpha_bar_t.",
    )
    p.add_argument("--data", default="mnist5k", help="an image dataset name (default mnist5k)")
    p.add_argument("--root", help="dataset folder (torchvision datasets) or the image folder (folder)")
    p.add_argument("--image-size", type=int, help="resize and centre-crop the images to this size")
    p.add_argument("--schedules", default="linear,cosine,quadratic,sigmoid", help=SCHEDULES_HELP)
    p.add_argument("--timesteps", type=int, default=1000, help="T (default 1000)")
    p.add_argument("--steps", type=int, default=10, help="number of t values, evenly spaced (default 10)")
    p.add_argument("--num", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--seed", type=int, default=0, help="chooses the images and the noise (default 0)")
    p.add_argument("--out", default="forward.png", help="the picture to write (default forward.png)")
    p.set_defaults(command="forward")


def _add_training_parsers(sub) -> None:
    for name, helptext, description in (
        ("train", "train a model from a YAML config", "Train a diffusion model."),
        (
            "train-classifier",
            "train a noise-aware classifier for classifier guidance",
            "Train a noise-aware classifier p(y | x_t, t) on noised images (t uniform over the "
            "config's diffusion timesteps) for `ddpmlab sample --classifier`; its diffusion section must "
            "match the runs it will guide.",
        ),
        (
            "train-judge",
            "train a judge: a classifier of clean real images that evaluates samples",
            "Train a judge (model.type judge): a CNN classifier of clean real images whose predictions "
            "give the class accuracy of samples and whose features give FD_judge, KID_judge, precision "
            "and recall.",
        ),
        (
            "train-reader",
            "train a captcha reader: a CRNN + CTC reader of real renders that reads text samples",
            "Train a captcha reader (model.type reader, data.name captcha): a CNN + BiGRU with CTC loss on "
            "real renders of the captcha package, whose readings give the exact-string and per-character "
            "accuracy of text-conditional samples and whose features give FD_reader and KID_reader. After "
            "training it reads held-out renders (another seed, unseen strings) and records the accuracy "
            "in heldout.json.",
        ),
    ):
        p = sub.add_parser(
            name,
            help=helptext,
            description=description + " Dotted overrides change any "
            "config key, e.g. train.steps=3000 data.means=[-3,0,4] diffusion.schedule=cosine",
        )
        p.add_argument(
            "--config", required=name != "train", help="YAML config file (e.g. configs/mog1d.yaml)"
        )
        # --run-dir: the spelling to use after torchrun, whose own parser takes --run for its --run-path.
        p.add_argument("--run", "--run-dir", dest="run", help="run directory (default runs/<config name>)")
        p.add_argument(
            "--resume", action="store_true", help="continue the run in --run from its last checkpoint"
        )
        p.add_argument(
            "--dry-run", action="store_true", help="print the resolved config and model size, then exit"
        )
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
        p.set_defaults(command=name)
    p = sub.add_parser(
        "demo",
        help="the main job: train a shipped config and write what it makes",
        description="Train a shipped config (default: class-conditional MNIST digits, about 10 "
        "minutes on a laptop CPU), then write a 10x10 grid (one row per digit, classifier-free "
        "guidance), a zip of 64 images and a denoising animation; for toy configs, the plots. "
        "Overrides change the config, e.g. train.steps=100.",
    )
    p.add_argument(
        "--config", default="mnist5k", help="a shipped config name (default mnist5k) or a YAML path"
    )
    p.add_argument(
        "--run", help="run directory (default runs/demo-<config>; replaced if it holds an earlier demo)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(command="demo")


def _add_sampling_options(p, num_default: str) -> None:
    from ddpmlab.runs.conditions import TEXT_PER_ROW
    from ddpmlab.samplers import SAMPLERS

    # --run-dir / --num-samples: the spellings to use after torchrun, whose own parser takes --run and
    # --num for abbreviations of its --run-path and --numa-binding.
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    p.add_argument("--num", "--num-samples", dest="num", type=int, help=f"number of samples ({num_default})")
    p.add_argument("--sampler", choices=list(SAMPLERS), help="default: the run's sample section")
    p.add_argument("--steps", type=int, help="reverse steps (respaced); default: all T for ddpm, 50 for ddim")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (conditional runs)")
    p.add_argument(
        "--labels",
        help="conditional runs and --classifier: 'all' (classes in turn) or class indices, e.g. 0,3,7",
    )
    p.add_argument(
        "--classifier",
        help="classifier guidance: a run of `ddpmlab train-classifier` (same "
        "diffusion as --run; needs --labels)",
    )
    p.add_argument(
        "--classifier-scale", type=float, help="classifier guidance scale s (default 1; needs --classifier)"
    )
    p.add_argument(
        "--text",
        help="text-conditional runs (captchas): comma-separated strings, e.g. fngff,gnfcd, "
        f"each in turn in blocks (one grid row each; default --num: {TEXT_PER_ROW} per string); "
        "default: random strings",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")


def _add_sampling_parsers(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="sample from a trained run",
        description="Sample from a trained run "
        "(its EMA weights). --out decides the output: x.npz (arrays 'images' uint8 [N, H, W, C] "
        "or 'samples' for toy data, and 'labels'), grid.png / grid.jpg (one picture; one row per "
        "class with --labels all, one row per string with --text), x.gif (a denoising "
        "animation: the noisy images beside the predicted clean images at --frames steps), or a "
        "folder (one file per image).",
    )
    _add_sampling_options(p, "default: the run's sample section")
    p.add_argument("--out", required=True, help="samples.npz, grid.png, denoising.gif or a folder")
    p.add_argument(
        "--frames",
        type=int,
        help="frames of a .gif animation, evenly spaced steps "
        "(default 40); its samples are one batch (default --num: 16, or 2 per class with --labels all)",
    )
    p.add_argument("--fps", type=int, help="frames per second of a .gif animation, 1-50 (default 10)")
    p.set_defaults(command="sample")
    p = sub.add_parser(
        "export",
        help="write N generated images as separate files in a zip (course submissions), or the run as a "
        "diffusers pipeline",
        description="Sample N images from a run and write them as separate "
        "PNG/JPG files inside a zip archive named as you ask, e.g. --zip HW2_123456789.zip; or, with "
        "--diffusers DIR, write the run (EMA weights) as a folder that diffusers' "
        "DDPMPipeline.from_pretrained(DIR) loads.",
    )
    _add_sampling_options(p, "default 64; with --text, 8 per string")
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="image file format (default png)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--zip", help="the archive to write, e.g. HW2_123456789.zip")
    target.add_argument(
        "--diffusers", metavar="DIR", help="write a diffusers pipeline folder (UNet2DModel + DDPMScheduler)"
    )
    p.set_defaults(command="export")
    p = sub.add_parser(
        "evaluate",
        help="measure a run's samples against its real data (FD, KID, precision/recall, memorisation)",
        description="Sample from a run (or read --samples x.npz) and measure the samples against the "
        "run's training data in the features of a judge (--features judge:RUN, a run of `ddpmlab "
        "train-judge`), of a captcha reader (--features reader:RUN, a run of `ddpmlab train-reader`; "
        "text runs) or of the FID Inception network (--features inception[:WEIGHTS], needs pip "
        "install 'ddpmlab[metrics]'): FD, KID, precision and recall, class accuracy (with a judge), "
        "exact-string and per-character reading accuracy (with a reader; one sample per random string "
        "the run did not train on, unless --text), and memorisation, each beside what real images "
        "score at the same N.",
    )
    _add_sampling_options(p, "default 1000; with --text, 8 per string")
    p.add_argument("--features", required=True, help=FEATURES_HELP)
    p.add_argument("--samples", help="an .npz of `ddpmlab sample` to measure instead of sampling")
    p.add_argument("--real-num", type=int, default=10_000, help="real images to read at most (default 10000)")
    p.add_argument("--out", help="write the numbers to this JSON file")
    p.add_argument(
        "--pairs", help="draw the samples closest to the real data beside their nearest real image"
    )
    p.set_defaults(command="evaluate")
    p = sub.add_parser(
        "sweep",
        help="sample a run with several samplers, step counts and guidance scales; time and measure each",
        description="For every combination of --sampler, --steps and --guidance: draw --num samples with the "
        "same seed, time them, and measure them against the run's real data (as `ddpmlab evaluate`). Writes "
        "sweep.csv, sweep.md, sweep.json and sweep.png (quality against seconds per image; FD, precision, "
        "recall and class accuracy against the guidance scale) into --out.",
    )
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--features", required=True, help=FEATURES_HELP)
    p.add_argument("--sampler", default="ddim", help="comma-separated samplers (default ddim)")
    p.add_argument("--steps", default="20,50", help="comma-separated step counts (default 20,50)")
    p.add_argument("--guidance", default="default", help="comma-separated guidance scales (conditional runs)")
    p.add_argument("--labels", help="'all' (classes in turn) or class indices, e.g. 0,3,7")
    p.add_argument("--num", type=int, default=500, help="samples per setting (default 500)")
    p.add_argument("--real-num", type=int, default=10_000, help="real images to read at most (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="the folder to write the table and figure into")
    p.set_defaults(command="sweep")


def _add_interop_parsers(sub) -> None:
    p = sub.add_parser(
        "import-diffusers",
        help="make a diffusers UNet2DModel + DDPMScheduler folder a ddpmlab run",
        description="Read a diffusers pipeline folder (model_index.json, unet/, scheduler/; e.g. the "
        "published DDPM CIFAR-10 model) and write a run directory that sample, export and train "
        "--resume (fine-tuning) accept. The run's data is fixed here, like every key of a run: give it "
        "to fine-tune later, e.g. data.name=cifar10, or data.name=folder data.root=DIR.",
    )
    p.add_argument("folder", help="the diffusers folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    # nargs="+": the overrides may also follow --run (argparse takes positionals before it only)
    p.add_argument(
        "--run",
        required=True,
        nargs="+",
        metavar=("RUN", "key=value"),
        help="the run directory to write (then, optionally, dotted config overrides)",
    )
    p.set_defaults(command="import-diffusers")


COMPARE_EPILOG = """\
An ENTRY is a run directory, optionally followed by comma-separated settings (no spaces unless quoted):
  RUN[,label=NAME][,sampler=NAME][,steps=K][,eta=E][,guidance=W][,classifier=RUN][,classifier_scale=S]
Settings left out take the run's sample section. guidance (classifier-free) applies to conditional runs,
classifier (classifier guidance, a run of `ddpmlab train-classifier`) to unconditional ones; label names
the entry's column. Every entry is sampled with the same --seed and, when it takes labels (conditional
runs, classifier guidance), the classes 0, 1, ..., C-1 in turn; text runs (captchas) ask for random
strings they did not train on, the same for runs of the same data, read back with --features reader:RUN.

examples:
  ddpmlab compare runs/mnist5k runs/mnist5k_uncond --features judge:runs/mnist5k_judge --out report/
  ddpmlab compare runs/mnist5k,guidance=3 \\
      runs/mnist5k_uncond,classifier=runs/mnist5k_classifier,classifier_scale=3,label=classifier_s3 \\
      --features judge:runs/mnist5k_judge --num 1000 --out cg_vs_cfg/
"""


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="runs (or sampling settings) side by side: sample grids, metrics with floors, training curves",
        description="Sample every ENTRY with the same seed and labels, measure each against its run's real "
        "data as `ddpmlab evaluate` does (every metric beside its real-vs-real floor; with a judge, also the "
        "histogram of predicted classes; with a reader, the strings read back), and write one report into "
        "--out: report.md, index.html (a static "
        "page, the sample grids above the numbers), report.json, a grid and the samples (.npz) per entry, "
        "the runs' training curves, their training budget, size and differing config keys.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("entries", nargs="+", metavar="ENTRY", help="RUN[,key=value,...] (see below)")
    p.add_argument("--features", required=True, help=FEATURES_HELP)
    p.add_argument("--num", type=int, default=1000, help="samples per entry (default 1000)")
    p.add_argument("--out", required=True, help="the report folder (created; files in it are replaced)")
    p.add_argument("--real-num", type=int, default=10_000, help="real images to read at most (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(command="compare")


def build_parser() -> OneLineParser:
    """The ``ddpmlab`` argument parser with every command."""
    parser = OneLineParser(prog="ddpmlab", description="Denoising diffusion probabilistic models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_schedule_parsers(subparsers)
    _add_training_parsers(subparsers)
    _add_sampling_parsers(subparsers)
    _add_interop_parsers(subparsers)
    _add_compare_parser(subparsers)
    parser.commands = subparsers.choices  # name -> sub-parser (errors about a command name it)
    return parser
