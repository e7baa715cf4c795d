"""What a learner looks at after training on toy data: samples against the truth, metrics, pictures.

``write_toy_report(run)`` samples the run's EMA model, measures the distance to the true distribution
(with its noise floor, the distance a perfect sampler would reach with as many points), appends the
numbers to ``metrics.jsonl`` and ``eval.json``, and draws into ``plots/``:

- 1-D: ``density.png`` (histogram of samples, true density), ``forward.png`` (x_t at several t with the
  exact marginal q(x_t)), ``trajectories.png`` (reverse paths of a few hundred particles), ``loss.png``;
- 2-D: ``samples.png`` (model against exact data), ``forward.png`` and ``reverse.png`` (snapshots),
  ``reverse.gif`` (the reverse process as an animation), ``loss.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ddpmlab import plots
from ddpmlab.runs.conditions import condition_labels
from ddpmlab.runs.guided import classifier_free
from ddpmlab.runs.rundir import Run, append_metrics, read_metrics
from ddpmlab.runs.sampling import make_run_sampler, sample_run

__all__ = ["write_toy_report", "evaluate_toy_run"]

FORWARD_FRACTIONS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


def _mixture(dataset: Any):
    """The GaussianMixture behind a dataset, if it is one (exact noised marginals then exist)."""
    from ddpmlab.data.toy import GaussianMixture

    if isinstance(dataset, GaussianMixture):
        return dataset
    mixture = getattr(dataset, "mixture", None)
    return mixture if isinstance(mixture, GaussianMixture) else None


def _density(dataset: Any):
    if getattr(dataset, "has_density", False) or _mixture(dataset) is not None:
        return lambda x: dataset.log_prob(x).exp()
    return None


def evaluate_toy_run(run: Run, num: int | None = None, seed: int = 0) -> tuple[dict[str, Any], torch.Tensor]:
    """Sample ``num`` points with the run's default sampler and measure them; returns (record, samples)."""
    from ddpmlab.metrics import toy_metrics

    num = num or run.config.sample.num
    sampler = make_run_sampler(run)
    started = time.perf_counter()
    samples, _ = sample_run(run, num, sampler, seed=seed)
    seconds = time.perf_counter() - started
    metrics = toy_metrics(samples, run.info.dataset, torch.Generator().manual_seed(seed + 12345))
    record = {"eval": True, "step": run.step, "num": num, "sampler": repr(sampler), "sample_seconds": seconds}
    record.update({key: float(value) for key, value in metrics.items()})
    return record, samples


def write_toy_report(run: Run, num: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Evaluate a toy run and draw its pictures into ``run_dir/plots``; returns the metrics record."""
    record, samples = evaluate_toy_run(run, num, seed)
    append_metrics(run.run_dir, record)
    (run.run_dir / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    plot_dir = run.run_dir / "plots"
    history = read_metrics(run.run_dir)
    if any("loss" in r for r in history):
        plots.plot_loss_curve(history, plot_dir / "loss.png")
    if run.info.shape == (1,):
        _plots_1d(run, samples, plot_dir)
    else:
        _plots_2d(run, samples, plot_dir)
    return record


def _forward_timesteps(T: int) -> list[int]:
    return sorted({min(T - 1, round(f * (T - 1))) for f in FORWARD_FRACTIONS})


def _noised_exact(run: Run, n: int, seed: int) -> list[tuple[int, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x0 = run.info.dataset.sample(n, generator)
    result = []
    for t in _forward_timesteps(run.diffusion.num_timesteps):
        noise = torch.randn(x0.shape, generator=generator)
        result.append((t, run.diffusion.q_sample(x0, torch.full((n,), t), noise)))
    return result


def _plots_1d(run: Run, samples: torch.Tensor, plot_dir: Path) -> None:
    dataset = run.info.dataset
    reference = dataset.sample(len(samples), torch.Generator().manual_seed(7))
    plots.plot_density_1d(
        samples,
        _density(dataset),
        plot_dir / "density.png",
        title=f"{run.config.name}: {len(samples)} samples against the true density",
        reference=reference,
    )
    mixture = _mixture(dataset)
    panels = []
    for t, x_t in _noised_exact(run, 20000, seed=3):
        density = None
        if mixture is not None:
            noised = mixture.noised(float(run.diffusion.schedule.alphas_cumprod[t]))
            density = lambda x, m=noised: m.log_prob(x).exp()  # noqa: E731
        panels.append((t, x_t, density))
    plots.plot_forward_marginals_1d(panels, plot_dir / "forward.png")
    sampler = make_run_sampler(run)
    model, cond = _model_and_condition(run, 300)
    timesteps, states = sampler.trajectory(
        model, (300, 1), cond, torch.Generator().manual_seed(1), device=run.device
    )
    plots.plot_trajectories_1d(timesteps, states.cpu(), plot_dir / "trajectories.png", _density(dataset))


def _model_and_condition(run: Run, n: int):
    """The model to draw trajectories with (guided if conditional) and its conditions."""
    if not run.conditional:
        return run.model, None
    labels = condition_labels(run, n).to(run.device)
    return classifier_free(run.model, run.config.sample.guidance), labels


def _plots_2d(run: Run, samples: torch.Tensor, plot_dir: Path) -> None:
    dataset = run.info.dataset
    reference = dataset.sample(len(samples), torch.Generator().manual_seed(7))
    plots.plot_samples_2d(
        samples, reference, plot_dir / "samples.png", title=f"{run.config.name}: model samples"
    )
    forward = [(f"t = {t}", x) for t, x in _noised_exact(run, 3000, seed=3)]
    # x_T ~ N(0, I) reaches about 3.5; the data may reach further.
    limit = max(3.5, 1.2 * float(reference.abs().quantile(0.999)))
    plots.plot_snapshots_2d(forward, plot_dir / "forward.png", "forward process q(x_t)", limit=limit)
    sampler = make_run_sampler(run)
    model, cond = _model_and_condition(run, 2000)
    every = max(1, sampler.num_steps // 40)
    timesteps, states = sampler.trajectory(
        model, (2000, 2), cond, torch.Generator().manual_seed(1), device=run.device, every=every
    )
    states = states.cpu()
    # Structure appears late in the reverse process: show t spaced towards the end.
    T = run.diffusion.num_timesteps
    targets = [T - 1, round(0.4 * T), round(0.2 * T), round(0.1 * T), round(0.05 * T), -1]
    picks = sorted({min(range(len(timesteps)), key=lambda i, x=x: abs(timesteps[i] - x)) for x in targets})
    reverse = [(f"t = {timesteps[i]}" if timesteps[i] >= 0 else "x_0", states[i]) for i in picks]
    plots.plot_snapshots_2d(reverse, plot_dir / "reverse.png", "reverse process", limit=limit)
    frames = [(f"t = {t}" if t >= 0 else "x_0", s) for t, s in zip(timesteps, states)]
    frames += [frames[-1]] * 8  # rest on the final frame
    plots.animate_2d(frames, plot_dir / "reverse.gif", limit=limit)
