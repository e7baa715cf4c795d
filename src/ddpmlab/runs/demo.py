"""``ddpmlab demo``: train a shipped config and write what it makes.

For image configs: a 10x10 grid (one row per class, or per random string for text runs), a zip of 64
images (the course-submission format) and a denoising animation; for toy configs, the toy report's
plots and metrics (written by training itself).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ddpmlab.config import load_config
from ddpmlab.runs.conditions import class_grid_labels, text_grid_labels
from ddpmlab.runs.rundir import Run, RunError, open_run
from ddpmlab.runs.sampling import make_run_sampler, sample_run, sample_trajectory
from ddpmlab.runs.training import train_run
from ddpmlab.sampling import Sampler

__all__ = ["DemoResult", "shipped_config", "fresh_demo_dir", "run_demo", "demo_outputs"]

DEMO_MARKER = ".ddpmlab-demo"
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEMO_DDIM_STEPS = 50  # the image demo's sampler where the config leaves the steps open (all T for ddpm)


@dataclass
class DemoResult:
    """What a demo made: the run directory, training steps and minutes, and its outputs (the image
    demo's grid, zip and animation; None for toy configs, whose pictures are in ``run_dir/plots``)."""

    run_dir: Path
    steps: int
    minutes: float
    grid: Path | None = None
    archive: Path | None = None
    animation: Path | None = None


def shipped_config(name: str) -> Path:
    """A shipped config by name (``mnist5k`` -> .../configs/mnist5k.yaml), or a YAML path as given."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return SHIPPED_CONFIGS / f"{name}.yaml"


def fresh_demo_dir(run_dir: Path) -> None:
    """Replace an earlier demo run, but never a directory the demo did not make (RunError)."""
    marker = run_dir / DEMO_MARKER
    if run_dir.exists():
        if not marker.exists():
            raise RunError(f"{run_dir} exists and is not a demo run; choose another --run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    marker.touch()


def run_demo(config_name: str = "mnist5k", run_dir: str | Path | None = None, overrides=None) -> DemoResult:
    """Train the shipped config ``config_name`` (with dotted ``overrides``) in ``run_dir`` (default
    ``runs/demo-<config>``, replaced if it holds an earlier demo), then write its outputs."""
    config = load_config(shipped_config(config_name), overrides or [])
    run_dir = Path(run_dir) if run_dir else Path("runs") / f"demo-{config.name}"
    fresh_demo_dir(run_dir)
    trainer = train_run(config, run_dir)
    result = DemoResult(run_dir, trainer.state.step, trainer.state.elapsed_seconds / 60)
    if (run_dir / "plots").exists() and not (run_dir / "samples").exists():
        return result  # a toy run: the report is written
    result.grid, result.archive, result.animation = demo_outputs(run_dir)
    return result


def demo_sampler(run: Run) -> Sampler:
    """The run's own sampler and steps (its ``sample`` section: DPM-Solver++(2M) 20 steps for mnist5k),
    at most T steps; DDIM 50 where the section gives no steps (its sampler's default would be all T)."""
    limit = run.diffusion.num_timesteps
    if run.config.sample.steps is None:
        return make_run_sampler(run, "ddim", min(DEMO_DDIM_STEPS, limit))
    return make_run_sampler(run, None, min(run.config.sample.steps, limit))


def demo_outputs(run_dir: Path) -> tuple[Path, Path, Path]:
    """A 10x10 grid (one row per class; :func:`demo_sampler`, the run's guidance), a zip of 64 images
    and a denoising animation (two rows of samples, x_t beside the predicted x0) of an image run."""
    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import save_denoising_gif, save_grid, save_zip

    run = open_run(run_dir)
    sampler = demo_sampler(run)
    if run.text_encoder is not None:  # captchas: one row per random string
        from ddpmlab.data.captcha import random_texts

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
    animation = save_denoising_gif(trajectory, run_dir / "demo_denoising.gif", rows=2)
    return grid, archive, animation
