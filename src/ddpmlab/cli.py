"""The ``ddpmlab`` command: it parses arguments and calls the library, nothing else.

Every error a user can cause (bad option, missing file, unknown schedule, a run that would be
overwritten) is printed as one line ``ddpmlab: error: ...`` with exit status 2, never a traceback.
Under torchrun only ``train``, ``sample`` and ``export`` run (``--run-dir`` / ``--num-samples`` spell
``--run`` / ``--num`` where torchrun's own parser would take them).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from pickle import UnpicklingError

from ddpmlab.cli_checks import UsageError, check_figure, parse_args
from ddpmlab.cli_measure import compare, evaluate, sweep
from ddpmlab.cli_sampling import draw, names, sampling_request

__all__ = ["main"]

EXIT_USAGE = 2
DISTRIBUTED_COMMANDS = ("train", "sample", "export")  # what torchrun may launch with several processes
MAX_ANIMATED = 256  # samples in a .gif: drawn in one batch, and more would not be seen anyway
DEFAULT_FRAMES, DEFAULT_FPS = 40, 10  # of a .gif animation
MAX_FPS = 50  # a GIF frame lasts whole 1/100 s; browsers show frames shorter than 2/100 s for 1/10 s


def _user_errors() -> tuple[type[BaseException], ...]:
    from ddpmlab.config import ConfigError
    from ddpmlab.runs import RunError
    from ddpmlab.schedules import ScheduleError
    from ddpmlab.training.checkpoint import CheckpointError

    # UnpicklingError: torch.load(weights_only=True) refused a file holding pickled code
    return (UsageError, ConfigError, RunError, ScheduleError, CheckpointError, ValueError, OSError,
            UnpicklingError)


# --------------------------------------------------------------------------------------------------
# ddpmlab schedules | forward
# --------------------------------------------------------------------------------------------------


def _cmd_schedules(args) -> int:
    from ddpmlab.plots import plot_schedules
    from ddpmlab.schedules import make_schedule, structure_timesteps

    check_figure(args.out)
    if args.timesteps <= 0:
        raise UsageError(f"--timesteps must be positive, got {args.timesteps}")
    schedules = [make_schedule(name, args.timesteps) for name in names(args.schedules, "--schedules")]
    thresholds = (0.5, 0.1, 0.01)
    width = max(12, *(len(s.name) for s in schedules))
    header = f"{'schedule':<{width}}  " + "  ".join(f"a_bar<{x:<5}" for x in thresholds) + "  a_bar[T-1]"
    print(f"T = {args.timesteps}: first timestep t (0-based) at which alpha_bar_t falls below each level")
    print(header + "\n" + "-" * len(header))
    for schedule in schedules:
        crossings = structure_timesteps(schedule, thresholds)
        cells = "  ".join(f"{('never' if crossings[x] is None else crossings[x]):>11}" for x in thresholds)
        print(f"{schedule.name:<{width}}  {cells}  {float(schedule.alphas_cumprod[-1]):.3e}")
    print(f"wrote {plot_schedules(schedules, args.out)}")
    return 0


def _cmd_forward(args) -> int:
    import torch

    from ddpmlab.data.sources import build_image_dataset
    from ddpmlab.plots import forward_strips, forward_timesteps, plot_forward_images
    from ddpmlab.schedules import make_schedule

    schedule_names = names(args.schedules, "--schedules")
    check_figure(args.out)
    if args.num <= 0 or args.timesteps <= 0:
        raise UsageError(f"--num and --timesteps must be positive, got {args.num} and {args.timesteps}")
    if not 1 <= args.steps <= args.timesteps:
        raise UsageError(f"--steps must be from 1 to --timesteps ({args.timesteps}), got {args.steps}")
    schedules = [make_schedule(name, args.timesteps) for name in schedule_names]
    dataset = build_image_dataset(args.data, args.image_size, args.root)
    if args.num > len(dataset):
        raise UsageError(f"--num {args.num} is more than the {len(dataset)} images of {args.data}")
    generator = torch.Generator().manual_seed(args.seed)
    indices = torch.randperm(len(dataset), generator=generator)[: args.num].tolist()
    x0 = torch.stack([dataset[i][0] for i in indices])
    noise = torch.randn(x0.shape, generator=generator)
    t_values = forward_timesteps(args.timesteps, args.steps)
    strips = forward_strips(x0, schedules, t_values, noise)
    title = f"{args.data}: q(x_t | x_0), T = {args.timesteps}"
    path = plot_forward_images(strips, schedules, t_values, args.out, title=title)
    print(f"images {indices} of {args.data}, t = {t_values}\nwrote {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab train | train-classifier | train-judge | train-reader | demo
# --------------------------------------------------------------------------------------------------


def _run_kind(kind: str):
    """The :class:`~ddpmlab.runs.training.RunKind` a training command trains."""
    from ddpmlab.runs.judge import JUDGE
    from ddpmlab.runs.reader import READER
    from ddpmlab.runs.training import CLASSIFIER, DIFFUSION

    return {"diffusion": DIFFUSION, "classifier": CLASSIFIER, "judge": JUDGE, "reader": READER}[kind]


# What the accuracy a classifier, judge or reader run logs is measured on.
ACCURACY_ON = {
    "classifier": "accuracy on noised batches",
    "judge": "accuracy on augmented batches",
    "reader": "exact reads of training batches",
}


def _dry_run(config, run_dir: Path, kind: str) -> int:
    from ddpmlab.runs import dry_run
    from ddpmlab.runs.training_eval import evaluation_plan

    model, _ = dry_run(config, kind=_run_kind(kind))
    count = sum(p.numel() for p in model.parameters())
    print(config.to_yaml().rstrip())
    print(f"# run directory: {run_dir}")
    print(f"# model: {type(model).__name__} with {count:,} parameters ({count / 1e6:.2f}M)")
    if evaluation_plan(config):
        print(f"# evaluation: {evaluation_plan(config)}")
    return 0


def _train_request(args):
    """(config, run directory) of ``train``. With ``--resume`` the run continues as it was saved: its
    checkpoint's config plus the command line's overrides, which may only change its stopping rule;
    a ``--config`` file then only names the run directory (``runs/NAME``) when ``--run`` is not given."""
    from ddpmlab.config import load_config
    from ddpmlab.runs import resume_config

    if args.resume and args.run:
        run_dir = Path(args.run)
    else:
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run) if args.run else Path("runs") / config.name
    if args.resume:
        config = resume_config(run_dir, args.overrides)
    return config, run_dir


def _cmd_train(args, kind: str = "diffusion") -> int:
    """``train`` (kind ``diffusion``), ``train-classifier``, ``train-judge`` and ``train-reader``."""
    try:
        return _train(args, kind)
    except OSError as error:  # disk full, a folder that cannot be written, ...: one line, exit 2
        raise UsageError(str(error) or type(error).__name__) from None


def _train(args, kind: str) -> int:
    from ddpmlab import distributed
    from ddpmlab.runs import train_kind_run, train_run

    config, run_dir = _train_request(args)
    if args.dry_run:
        return _dry_run(config, run_dir, kind)
    if kind != "diffusion":
        trainer = train_kind_run(_run_kind(kind), config, run_dir, resume=args.resume)
        accuracy = trainer.state.last_metrics.get("accuracy")
        measured = f", {ACCURACY_ON[kind]} {accuracy:.3f}" if accuracy is not None else ""
        print(
            f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s{measured}; "
            f"run directory: {run_dir}"
        )
        if kind == "reader":
            _print_heldout(run_dir)
        return 0
    distributed.init(config.train.device)  # under torchrun: join the process group (DDP training)
    trainer = train_run(config, run_dir, resume=args.resume)
    if distributed.is_main():
        print(
            f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s "
            f"({distributed.world_size()} process(es)); run directory: {run_dir}"
        )
    return 0


def _print_heldout(run_dir: Path) -> None:
    from ddpmlab.runs.reader import read_heldout

    found = read_heldout(run_dir)
    if found is not None:
        print(
            f"held-out renders (seed {found['seed']}, strings not in training): {found['n']} read, "
            f"exact {found['exact']:.4f}, per character {found['chars']:.4f}"
        )


def _cmd_demo(args) -> int:
    from ddpmlab.runs.demo import run_demo

    result = run_demo(args.config, args.run, args.overrides)
    print(f"trained {result.steps} steps in {result.minutes:.1f} min: {result.run_dir}")
    if result.grid is None:
        print(
            f"demo finished: pictures in {result.run_dir / 'plots'}, "
            f"metrics in {result.run_dir / 'eval.json'}"
        )
    else:
        print(
            f"demo finished:\n  grid of samples: {result.grid}\n  64 images:       {result.archive}\n"
            f"  denoising:       {result.animation}"
        )
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab sample | export
# --------------------------------------------------------------------------------------------------


def _cmd_sample(args) -> int:
    from ddpmlab.export import check_destination, check_sample_output, save_samples

    gif = Path(args.out).suffix.lower() == ".gif"
    if not gif and (args.frames is not None or args.fps is not None):
        raise UsageError("--frames and --fps apply to a .gif animation (--out x.gif)")
    check_destination(args.out, folder=Path(args.out).suffix == "")
    run, plan, sampler, classifier, scale = sampling_request(args, animation=gif)
    check_sample_output(args.out, run.info.kind == "image")
    if gif:
        return _write_animation(args, run, plan, sampler, classifier, scale)
    samples, labels = draw(args, run, plan, sampler, classifier, scale)
    if samples is None:  # torchrun: rank 0 writes
        return 0
    save_samples(args.out, samples, labels, run.info.kind == "image", plan.rows)
    print(f"wrote {plan.num} samples ({sampler!r}) to {args.out}")
    return 0


def _write_animation(args, run, plan, sampler, classifier, scale) -> int:
    """``sample --out x.gif``: a denoising animation, x_t beside the predicted x0 at ``--frames`` steps."""
    from ddpmlab import distributed
    from ddpmlab.export import save_denoising_gif
    from ddpmlab.runs import sample_trajectory

    frames = DEFAULT_FRAMES if args.frames is None else args.frames
    fps = DEFAULT_FPS if args.fps is None else args.fps
    if frames < 2:
        raise UsageError(f"--frames must be at least 2, got {frames}")
    if not 0 < fps <= MAX_FPS:
        raise UsageError(f"--fps must be 1 to {MAX_FPS} (viewers slow faster GIFs down), got {fps}")
    if args.batch_size is not None:
        raise UsageError("--batch-size does not apply to a .gif: its samples are drawn as one batch")
    if plan.num > MAX_ANIMATED:
        raise UsageError(f"a .gif animation shows at most {MAX_ANIMATED} samples, got --num {plan.num}")
    if distributed.world_size() > 1:
        raise UsageError("a .gif animation is drawn by one process: run it without torchrun")
    trajectory = sample_trajectory(
        run,
        plan.num,
        sampler,
        frames,
        args.guidance,
        plan.labels,
        args.seed,
        classifier,
        scale,
        progress=True,
    )
    save_denoising_gif(trajectory, args.out, plan.rows, fps)
    frames = len(trajectory.steps)
    print(f"wrote a denoising animation of {plan.num} samples, {frames} frames ({sampler!r}) to {args.out}")
    return 0


def _cmd_export(args) -> int:
    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import check_destination, save_zip

    if args.diffusers:
        return _cmd_export_diffusers(args)
    if not args.zip.lower().endswith(".zip"):
        raise UsageError(f"--zip must name a .zip file, got {args.zip}")
    check_destination(args.zip, option="--zip")
    run, plan, sampler, classifier, scale = sampling_request(args, default_num=64)
    if run.info.kind != "image":
        raise UsageError(f"{args.run} is a {run.info.kind} run; export writes images")
    samples, labels = draw(args, run, plan, sampler, classifier, scale)
    if samples is None:  # torchrun: rank 0 writes
        return 0
    path = save_zip(to_uint8(samples), args.zip, args.format, labels)
    print(f"wrote {plan.num} {args.format.upper()} images to {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab export --diffusers | import-diffusers
# --------------------------------------------------------------------------------------------------


def _cmd_export_diffusers(args) -> int:
    from ddpmlab import distributed
    from ddpmlab.runs.diffusers import export_diffusers

    if distributed.is_main():  # one folder, written once (under torchrun the other ranks have nothing to do)
        path = export_diffusers(args.run, args.diffusers)
        print(f"wrote {args.run} as a diffusers pipeline to {path} (DDPMPipeline.from_pretrained loads it)")
    return 0


def _cmd_import_diffusers(args) -> int:
    from ddpmlab.runs.diffusers import import_diffusers

    run, *overrides = args.run
    config = import_diffusers(args.folder, run, args.overrides + overrides)
    model, data = config.model.options, config.data
    fine_tuning = f"{data.name} {data.root or ''}".strip() if data.root or data.name != "folder" else "none"
    print(
        f"imported {args.folder} as the run {run}: UNet of {model['base_channels']} x "
        f"{model['channel_mults']} channels, {config.diffusion.timesteps} steps, prediction "
        f"{config.diffusion.prediction}; data for fine-tuning: {fine_tuning}"
    )
    return 0


COMMANDS = {
    "schedules": _cmd_schedules,
    "forward": _cmd_forward,
    "train": _cmd_train,
    "train-classifier": lambda args: _cmd_train(args, "classifier"),
    "train-judge": lambda args: _cmd_train(args, "judge"),
    "train-reader": lambda args: _cmd_train(args, "reader"),
    "demo": _cmd_demo,
    "sample": _cmd_sample,
    "export": _cmd_export,
    "evaluate": evaluate,
    "sweep": sweep,
    "compare": compare,
    "import-diffusers": _cmd_import_diffusers,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``ddpmlab`` with ``argv`` (default: the command line); returns the exit status."""
    from ddpmlab.cli_parser import ParserExit, build_parser

    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except ParserExit as done:  # --help (0), or arguments refused in one line (2)
        return done.status
    handler = COMMANDS.get(getattr(args, "command", None))
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    from ddpmlab import distributed

    try:
        launched = distributed.launch_env()
        if launched is not None and launched.world_size > 1 and args.command not in DISTRIBUTED_COMMANDS:
            raise UsageError(
                f"{args.command} runs in one process; under torchrun use {', '.join(DISTRIBUTED_COMMANDS)}"
            )
        with warnings.catch_warnings(record=True) as caught:  # the filters in force still apply
            code = handler(args)
        for warning in caught:  # shown after a command that worked; an error stays one line
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        # every rank finishes its last collective before any rank tears its connections down (a
        # peer leaving mid-transfer can abort gloo's worker threads at exit)
        distributed.barrier()
        return code
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        from ddpmlab.plain import one_line

        message = one_line(error)
        if isinstance(error, UnpicklingError):  # torch's own text would suggest loading it anyway
            message = "refused a file that holds pickled code (read with torch.load(weights_only=True))"
        print(f"ddpmlab: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        distributed.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
