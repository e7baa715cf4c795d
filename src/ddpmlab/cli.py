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
# What torchrun may launch with several processes (see ddpmlab.distributed); the rest runs in one.
DISTRIBUTED_COMMANDS = ("train", "sample", "export")
TEXT_PER_ROW = 8  # `sample --text a,b` without --num: one grid row of this many samples per string
MAX_ANIMATED = 256  # samples in a .gif: drawn in one batch, and more would not be seen anyway
MAX_FPS = 50  # a GIF frame lasts whole 1/100 s; browsers show frames shorter than 2/100 s for 1/10 s


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
# ddpmlab forward
# --------------------------------------------------------------------------------------------------

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _add_forward(subparsers) -> None:
    p = subparsers.add_parser(
        "forward",
        help="picture the forward (noising) process on real images under several schedules",
        description="Noise the same few images with q(x_t | x_0) at evenly spaced t from 0 to T-1, one "
        "block of rows per schedule, all schedules with the same noise (so the blocks differ only by the "
        "schedule); columns are labelled with t and alpha_bar_t.",
    )
    p.add_argument("--data", default="mnist5k", help="an image dataset name (default mnist5k)")
    p.add_argument("--root", help="dataset folder (torchvision datasets) or the image folder (folder)")
    p.add_argument("--image-size", type=int, help="resize and centre-crop the images to this size")
    p.add_argument(
        "--schedules",
        default="linear,cosine,quadratic,sigmoid",
        help="comma-separated names or package.module:function (alpha_bar(tau) on [0, 1])",
    )
    p.add_argument("--timesteps", type=int, default=1000, help="T (default 1000)")
    p.add_argument("--steps", type=int, default=10, help="number of t values, evenly spaced (default 10)")
    p.add_argument("--num", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--seed", type=int, default=0, help="chooses the images and the noise (default 0)")
    p.add_argument("--out", default="forward.png", help="the picture to write (default forward.png)")
    p.set_defaults(handler=_cmd_forward)


def _cmd_forward(args) -> int:
    import torch

    from ddpmlab.data.images import build_image_dataset
    from ddpmlab.plots import forward_strips, forward_timesteps, plot_forward_images
    from ddpmlab.schedules import make_schedule

    names = [name.strip() for name in args.schedules.split(",") if name.strip()]
    if not names:
        raise UsageError("--schedules is empty")
    if Path(args.out).suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out must end in one of {', '.join(FIGURE_SUFFIXES)}, got {args.out}")
    if args.num <= 0:
        raise UsageError(f"--num must be positive, got {args.num}")
    if args.timesteps <= 0:
        raise UsageError(f"--timesteps must be positive, got {args.timesteps}")
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
    print(f"images {indices} of {args.data}, t = {t_values}")
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
    # --run-dir: the spelling to use after torchrun, whose own parser takes --run for its --run-path.
    p.add_argument("--run", "--run-dir", dest="run", help="run directory (default runs/<config name>)")
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
    from ddpmlab import distributed

    distributed.init(config.train.device)  # under torchrun: join the process group (DDP training)
    trainer = train_run(config, run_dir, resume=args.resume)
    if distributed.is_main():
        print(
            f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s "
            f"({distributed.world_size()} process(es)); run directory: {run_dir}"
        )
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab train-classifier
# --------------------------------------------------------------------------------------------------


def _add_train_classifier(subparsers) -> None:
    p = subparsers.add_parser(
        "train-classifier",
        help="train a noise-aware classifier for classifier guidance",
        description="Train a noise-aware classifier p(y | x_t, t) on noised images (t uniform over the "
        "config's diffusion timesteps) for `ddpmlab sample --classifier`; its diffusion section must match "
        "the runs it will guide. Dotted overrides change any config key, e.g. train.steps=500",
    )
    p.add_argument("--config", required=True, help="YAML config file (e.g. configs/mnist5k_classifier.yaml)")
    p.add_argument("--run", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and model size, then exit"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(handler=_cmd_train_classifier)


def _cmd_train_classifier(args) -> int:
    from ddpmlab.classifier_runs import build_classifier_for, train_classifier_run
    from ddpmlab.config import load_config
    from ddpmlab.runs import build_data

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.run) if args.run else Path("runs") / config.name
    if args.dry_run:
        _, info = build_data(config)
        model = build_classifier_for(config, info)
        count = sum(p.numel() for p in model.parameters())
        print(config.to_yaml().rstrip())
        print(f"# run directory: {run_dir}")
        print(f"# model: {type(model).__name__} with {count:,} parameters ({count / 1e6:.2f}M)")
        return 0
    trainer = train_classifier_run(config, run_dir, resume=args.resume)
    accuracy = trainer.state.last_metrics.get("accuracy")
    noised = f", accuracy on noised batches {accuracy:.3f}" if accuracy is not None else ""
    print(
        f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds:.1f} s{noised}; "
        f"run directory: {run_dir}"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab sample
# --------------------------------------------------------------------------------------------------


def _add_sampling_options(p, defaults_note: str = "default: the run's sample section") -> None:
    # --run-dir / --num-samples: the spellings to use after torchrun, whose own parser takes --run and
    # --num for abbreviations of its --run-path and --numa-binding.
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    p.add_argument(
        "--num", "--num-samples", dest="num", type=int, help=f"number of samples ({defaults_note})"
    )
    p.add_argument("--sampler", choices=["ddpm", "ddim"], help=defaults_note)
    p.add_argument("--steps", type=int, help="reverse steps (respaced); default: all T for ddpm, 50 for ddim")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (conditional runs)")
    p.add_argument(
        "--labels",
        help="conditional runs and --classifier: 'all' (classes in turn) or class indices, e.g. 0,3,7",
    )
    p.add_argument(
        "--classifier",
        help="classifier guidance: a run of `ddpmlab train-classifier` (same diffusion as --run; "
        "needs --labels)",
    )
    p.add_argument(
        "--classifier-scale", type=float, help="classifier guidance scale s (default 1; needs --classifier)"
    )
    p.add_argument(
        "--text",
        help="text-conditional runs (captchas): comma-separated strings, e.g. fngff,gnfcd, each in turn in "
        f"blocks (one grid row each; default --num: {TEXT_PER_ROW} per string); default: random strings",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")


def _add_sample(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample from a trained run",
        description="Sample from a trained run (its EMA weights). --out decides the output: x.npz (arrays "
        "'images' uint8 [N, H, W, C] or 'samples' for toy data, and 'labels'), grid.png / grid.jpg (one "
        "picture; one row per class with --labels all, one row per string with --text), x.gif (a denoising "
        "animation: the noisy images beside the predicted clean images at --frames steps), or a folder (one "
        "file per image).",
    )
    _add_sampling_options(p)
    p.add_argument("--out", required=True, help="samples.npz, grid.png, denoising.gif or a folder")
    p.add_argument(
        "--frames",
        type=int,
        default=40,
        help="frames of a .gif animation, evenly spaced steps (default 40); its samples are one batch "
        "(default --num: 16, or 2 per class with --labels all)",
    )
    p.add_argument(
        "--fps", type=int, default=10, help="frames per second of a .gif animation, 1-50 (default 10)"
    )
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


def _parse_texts(text: str | None, run) -> list[str] | None:
    """``--text`` as a list of strings, checked against a text run's charset and length (None without it)."""
    from ddpmlab.data.captcha import check_texts

    if text is None:
        return None
    encoder = run.text_encoder
    if encoder is None:
        raise UsageError("--text: this run is not conditioned on text (class-conditional runs take --labels)")
    texts = [part.strip() for part in text.split(",")]
    if not any(texts):
        raise UsageError("--text is empty; give comma-separated strings, e.g. --text fngff,gnfcd")
    try:
        return check_texts(texts, encoder.charset, encoder.length)
    except ValueError as error:
        raise UsageError(f"--text: {error}") from None


def _text_rows(num: int, count: int) -> tuple[int, int]:
    """(samples per string, grid rows) for ``num`` samples of ``count`` strings taken in blocks."""
    per_text = -(-num // count)
    return per_text, -(-num // per_text)


def _draw(args, run, num: int):
    """Sample ``num`` items from ``run`` with the command-line options; returns (samples, labels)."""
    from ddpmlab.runs import sample_run

    labels, sampler, classifier, classifier_scale = _sampling_request(args, run, num)
    samples, used = sample_run(
        run, num, sampler, args.guidance, labels, args.seed, args.batch_size, progress=True, distribute=True,
        classifier=classifier, classifier_scale=classifier_scale,
    )
    return samples, used, sampler  # samples is None on ranks other than 0 under torchrun


def _sampling_request(args, run, num: int):
    """The command line's (labels, sampler, classifier or None, classifier scale) for ``num`` samples."""
    from ddpmlab.runs import class_grid_labels, make_run_sampler, text_grid_labels

    texts = _parse_texts(args.text, run)
    classifier = _open_classifier(args, run)  # None without --classifier
    if args.labels and not run.conditional and classifier is None:
        raise UsageError("--labels: this run is unconditional")
    if args.labels and run.text_encoder is not None:
        raise UsageError("--labels: this run is conditioned on text; give strings with --text")
    classes = classifier.num_classes if classifier is not None else run.info.num_classes
    labelled = run.conditional or classifier is not None
    labels = _parse_labels(args.labels, classes) if labelled else None
    if labelled and labels is None and args.labels == "all" and num % classes == 0:
        labels = class_grid_labels(classes, num // classes)
    if texts is not None:  # each string in turn, in blocks: one grid row per string
        labels = text_grid_labels(texts, _text_rows(num, len(texts))[0])[:num]
    sampler = make_run_sampler(run, args.sampler, args.steps, args.eta)
    classifier_scale = 1.0 if args.classifier_scale is None else args.classifier_scale
    return labels, sampler, classifier, classifier_scale


def _open_classifier(args, run):
    """The ``--classifier`` run, checked against ``run`` before any sampling (None without one)."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise UsageError("--classifier-scale needs --classifier (a run of `ddpmlab train-classifier`)")
        return None
    if not args.labels:
        raise UsageError("--classifier needs --labels: 'all' (classes in turn) or class indices, e.g. 0,3,7")
    from ddpmlab.classifier_runs import check_classifier, open_classifier

    classifier = open_classifier(args.classifier, run.device)
    check_classifier(run, classifier)
    return classifier


def _cmd_sample(args) -> int:
    from ddpmlab.export import save_grid, save_images, save_npz
    from ddpmlab.runs import open_run

    out = Path(args.out)
    _join_process_group(args.device)
    run = open_run(args.run, args.device)
    texts = _parse_texts(args.text, run)
    suffix = out.suffix.lower()
    num = args.num or _default_num(args, run, texts, animation=suffix == ".gif")
    if num <= 0:
        raise UsageError(f"--num must be positive, got {num}")
    if run.info.kind != "image" and suffix != ".npz":
        raise UsageError(f"--out for a {run.info.kind} run must be a .npz file, got {out}")
    if run.info.kind == "image" and suffix not in ("", ".npz", ".png", ".jpg", ".jpeg", ".gif"):
        raise UsageError(
            f"--out must be a .npz file, a .png/.jpg grid, a .gif animation or a folder, got {out}"
        )
    if suffix == ".gif":
        return _write_animation(args, run, num, texts, out)
    samples, labels, sampler = _draw(args, run, num)
    if samples is None:  # torchrun: rank 0 writes
        return 0
    if run.info.kind != "image":
        save_npz(out, samples=samples.numpy(), labels=labels)
    else:
        from ddpmlab.data.images import to_uint8

        images = to_uint8(samples)
        if suffix == ".npz":
            save_npz(out, images=images, labels=labels)
        elif suffix in (".png", ".jpg", ".jpeg"):
            save_grid(images, out, rows=_grid_rows(args, run, num, texts), scale=_grid_scale(images))
        else:
            save_images(images, out, "png", labels)
    print(f"wrote {num} samples ({sampler!r}) to {out}")
    return 0


def _default_num(args, run, texts, animation: bool) -> int:
    """Samples to draw without --num: a row per string with --text; for a .gif, two per class with
    --labels all or else 16; otherwise the run's ``sample.num``."""
    if texts:
        return TEXT_PER_ROW * len(texts)
    if not animation:
        return run.config.sample.num
    classes = _class_rows(args, run)
    return 2 * classes if classes else 16


def _grid_rows(args, run, num: int, texts) -> int | None:
    """Grid rows: one per class with --labels all, one per string with --text, else about square."""
    if texts:
        return _text_rows(num, len(texts))[1]
    return _class_rows(args, run)


def _class_rows(args, run) -> int | None:
    """The number of classes when --labels all asks for one grid row per class (None otherwise, and for
    text runs and unlabelled data, whose class count is 0)."""
    labelled = run.conditional or args.classifier is not None
    return (run.info.num_classes or None) if labelled and args.labels == "all" else None


def _grid_scale(images) -> int:
    """Enlarge small images (MNIST, CIFAR) twice in pictures, so that they can be seen."""
    return 2 if images.shape[-3] <= 32 else 1


def _write_animation(args, run, num: int, texts, out: Path) -> int:
    """``sample --out x.gif``: a denoising animation, x_t beside the predicted x0 at ``--frames`` steps."""
    from ddpmlab import distributed
    from ddpmlab.runs import sample_trajectory

    if args.frames < 2:
        raise UsageError(f"--frames must be at least 2, got {args.frames}")
    if not 0 < args.fps <= MAX_FPS:
        raise UsageError(f"--fps must be 1 to {MAX_FPS} (viewers slow faster GIFs down), got {args.fps}")
    if args.batch_size is not None:
        raise UsageError("--batch-size does not apply to a .gif: its samples are drawn as one batch")
    if num > MAX_ANIMATED:
        raise UsageError(f"a .gif animation shows at most {MAX_ANIMATED} samples, got --num {num}")
    if distributed.world_size() > 1:
        raise UsageError("a .gif animation is drawn by one process: run it without torchrun")
    labels, sampler, classifier, classifier_scale = _sampling_request(args, run, num)
    trajectory = sample_trajectory(
        run, num, sampler, args.frames, args.guidance, labels, args.seed, classifier, classifier_scale,
        progress=True,
    )
    _save_denoising_gif(trajectory, out, _grid_rows(args, run, num, texts), args.fps)
    frames = len(trajectory.steps)
    print(f"wrote a denoising animation of {num} samples, {frames} frames ({sampler!r}) to {out}")
    return 0


def _save_denoising_gif(trajectory, path: Path, rows: int | None, fps: int = 10) -> Path:
    """A GIF of a :class:`~ddpmlab.runs.Trajectory`: per snapshot, x_t beside the predicted x0 under the
    step number and t (the last frame, the samples, held)."""
    from ddpmlab.export import animation_frame, save_animation

    scale = _grid_scale(trajectory.x_t)
    frames = []
    for index, (t, taken) in enumerate(zip(trajectory.timesteps, trajectory.steps)):
        progress = f"step {taken}/{trajectory.num_steps}"
        caption = f"{progress}: the sample" if t < 0 else f"{progress}, t = {t}"
        frames.append(animation_frame(trajectory.x_t[index], trajectory.x0[index], caption, rows, scale))
    return save_animation(frames, path, fps=fps)


# --------------------------------------------------------------------------------------------------
# ddpmlab export
# --------------------------------------------------------------------------------------------------


def _add_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write N generated images as separate files in a zip (course submissions)",
        description="Sample N images from a run and write them as separate PNG/JPG files inside a zip "
        "archive named as you ask, e.g. --zip HW2_123456789.zip.",
    )
    _add_sampling_options(p, defaults_note="default 64")
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="image file format (default png)")
    p.add_argument("--zip", required=True, help="the archive to write, e.g. HW2_123456789.zip")
    p.set_defaults(handler=_cmd_export)


def _join_process_group(device: str) -> None:
    """Under torchrun, sample with every process: each draws its share of the seed blocks."""
    from ddpmlab import distributed

    distributed.init(device)


def _cmd_export(args) -> int:
    from ddpmlab.data.images import to_uint8
    from ddpmlab.export import save_zip
    from ddpmlab.runs import open_run

    if not args.zip.lower().endswith(".zip"):
        raise UsageError(f"--zip must name a .zip file, got {args.zip}")
    _join_process_group(args.device)
    run = open_run(args.run, args.device)
    if run.info.kind != "image":
        raise UsageError(f"{args.run} is a {run.info.kind} run; export writes images")
    num = args.num or 64
    if num <= 0:
        raise UsageError(f"--num must be positive, got {num}")
    samples, labels, _ = _draw(args, run, num)
    if samples is None:  # torchrun: rank 0 writes
        return 0
    path = save_zip(to_uint8(samples), args.zip, args.format, labels)
    print(f"wrote {num} {args.format.upper()} images to {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# ddpmlab demo
# --------------------------------------------------------------------------------------------------


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job: train a shipped config and write what it makes",
        description="Train a shipped config (default: class-conditional MNIST digits, about 10 minutes on a "
        "laptop CPU), then write a 10x10 grid (one row per digit, classifier-free guidance) and a zip of 64 "
        "images; for toy configs, the plots. Overrides change the config, e.g. train.steps=100.",
    )
    p.add_argument(
        "--config", default="mnist5k", help="a shipped config name (default mnist5k) or a YAML path"
    )
    p.add_argument(
        "--run", help="run directory (default runs/demo-<config>; replaced if it holds an earlier demo)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(handler=_cmd_demo)


def _shipped_config(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return Path(__file__).resolve().parent / "configs" / f"{name}.yaml"


def _fresh_demo_dir(run_dir: Path) -> None:
    """Replace an earlier demo run, but never a directory the demo did not make."""
    import shutil

    marker = run_dir / ".ddpmlab-demo"
    if run_dir.exists():
        if not marker.exists():
            raise UsageError(f"{run_dir} exists and is not a demo run; choose another --run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    marker.touch()


def _cmd_demo(args) -> int:
    from ddpmlab.config import load_config
    from ddpmlab.runs import train_run

    config = load_config(_shipped_config(args.config), args.overrides)
    run_dir = Path(args.run) if args.run else Path("runs") / f"demo-{config.name}"
    _fresh_demo_dir(run_dir)
    trainer = train_run(config, run_dir)
    print(f"trained {trainer.state.step} steps in {trainer.state.elapsed_seconds / 60:.1f} min: {run_dir}")
    if (run_dir / "plots").exists() and not (run_dir / "samples").exists():
        print(f"demo finished: pictures in {run_dir / 'plots'}, metrics in {run_dir / 'eval.json'}")
        return 0
    grid, archive, animation = _demo_outputs(run_dir)
    print(
        f"demo finished:\n  grid of samples: {grid}\n  64 images:       {archive}\n"
        f"  denoising:       {animation}"
    )
    return 0


def _demo_outputs(run_dir: Path) -> tuple[Path, Path, Path]:
    """A 10x10 grid (one row per class, DDIM 50 steps, the run's guidance), a zip of 64 images and a
    denoising animation (two rows of samples, x_t beside the predicted x0)."""
    from ddpmlab.data.images import to_uint8
    from ddpmlab.export import save_grid, save_zip
    from ddpmlab.runs import class_grid_labels, make_run_sampler, open_run, sample_run, sample_trajectory

    run = open_run(run_dir)
    sampler = make_run_sampler(run, "ddim", 50)
    if run.text_encoder is not None:  # captchas: one row per random string
        from ddpmlab.data.captcha import random_texts
        from ddpmlab.runs import text_grid_labels

        encoder = run.text_encoder
        texts = random_texts(10, encoder.charset, run.info.text_length or encoder.length, seed=0)
        labels, rows = text_grid_labels(texts, 10), 10
        animated = text_grid_labels(texts[:2], 4)
    elif run.conditional:
        classes = min(run.info.num_classes, 10)
        labels, rows = class_grid_labels(classes, 10), classes
        animated = [index % classes for index in range(2 * classes)]  # the classes in order, twice
    else:
        labels, rows, animated = None, 10, None
    samples, _ = sample_run(run, 100, sampler, labels=labels, seed=0, progress=True)
    grid = save_grid(to_uint8(samples), run_dir / "demo_grid.png", rows=rows, scale=2)
    images, used = sample_run(run, 64, sampler, seed=1, progress=True)
    archive = save_zip(to_uint8(images), run_dir / "demo_samples.zip", "png", used)
    num = 16 if animated is None else len(animated)
    trajectory = sample_trajectory(run, num, sampler, frames=26, labels=animated, seed=2, progress=True)
    animation = _save_denoising_gif(trajectory, run_dir / "demo_denoising.gif", rows=2)
    return grid, archive, animation


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpmlab", description="Denoising diffusion probabilistic models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_schedules(subparsers)
    _add_forward(subparsers)
    _add_train(subparsers)
    _add_train_classifier(subparsers)
    _add_sample(subparsers)
    _add_export(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from ddpmlab import distributed

    try:
        launched = distributed.launch_env()
        if launched is not None and launched.world_size > 1 and args.command not in DISTRIBUTED_COMMANDS:
            raise UsageError(
                f"{args.command} runs in one process; under torchrun use {', '.join(DISTRIBUTED_COMMANDS)}"
            )
        code = args.handler(args)
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
