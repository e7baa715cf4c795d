"""The ``ddpmlab`` command: thin wrappers that parse arguments and call the library.

Every error a user can cause (bad option, missing file, unknown schedule, a run that would be
overwritten) is printed as one line ``ddpmlab: error: ...`` with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2


class UsageError(Exception):
    """An error caused by the user's input: printed on one line, exit status 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from ddpmlab.config import ConfigError
    from ddpmlab.runs import RunError
    from ddpmlab.schedules import ScheduleError
    from ddpmlab.training.checkpoint import CheckpointError

    return (UsageError, ConfigError, RunError, ScheduleError, CheckpointError, ValueError, FileNotFoundError)


# --------------------------------------------------------------------------------------------------
# ddpmlab schedules
# --------------------------------------------------------------------------------------------------


def _add_schedules(subparsers) -> None:
    p = subparsers.add_parser(
        "schedules",
        help="plot and compare noise schedules",
        description="Plot beta_t, alpha_bar_t and log-SNR of noise schedules and print, for each, the "
        "timestep at which alpha_bar falls below 0.5, 0.1 and 0.01 (how long the data stays structured).",
    )
    p.add_argument(
        "--schedules",
        default="linear,cosine,quadratic,sigmoid",
        help="comma-separated names or package.module:function (alpha_bar(tau) on [0, 1])",
    )
    p.add_argument("--timesteps", type=int, default=1000, help="T (default 1000)")
    p.add_argument("--out", default="schedules.png", help="where to write the plot (default schedules.png)")
    p.set_defaults(handler=_cmd_schedules)


def _cmd_schedules(args) -> int:
    from ddpmlab.plots import plot_schedules
    from ddpmlab.schedules import make_schedule, structure_timesteps

    names = [name.strip() for name in args.schedules.split(",") if name.strip()]
    if not names:
        raise UsageError("--schedules is empty")
    schedules = [make_schedule(name, args.timesteps) for name in names]
    thresholds = (0.5, 0.1, 0.01)
    width = max(12, *(len(s.name) for s in schedules))
    header = f"{'schedule':<{width}}  " + "  ".join(f"a_bar<{x:<5}" for x in thresholds) + "  a_bar[T-1]"
    print(f"T = {args.timesteps}: first timestep t (0-based) at which alpha_bar_t falls below each level")
    print(header)
    print("-" * len(header))
    for schedule in schedules:
        crossings = structure_timesteps(schedule, thresholds)
        cells = "  ".join(f"{('never' if crossings[x] is None else crossings[x]):>11}" for x in thresholds)
        print(f"{schedule.name:<{width}}  {cells}  {float(schedule.alphas_cumprod[-1]):.3e}")
    path = plot_schedules(schedules, args.out)
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab train
# --------------------------------------------------------------------------------------------------


def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a diffusion model. Dotted overrides change any config key, e.g. "
        "train.steps=3000 data.means=[-3,0,4] diffusion.schedule=cosine",
    )
    p.add_argument("--config", help="YAML config file (e.g. configs/mog1d.yaml)")
    p.add_argument("--run", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and model size, then exit"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args) -> int:
    from ddpmlab.config import load_config
    from ddpmlab.runs import build_data, build_model_for, train_run

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.run) if args.run else Path("runs") / config.name
    if args.dry_run:
        _, info = build_data(config)
        model = build_model_for(config, info)
        count = sum(p.numel() for p in model.parameters())
        print(config.to_yaml().rstrip())
        print(f"# run directory: {run_dir}")
        print(f"# model: {type(model).__name__} with {count:,} parameters ({count / 1e6:.2f}M)")
        return 0
    trainer = train_run(config, run_dir, resume=args.resume)
    print(
        f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s; "
        f"run directory: {run_dir}"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab sample
# --------------------------------------------------------------------------------------------------


def _add_sample(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="sample from a trained run", description="Sample from a trained run (its EMA weights)."
    )
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--num", type=int, help="number of samples (default: the run's sample.num)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], help="default: the run's sample.sampler")
    p.add_argument("--steps", type=int, help="reverse steps (respaced); default: all T for ddpm, 50 for ddim")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (conditional runs)")
    p.add_argument("--labels", help="conditional runs: 'all' (cycle through classes) or e.g. 0,3,7")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="samples.npz (arrays 'samples' and 'labels')")
    p.set_defaults(handler=_cmd_sample)


def _parse_labels(text: str | None, num_classes: int):
    if text is None or text == "all":
        return None
    try:
        labels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--labels must be 'all' or comma-separated class indices, got {text!r}") from None
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad or not labels:
        raise UsageError(f"--labels: classes must lie in 0..{num_classes - 1}, got {text!r}")
    return labels


def _cmd_sample(args) -> int:
    import numpy as np

    from ddpmlab.runs import make_run_sampler, open_run, sample_run

    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {out}")
    run = open_run(args.run, args.device)
    labels = _parse_labels(args.labels, run.info.num_classes) if run.conditional else None
    if args.labels and not run.conditional:
        raise UsageError("--labels: this run is unconditional")
    sampler = make_run_sampler(run, args.sampler, args.steps, args.eta)
    num = args.num or run.config.sample.num
    samples, used_labels = sample_run(
        run, num, sampler, args.guidance, labels, args.seed, args.batch_size, progress=True
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"samples": samples.numpy()}
    if used_labels is not None:
        arrays["labels"] = np.asarray(used_labels)
    np.savez(out, **arrays)
    print(f"wrote {num} samples ({sampler!r}) to {out}")
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab demo
# --------------------------------------------------------------------------------------------------


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job: train the default config and write its pictures")
    p.add_argument(
        "--run", default="runs/demo-mog1d", help="run directory (replaced if it holds an earlier demo)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    import shutil

    from ddpmlab.config import load_config
    from ddpmlab.runs import train_run

    config_path = Path(__file__).resolve().parent / "configs" / "mog1d.yaml"
    config = load_config(config_path, args.overrides)
    run_dir = Path(args.run)
    marker = run_dir / ".ddpmlab-demo"
    if run_dir.exists():
        if not marker.exists():
            raise UsageError(f"{run_dir} exists and is not a demo run; choose another --run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    marker.touch()
    train_run(config, run_dir)
    print(f"demo finished: pictures in {run_dir / 'plots'}, metrics in {run_dir / 'metrics.jsonl'}")
    return 0


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpmlab", description="Denoising diffusion probabilistic models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_schedules(subparsers)
    _add_train(subparsers)
    _add_sample(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ddpmlab: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
