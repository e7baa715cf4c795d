"""Pictures of diffusion: pure matplotlib functions on tensors and arrays that write a file.

Nothing here trains or samples; callers pass in what to draw. Every function returns the path written,
except :func:`show`, which displays a picture inline in a Jupyter notebook (the tutorial notebooks' one
way to show pictures: this module draws with the Agg backend, which has no window of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ddpmlab.schedules import NoiseSchedule  # noqa: E402

__all__ = [
    "plot_schedules",
    "plot_density_1d",
    "plot_forward_marginals_1d",
    "plot_trajectories_1d",
    "plot_samples_2d",
    "plot_snapshots_2d",
    "animate_2d",
    "plot_loss_curve",
    "plot_training_curves",
    "forward_timesteps",
    "forward_strips",
    "plot_forward_images",
    "figure_png",
    "show",
]


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_png(fig: plt.Figure, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box); the figure is closed."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def show(picture: plt.Figure | str | Path | bytes) -> None:
    """Display ``picture`` inline in Jupyter: a matplotlib figure (then closed), a PNG/JPG/GIF file
    such as those this module writes, or PNG bytes. Works whatever matplotlib's backend (ddpmlab draws
    with Agg). Needs IPython (the ``dev`` extra, or any Jupyter installation)."""
    try:
        from IPython.display import Image, display
    except ImportError:
        message = "show() displays pictures in Jupyter: it needs IPython (pip install ipykernel)"
        raise ImportError(message) from None
    if isinstance(picture, plt.Figure):
        picture = figure_png(picture)
    if isinstance(picture, bytes):
        display(Image(data=picture, format="png"))
    else:
        display(Image(filename=str(picture)))


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)


def plot_schedules(schedules: Sequence[NoiseSchedule], path: str | Path) -> Path:
    """beta_t, alpha_bar_t and log-SNR(t) of several schedules side by side, t on a shared axis."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for schedule in schedules:
        t = _numpy(schedule.timesteps)
        axes[0].plot(t, _numpy(schedule.betas), label=schedule.name)
        axes[1].plot(t, _numpy(schedule.alphas_cumprod), label=schedule.name)
        axes[2].plot(t, _numpy(schedule.log_snr), label=schedule.name)
    axes[0].set(title=r"$\beta_t$ (noise added at step t)", xlabel="t", yscale="log")
    axes[1].set(title=r"$\bar\alpha_t$ (signal variance left in $x_t$)", xlabel="t")
    for level in (0.5, 0.1, 0.01):
        axes[1].axhline(level, color="grey", lw=0.6, ls=":")
    axes[2].set(title=r"log SNR$(t) = \log \bar\alpha_t / (1 - \bar\alpha_t)$", xlabel="t")
    axes[2].axhline(0.0, color="grey", lw=0.6, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    return _save(fig, path)


def plot_density_1d(
    samples: torch.Tensor,
    density: Callable[[torch.Tensor], torch.Tensor] | None,
    path: str | Path,
    title: str = "samples against the true density",
    reference: torch.Tensor | None = None,
) -> Path:
    """A histogram of 1-D samples [N] or [N, 1] with the true density p(x) overlaid."""
    x = _numpy(samples).reshape(-1)
    low, high = np.quantile(x, [0.001, 0.999])
    pad = 0.15 * (high - low)
    grid = np.linspace(low - pad, high + pad, 600)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(x, bins=150, range=(grid[0], grid[-1]), density=True, alpha=0.55, label=f"samples (n={len(x)})")
    if reference is not None:
        ax.hist(
            _numpy(reference).reshape(-1),
            bins=150,
            range=(grid[0], grid[-1]),
            density=True,
            histtype="step",
            color="k",
            alpha=0.5,
            label="exact samples",
        )
    if density is not None:
        values = _numpy(density(torch.from_numpy(grid)[:, None]))
        ax.plot(grid, values, color="C3", lw=2, label="true density")
    ax.set(title=title, xlabel="x", ylabel="density")
    ax.legend()
    return _save(fig, path)


def plot_forward_marginals_1d(
    noised: Sequence[tuple[int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]],
    path: str | Path,
) -> Path:
    """Histograms of x_t at several t (one panel each) with the exact marginal q(x_t) overlaid.

    Args:
        noised: (t, samples of x_t [N], density of q(x_t) or None) for each panel.
    """
    fig, axes = plt.subplots(1, len(noised), figsize=(3.2 * len(noised), 3.2), sharey=False)
    axes = np.atleast_1d(axes)
    for ax, (t, samples, density) in zip(axes, noised):
        x = _numpy(samples).reshape(-1)
        grid = np.linspace(min(x.min(), -4), max(x.max(), 4), 400)
        ax.hist(x, bins=100, density=True, alpha=0.55)
        if density is not None:
            ax.plot(grid, _numpy(density(torch.from_numpy(grid)[:, None])), color="C3", lw=1.6)
        ax.set(title=f"t = {t}", xlabel=r"$x_t$")
    axes[0].set_ylabel(r"$q(x_t)$")
    fig.suptitle("forward process: histograms of $x_t$, exact marginal in red", y=1.04)
    return _save(fig, path)


def plot_trajectories_1d(
    timesteps: Sequence[int],
    states: torch.Tensor,
    path: str | Path,
    final_density: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_paths: int = 300,
) -> Path:
    """Reverse trajectories of 1-D particles: x against t (noise on the left, data on the right).

    Args:
        timesteps: the original timestep of each state (-1 for the final sample).
        states: [len(timesteps), B, 1] or [len, B].
    """
    paths = _numpy(states).reshape(len(timesteps), -1)[:, :max_paths]
    t = np.asarray(timesteps, dtype=float)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [4, 1]}, sharey=True)
    ax.plot(t, paths, lw=0.4, alpha=0.35, color="C0")
    ax.invert_xaxis()
    ax.set(
        title=f"reverse process: {paths.shape[1]} trajectories",
        ylabel="x",
        xlabel="t  (sampling runs from T on the left to the final sample on the right)",
    )
    final = paths[-1]
    side.hist(final, bins=60, orientation="horizontal", density=True, alpha=0.55)
    if final_density is not None:
        grid = np.linspace(final.min() - 1, final.max() + 1, 400)
        side.plot(_numpy(final_density(torch.from_numpy(grid)[:, None])), grid, color="C3")
    side.set(title="x_0", xlabel="density")
    return _save(fig, path)


def plot_samples_2d(
    samples: torch.Tensor, reference: torch.Tensor | None, path: str | Path, title: str = "samples"
) -> Path:
    """Model samples next to exact samples of the data, same axes."""
    s = _numpy(samples)
    panels = [("exact data", _numpy(reference)), (title, s)] if reference is not None else [(title, s)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    limit = np.quantile(np.abs(np.concatenate([p for _, p in panels])), 0.999) * 1.1
    for ax, (name, points) in zip(axes, panels):
        ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.4)
        ax.set(title=name, xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
    return _save(fig, path)


def plot_snapshots_2d(
    snapshots: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    title: str = "",
    limit: float | None = None,
) -> Path:
    """A row of 2-D scatter plots (e.g. x_t at several t, forward or reverse)."""
    fig, axes = plt.subplots(1, len(snapshots), figsize=(3.2 * len(snapshots), 3.4), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    if limit is None:
        limit = max(float(np.quantile(np.abs(_numpy(p)), 0.995)) for _, p in snapshots) * 1.1
    for ax, (label, points) in zip(axes, snapshots):
        p = _numpy(points)
        ax.scatter(p[:, 0], p[:, 1], s=1.0, alpha=0.35)
        ax.set(title=label, xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def animate_2d(
    frames: Sequence[tuple[str, torch.Tensor]], path: str | Path, fps: int = 12, limit: float | None = None
) -> Path:
    """A GIF of 2-D point clouds, one frame per (label, points [N, 2])."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [(label, _numpy(points)) for label, points in frames]
    if limit is None:
        limit = float(np.quantile(np.abs(arrays[-1][1]), 0.999)) * 1.3
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    scatter = ax.scatter(arrays[0][1][:, 0], arrays[0][1][:, 1], s=1.5, alpha=0.4)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xticks=[], yticks=[])
    title = ax.set_title(arrays[0][0])

    def draw(index: int):
        label, points = arrays[index]
        scatter.set_offsets(points[:, :2])
        title.set_text(label)
        return scatter, title

    animation = FuncAnimation(fig, draw, frames=len(arrays), blit=False)
    animation.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def plot_loss_curve(records: Sequence[dict], path: str | Path) -> Path:
    """Training loss (and LR) against step from metrics.jsonl records."""
    rows = [r for r in records if "loss" in r and "step" in r]
    steps = np.array([r["step"] for r in rows])
    losses = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=1.2, label="loss")
    ax.set(xlabel="optimizer step", ylabel="loss", title="training loss", yscale="log")
    ax.grid(alpha=0.3)
    lrs = [r.get("lr") for r in rows]
    if all(lr is not None for lr in lrs) and rows:
        twin = ax.twinx()
        twin.plot(steps, lrs, color="C1", lw=0.8, alpha=0.7, label="learning rate")
        twin.set_ylabel("learning rate", color="C1")
    return _save(fig, path)


def plot_training_curves(curves: dict[str, Sequence[dict]], path: str | Path) -> Path:
    """The training loss of several runs against step in one figure (log scale), one line per run:
    ``curves`` maps a run's name to its metrics.jsonl records (those without ``loss`` are skipped)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, records in curves.items():
        rows = [r for r in records if "loss" in r and "step" in r]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2, label=name)
    ax.set(xlabel="optimizer step", ylabel="training loss", title="training loss", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# The forward process on images.
# --------------------------------------------------------------------------------------------------


def forward_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced from 0 to T - 1 (both included), rounded to integers.

    Raises ValueError unless 1 <= steps <= T."""
    if not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer from 1 to T = {num_timesteps}, got {steps!r}")
    return [int(t) for t in np.rint(np.linspace(0, num_timesteps - 1, steps))]


def forward_strips(
    x0: torch.Tensor,
    schedules: Sequence[NoiseSchedule],
    t_values: Sequence[int],
    noise: torch.Tensor,
) -> list[torch.Tensor]:
    """x_t ~ q(x_t | x0) of the same images at several t, one strip per schedule.

    Every schedule and every t uses the same ``noise`` (like x0), so the strips differ only by the
    schedule: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (``GaussianDiffusion.q_sample``).

    Args:
        x0: clean images [N, C, H, W] in [-1, 1]; t_values: K timestep indices; noise: [N, C, H, W].
    Returns:
        one tensor [K, N, C, H, W] per schedule.
    """
    from ddpmlab.diffusion import GaussianDiffusion

    if noise.shape != x0.shape:
        raise ValueError(f"noise {list(noise.shape)} must be shaped like x0 {list(x0.shape)}")
    strips = []
    for schedule in schedules:
        diffusion = GaussianDiffusion(schedule)
        rows = [
            diffusion.q_sample(x0, torch.full((len(x0),), int(t), dtype=torch.int64), noise) for t in t_values
        ]
        strips.append(torch.stack(rows))
    return strips


def _montage(strip: torch.Tensor, pad: int) -> np.ndarray:
    """[K, N, C, H, W] in [-1, 1] -> one picture [N rows, K columns] in [0, 1] (grey: [H', W']), white
    gaps of ``pad`` pixels, tiled by :func:`ddpmlab.export.grid_image`."""
    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import grid_image

    k, n = strip.shape[:2]
    images = to_uint8(strip.transpose(0, 1).flatten(0, 1))  # row by row: image i at its K times
    picture = grid_image(images, rows=n, padding=pad).astype(np.float64) / 255.0
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def plot_forward_images(
    strips: Sequence[torch.Tensor],
    schedules: Sequence[NoiseSchedule],
    t_values: Sequence[int],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """The forward process on images: one block per schedule (rows: images, columns: t), each column
    labelled with t and that schedule's alpha_bar_t. Pixels are clipped to [-1, 1] for display.

    Args:
        strips: :func:`forward_strips`' output, one [K, N, C, H, W] per schedule.
        schedules: the schedules, in the same order; t_values: the K timesteps.
    """
    if len(strips) != len(schedules) or not strips:
        raise ValueError(f"{len(strips)} strips for {len(schedules)} schedules")
    k, n, _, h, w = strips[0].shape
    pad = max(1, h // 14)
    cell = 0.75 if h <= 32 else 1.1  # inches per image
    fig, axes = plt.subplots(
        len(strips), 1, figsize=(1.2 + cell * k, (cell * n + 0.9) * len(strips)), squeeze=False
    )
    for ax, strip, schedule in zip(axes[:, 0], strips, schedules):
        picture = _montage(strip, pad)
        cmap = "gray" if picture.ndim == 2 else None
        ax.imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        alpha_bar = schedule.alphas_cumprod
        labels = [f"t={t}\n" + r"$\bar\alpha$=" + f"{float(alpha_bar[t]):.2g}" for t in t_values]
        ax.set_xticks([pad + column * (w + pad) + (w - 1) / 2 for column in range(k)])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_yticks([])
        ax.tick_params(length=0)
        ax.set_ylabel(schedule.name, fontsize=11)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title or f"forward process q(x_t | x_0), T = {schedules[0].num_timesteps}", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(rows: Sequence[dict], path: str | Path) -> Path:
    """A sampler sweep (rows of :func:`ddpmlab.runs.sweep.sweep_run`): left, FD against seconds per image,
    one line per (sampler, guidance) through its step counts; right (when several guidance scales were
    measured), FD, precision, recall and class accuracy against the guidance scale at the most steps."""
    guided = sorted({row["guidance"] for row in rows if row["guidance"] is not None})
    fig, axes = plt.subplots(
        1, 2 if len(guided) > 1 else 1, figsize=(11 if len(guided) > 1 else 6, 4), squeeze=False
    )
    left = axes[0, 0]
    for key in sorted({(row["sampler"], row["guidance"]) for row in rows}, key=str):
        line = sorted((r for r in rows if (r["sampler"], r["guidance"]) == key), key=lambda r: r["steps"])
        label = key[0] if key[1] is None else f"{key[0]}, w = {key[1]:g}"
        left.plot([r["seconds_per_image"] for r in line], [r["fd"] for r in line], "o-", label=label)
        for r in line:
            left.annotate(
                str(r["nfe"]),
                (r["seconds_per_image"], r["fd"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    left.axhline(rows[0]["fd_floor"], color="grey", linestyle=":", label="real vs real")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="seconds per image",
        ylabel=rows[0]["fd_label"],
        title="quality against time (labels: network evaluations)",
    )
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping minor labels
    left.legend(fontsize=7)
    if len(guided) > 1:
        _plot_guidance(axes[0, 1], rows)
    fig.tight_layout()
    return _save(fig, path)


def _plot_guidance(right: plt.Axes, rows: Sequence[dict]) -> None:
    """FD (left axis) and precision, recall, class accuracy (right axis, 0..1) against the guidance scale,
    at the sweep's most steps."""
    rates = right.twinx()
    most = max(r["steps"] for r in rows)
    for sampler in sorted({r["sampler"] for r in rows}):
        line = sorted(
            (r for r in rows if r["sampler"] == sampler and r["steps"] == most), key=lambda r: r["guidance"]
        )
        scales = [r["guidance"] for r in line]
        right.plot(
            scales, [r["fd"] for r in line], "o-", color="black", label=f"{rows[0]['fd_label']} ({sampler})"
        )
        for key, style in (("precision", "s--"), ("recall", "^--"), ("class_accuracy", "d:")):
            if all(r.get(key) is not None for r in line):
                rates.plot(scales, [r[key] for r in line], style, label=f"{key} ({sampler})")
    right.set(
        xlabel="guidance scale w", ylabel=rows[0]["fd_label"], title=f"classifier-free guidance, {most} steps"
    )
    rates.set(ylim=(0, 1.02), ylabel="precision, recall, class accuracy")
    handles = right.get_legend_handles_labels()
    more = rates.get_legend_handles_labels()
    rates.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="center right")
