"""The ``ddpmlab`` command: it parses arguments and calls the library, nothing else.

Every error a user can cause (bad option, missing file, unknown schedule, a run that would be
overwritten) is printed as one line ``ddpmlab: error: ...`` with exit status 2, never a traceback.
Under torchrun only ``train``, ``sample`` and ``export`` run (``--run-dir`` / ``--num-samples`` spell
``--run`` / ``--num`` where torchrun's own parser would take them).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2
DISTRIBUTED_COMMANDS = ("train", "sample", "export")  # what torchrun may launch with several processes
MAX_ANIMATED = 256  # samples in a .gif: drawn in one batch, and more would not be seen anyway
MAX_FPS = 50  # a GIF frame lasts whole 1/100 s; browsers show frames shorter than 2/100 s for 1/10 s
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


class UsageError(Exception):
    """An error caused by the user's input: printed on one line, exit status 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from ddpmlab.config import ConfigError
    from ddpmlab.runs import RunError
    from ddpmlab.schedules import ScheduleError
    from ddpmlab.training.checkpoint import CheckpointError

    return (UsageError, ConfigError, RunError, ScheduleError, CheckpointError, ValueError, FileNotFoundError)


def _names(text: str, option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"{option} is empty")
    return names


# --------------------------------------------------------------------------------------------------
# ddpmlab schedules | forward
# --------------------------------------------------------------------------------------------------


def _cmd_schedules(args) -> int:
    from ddpmlab.plots import plot_schedules
    from ddpmlab.schedules import make_schedule, structure_timesteps

    schedules = [make_schedule(name, args.timesteps) for name in _names(args.schedules, "--schedules")]
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

    names = _names(args.schedules, "--schedules")
    if Path(args.out).suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out must end in one of {', '.join(FIGURE_SUFFIXES)}, got {args.out}")
    if args.num <= 0 or args.timesteps <= 0:
        raise UsageError(f"--num and --timesteps must be positive, got {args.num} and {args.timesteps}")
    if not 1 <= args.steps <= args.timesteps:
        raise UsageError(f"--steps must be from 1 to --timesteps ({args.timesteps}), got {args.steps}")
    schedules = [make_schedule(name, args.timesteps) for name in names]
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
# ddpmlab train | train-classifier | demo
# --------------------------------------------------------------------------------------------------


def _dry_run(config, run_dir: Path, classifier: bool) -> int:
    from ddpmlab.runs import dry_run

    model, _ = dry_run(config, classifier)
    count = sum(p.numel() for p in model.parameters())
    print(config.to_yaml().rstrip())
    print(f"# run directory: {run_dir}")
    print(f"# model: {type(model).__name__} with {count:,} parameters ({count / 1e6:.2f}M)")
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


def _cmd_train(args, classifier: bool = False) -> int:
    try:
        return _train(args, classifier)
    except OSError as error:  # disk full, a folder that cannot be written, ...: one line, exit 2
        raise UsageError(str(error) or type(error).__name__) from None


def _train(args, classifier: bool) -> int:
    from ddpmlab import distributed
    from ddpmlab.runs import train_classifier_run, train_run

    config, run_dir = _train_request(args)
    if args.dry_run:
        return _dry_run(config, run_dir, classifier)
    if classifier:
        trainer = train_classifier_run(config, run_dir, resume=args.resume)
        accuracy = trainer.state.last_metrics.get("accuracy")
        noised = f", accuracy on noised batches {accuracy:.3f}" if accuracy is not None else ""
        print(
            f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s{noised}; "
            f"run directory: {run_dir}"
        )
        return 0
    distributed.init(config.train.device)  # under torchrun: join the process group (DDP training)
    trainer = train_run(config, run_dir, resume=args.resume)
    if distributed.is_main():
        print(
            f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s "
            f"({distributed.world_size()} process(es)); run directory: {run_dir}"
        )
    return 0


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


def _open_classifier(args, run):
    """The ``--classifier`` run (None without one)."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise UsageError("--classifier-scale needs --classifier (a run of `ddpmlab train-classifier`)")
        return None
    if not args.labels:
        raise UsageError("--classifier needs --labels: 'all' (classes in turn) or class indices, e.g. 0,3,7")
    from ddpmlab.runs import check_classifier, open_classifier

    classifier = open_classifier(args.classifier, run.device)
    check_classifier(run, classifier)
    return classifier


def _request(args, default_num: int | None = None, animation: bool = False):
    """Open the run (joining torchrun's process group first) and read the request: (run, plan,
    sampler, classifier or None, classifier scale)."""
    from ddpmlab import distributed
    from ddpmlab.runs import make_run_sampler, open_run, plan_conditions

    distributed.init(args.device)  # under torchrun each process draws its share of the seed blocks
    run = open_run(args.run, args.device)
    classifier = _open_classifier(args, run)
    plan = plan_conditions(run, args.num or default_num, args.labels, args.text, classifier, animation)
    sampler = make_run_sampler(run, args.sampler, args.steps, args.eta)
    scale = 1.0 if args.classifier_scale is None else args.classifier_scale
    return run, plan, sampler, classifier, scale


def _draw(args, run, plan, sampler, classifier, scale):
    from ddpmlab.runs import sample_run

    return sample_run(
        run,
        plan.num,
        sampler,
        args.guidance,
        plan.labels,
        args.seed,
        args.batch_size,
        progress=True,
        distribute=True,
        classifier=classifier,
        classifier_scale=scale,
    )


def _cmd_sample(args) -> int:
    from ddpmlab.export import check_sample_output, save_samples

    gif = Path(args.out).suffix.lower() == ".gif"
    run, plan, sampler, classifier, scale = _request(args, animation=gif)
    check_sample_output(args.out, run.info.kind == "image")
    if gif:
        return _write_animation(args, run, plan, sampler, classifier, scale)
    samples, labels = _draw(args, run, plan, sampler, classifier, scale)
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

    if args.frames < 2:
        raise UsageError(f"--frames must be at least 2, got {args.frames}")
    if not 0 < args.fps <= MAX_FPS:
        raise UsageError(f"--fps must be 1 to {MAX_FPS} (viewers slow faster GIFs down), got {args.fps}")
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
        args.frames,
        args.guidance,
        plan.labels,
        args.seed,
        classifier,
        scale,
        progress=True,
    )
    save_denoising_gif(trajectory, args.out, plan.rows, args.fps)
    frames = len(trajectory.steps)
    print(f"wrote a denoising animation of {plan.num} samples, {frames} frames ({sampler!r}) to {args.out}")
    return 0


def _cmd_export(args) -> int:
    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import save_zip

    if not args.zip.lower().endswith(".zip"):
        raise UsageError(f"--zip must name a .zip file, got {args.zip}")
    run, plan, sampler, classifier, scale = _request(args, default_num=64)
    if run.info.kind != "image":
        raise UsageError(f"{args.run} is a {run.info.kind} run; export writes images")
    samples, labels = _draw(args, run, plan, sampler, classifier, scale)
    if samples is None:  # torchrun: rank 0 writes
        return 0
    path = save_zip(to_uint8(samples), args.zip, args.format, labels)
    print(f"wrote {plan.num} {args.format.upper()} images to {path}")
    return 0


COMMANDS = {
    "schedules": _cmd_schedules,
    "forward": _cmd_forward,
    "train": _cmd_train,
    "train-classifier": lambda args: _cmd_train(args, classifier=True),
    "demo": _cmd_demo,
    "sample": _cmd_sample,
    "export": _cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``ddpmlab`` with ``argv`` (default: the command line); returns the exit status."""
    from ddpmlab.cli_parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
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
        code = handler(args)
        # every rank finishes its last collective before any rank tears its connections down (a
        # peer leaving mid-transfer can abort gloo's worker threads at exit)
        distributed.barrier()
        return code
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ddpmlab: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        distributed.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
