"""Sampling a trained run: samplers from its config, per-sample seeds, batches over processes,
trajectories for animations.

Sample i's noise depends only on (seed, i): noise is drawn from one generator per *seed block* of
samples (8 images, or 1,000 toy points), so the samples do not depend on the batch size or on the
number of processes. :func:`draw_samples` does the drawing with a ready denoiser (see
:mod:`ddpmlab.runs.guided`) and ready per-sample conditions (see :mod:`ddpmlab.runs.conditions`);
:func:`sample_run` is the one-call form that builds both from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.runs.conditions import sample_labels, slice_condition
from ddpmlab.runs.guided import guided_denoiser
from ddpmlab.runs.rundir import Run, RunError
from ddpmlab.sampling import Sampler, make_sampler

__all__ = [
    "make_run_sampler",
    "seed_generators",
    "default_seed_block",
    "draw_samples",
    "sample_run",
    "sample_images",
    "Trajectory",
    "snapshot_steps",
    "sample_trajectory",
]


def make_run_sampler(
    run: Run,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    clip_x0: float | None = None,
) -> Sampler:
    """A sampler for ``run``, each option defaulting to the run's ``sample`` section. Image runs clip
    the predicted x0 to [-1, 1] unless told otherwise (what every image DDPM does)."""
    s = run.config.sample
    name = sampler or s.sampler
    steps = steps if steps is not None else s.steps
    clip = clip_x0 if clip_x0 is not None else s.clip_x0
    if clip is None and run.info.kind == "image":
        clip = 1.0
    options: dict[str, Any] = {"clip_x0": clip, "spacing": s.spacing}
    if name == "ddim":
        options["eta"] = eta if eta is not None else s.eta
    elif name == "ddpm":
        options["variance"] = s.variance
    return make_sampler(name, run.diffusion, steps, **options)


def seed_generators(
    seed: int, first_sample: int, count: int, block: int, device: torch.device
) -> list[torch.Generator]:
    """One generator per block of ``block`` samples, seeded by (seed, block index): sample i's noise
    depends only on the seed and i, never on the batch size or the number of processes."""
    if first_sample % block or count % block:
        raise ValueError("sampling batches must start and end on seed-block boundaries")
    generators = []
    for index in range(first_sample // block, (first_sample + count) // block):
        generators.append(torch.Generator(device=device).manual_seed(seed * 1_000_003 + index))
    return generators


def default_seed_block(run: Run) -> int:
    """Samples per seed block: 1,000 toy points, or 8 images."""
    return 1000 if run.info.kind == "toy" else 8


def draw_samples(
    run: Run,
    denoiser: Any,
    num: int,
    sampler: Sampler,
    labels: Any = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    distribute: bool = False,
) -> torch.Tensor | None:
    """``num`` samples [num, *shape] (float, on the CPU) of ``denoiser`` with ``sampler``; ``labels``
    holds each sample's condition (or None).

    With ``distribute`` under torchrun, every process calls this and samples its share: each round of
    ``batch_size x processes`` samples is cut into one batch per rank, and rank 0 gathers them; the
    other ranks return None. The batches are the same as with one process, so the result does not
    depend on the number of processes.
    """
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    block = default_seed_block(run)
    batch_size = batch_size or run.config.sample.batch_size
    batch_size = max(block, batch_size // block * block)
    padded = -(-num // block) * block
    rank, world = (distributed.rank(), distributed.world_size()) if distribute else (0, 1)
    outputs = []
    for round_start in range(0, padded, batch_size * world):
        counts = [max(0, min(batch_size, padded - round_start - r * batch_size)) for r in range(world)]
        start, count = round_start + rank * batch_size, counts[rank]
        if count == 0:  # the last round has fewer batches than ranks
            outputs.append(distributed.gather_rows(torch.zeros((0, *run.info.shape)), counts))
            continue
        generators = seed_generators(seed, start, count, block, run.device)
        cond = None if labels is None else slice_condition(labels, start, count, num, run.device)
        x = sampler.sample(
            denoiser, (count, *run.info.shape), cond=cond, generator=generators, device=run.device,
            progress=progress and rank == 0,
        )
        outputs.append(distributed.gather_rows(x.float(), counts) if world > 1 else x.float().cpu())
    if rank != 0:
        return None
    return torch.cat(outputs)[:num]


def sample_run(
    run: Run,
    num: int,
    sampler: Sampler,
    guidance: float | None = None,
    labels: torch.Tensor | list | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    distribute: bool = False,
    classifier: Any = None,
    classifier_scale: float = 1.0,
) -> tuple[torch.Tensor | None, Any]:
    """Draw ``num`` samples (EMA weights) with ``sampler``; returns (samples [num, ...] on CPU, labels).

    For a conditional run, ``labels`` gives each sample's condition (default: classes in turn, or for
    a text run random strings fixed by ``seed``) and ``guidance`` the classifier-free guidance scale w
    (default: the run's ``sample.guidance``). With ``classifier`` (a
    :class:`~ddpmlab.runs.rundir.ClassifierRun`), the model is also guided by the classifier's gradient
    with scale ``classifier_scale`` towards ``labels`` (default: classes in turn). Under torchrun with
    ``distribute``, rank 0 returns the samples and the others None (see :func:`draw_samples`).
    """
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    labels = sample_labels(run, num, labels, seed, classifier)
    denoiser = guided_denoiser(run, guidance, classifier, classifier_scale, labels)
    samples = draw_samples(run, denoiser, num, sampler, labels, seed, batch_size, progress, distribute)
    return samples, labels


def _require_images(run: Run) -> None:
    if run.info.kind != "image":
        raise RunError(f"{run.run_dir} is a {run.info.kind} run, not an image run")


def sample_images(
    run: Run, num: int, sampler: Sampler, *args: Any, **kwargs: Any
) -> tuple[torch.Tensor, Any]:
    """Like :func:`sample_run` (same arguments) for image runs, returning uint8 images [num, H, W, C]
    and the labels. Raises RunError for a toy run."""
    from ddpmlab.data.base import to_uint8

    _require_images(run)
    samples, used = sample_run(run, num, sampler, *args, **kwargs)
    return to_uint8(samples), used


@dataclass
class Trajectory:
    """Snapshots of the reverse process of an image run, for denoising animations.

    Fields:
        x_t: uint8 [F, N, H, W, C], the noisy images at ``timesteps`` (values beyond [-1, 1] clipped
            for display), the first one the initial noise x_T.
        x0: uint8 [F, N, H, W, C], the model's prediction of the clean images at the same steps.
        timesteps: [F] original timestep indices t (T-1 ... 0); the last snapshot is the final sample
            (x_t and x0 both hold it, with t = -1).
        steps: [F] how many reverse steps had been taken at each snapshot (0 ... num_steps).
        labels: the samples' conditions (or None).
    """

    x_t: torch.Tensor
    x0: torch.Tensor
    timesteps: list[int]
    steps: list[int]
    labels: Any

    @property
    def num_steps(self) -> int:
        """The sampler's number of reverse steps (the last snapshot is taken after all of them)."""
        return self.steps[-1]


def snapshot_steps(num_steps: int, frames: int) -> list[int]:
    """``frames`` step numbers 0 .. num_steps (0 = before the first reverse step, num_steps = the
    final sample), evenly spaced and always including both ends; fewer when there are fewer steps."""
    if frames < 2:
        raise ValueError(f"an animation needs at least 2 frames, got {frames}")
    frames = min(frames, num_steps + 1)
    return sorted({round(k * num_steps / (frames - 1)) for k in range(frames)})


def sample_trajectory(
    run: Run,
    num: int,
    sampler: Sampler,
    frames: int = 40,
    guidance: float | None = None,
    labels: Any = None,
    seed: int = 0,
    classifier: Any = None,
    classifier_scale: float = 1.0,
    progress: bool = False,
) -> Trajectory:
    """Draw ``num`` images of an image run in one batch and keep ``frames`` snapshots of x_t and of the
    predicted x0 along the way (see :class:`Trajectory`).

    The noise comes from the same per-sample generators as :func:`sample_run`, so the final snapshot
    holds the images ``sample_run`` draws with the same seed (exactly when ``num`` fits in one of its
    batches; otherwise up to float rounding between batch sizes).
    """
    from ddpmlab.data.base import to_uint8

    _require_images(run)
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    labels = sample_labels(run, num, labels, seed, classifier)
    denoiser = guided_denoiser(run, guidance, classifier, classifier_scale, labels)
    block = default_seed_block(run)
    padded = -(-num // block) * block
    generators = seed_generators(seed, 0, padded, block, run.device)
    cond = None if labels is None else slice_condition(labels, 0, padded, num, run.device)
    keep = set(snapshot_steps(sampler.num_steps, frames))
    x_t, x0, timesteps, taken = [], [], [], []
    iterator = sampler.steps(denoiser, (padded, *run.info.shape), cond, generators, device=run.device)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=sampler.num_steps, desc=type(sampler).__name__, leave=False)
    for done, step in enumerate(iterator):
        if done in keep:
            x_t.append(to_uint8(step.x_t[:num].float()).cpu())  # clipped to [-1, 1] for display
            x0.append(to_uint8(step.x0[:num].float()).cpu())
            timesteps.append(int(step.timestep))
            taken.append(done)
    final = to_uint8(step.x_prev[:num].float()).cpu()
    return Trajectory(
        torch.stack([*x_t, final]), torch.stack([*x0, final]), [*timesteps, -1], [*taken, sampler.num_steps],
        labels,
    )
