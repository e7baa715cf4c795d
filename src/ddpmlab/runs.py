"""Run-level operations as plain functions, for the CLI and for notebooks alike.

A run directory is the unit a user keeps::

    runs/NAME/config.yaml          the resolved config (everything later commands need)
    runs/NAME/checkpoints/last.pt  model, EMA, optimizer, ... (see ddpmlab.training.checkpoint)
    runs/NAME/metrics.jsonl        one JSON line per log step, plus evaluation records
    runs/NAME/logs/                TensorBoard
    runs/NAME/plots/, samples/     pictures

``train_run(config, run_dir)`` builds everything a config describes and trains it;
``open_run(run_dir)`` loads it back (EMA weights) and ``sample_run(run, ...)`` samples from it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpmlab import distributed
from ddpmlab.config import Config, ConfigError
from ddpmlab.data.batches import SampledBatches
from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.sampling import Sampler, make_sampler
from ddpmlab.schedules import make_schedule
from ddpmlab.training.checkpoint import load_checkpoint
from ddpmlab.training.trainer import Trainer

__all__ = [
    "RunError",
    "DataInfo",
    "Run",
    "build_diffusion",
    "build_data",
    "build_model_for",
    "train_run",
    "resolve_batch_size",
    "open_run",
    "make_run_sampler",
    "sample_run",
    "seed_generators",
]

CONFIG_FILE = "config.yaml"
CHECKPOINT = Path("checkpoints") / "last.pt"


class RunError(ValueError):
    """A run directory that cannot be used as asked (missing, or would be overwritten)."""


@dataclass
class DataInfo:
    """What the rest of a run needs to know about its data."""

    kind: str  # "toy" or "image"
    shape: tuple[int, ...]  # one sample's shape: (D,) or (C, H, W)
    num_classes: int  # 0 when the data has no labels
    dataset: Any = None  # the dataset object (toy distribution or image dataset)
    class_names: list[str] | None = None
    text_charset: str | None = None  # text-labelled data (captchas): the characters of the labels
    text_length: int | None = None  # and their maximum length


# --------------------------------------------------------------------------------------------------
# Building.
# --------------------------------------------------------------------------------------------------


def build_diffusion(config: Config) -> GaussianDiffusion:
    d = config.diffusion
    schedule = make_schedule(d.schedule, d.timesteps, **d.schedule_options)
    return GaussianDiffusion(schedule, d.prediction, d.min_snr_gamma)


def _is_toy(name: str) -> bool:
    from ddpmlab.data.toy import toy_dataset_names

    return name in toy_dataset_names()


def build_data(config: Config, rank: int = 0, world_size: int = 1) -> tuple[Any, DataInfo]:
    """The training batch stream and the data's description."""
    data = config.data
    if _is_toy(data.name):
        from ddpmlab.data.toy import make_toy_dataset

        dataset = make_toy_dataset(data.name, **data.options)
        if data.conditional and not dataset.num_classes:
            raise ConfigError(f"data.conditional is true but {data.name} has no labels")
        seed = config.train.seed * 1000 + rank
        batches = SampledBatches(dataset.sample, config.train.batch_size, seed, rank)
        return batches, DataInfo("toy", (dataset.dim,), dataset.num_classes, dataset)
    try:
        from ddpmlab.data.images import build_image_data
    except ImportError:
        raise ConfigError(f"unknown dataset {data.name!r}") from None
    return build_image_data(config, rank, world_size)


def build_model_for(config: Config, info: DataInfo) -> torch.nn.Module:
    """The model a config describes, with the data-dependent options filled in."""
    from ddpmlab.models import build_model

    if config.model.type == "classifier":
        raise ConfigError(
            "model.type classifier is a noise-aware classifier, not a denoiser: train it with "
            "`ddpmlab train-classifier` and use it with `ddpmlab sample --classifier`"
        )
    options = dict(config.model.options)
    num_classes = info.num_classes if config.data.conditional else None
    if config.model.type == "mlp":
        options.setdefault("data_dim", info.shape[0])
        if num_classes:
            options.setdefault("num_classes", num_classes)
    elif config.model.type == "unet":
        options.setdefault("in_channels", info.shape[0])
        options.setdefault("image_size", info.shape[-1])
        if num_classes:
            options.setdefault("condition", "class")
            options.setdefault("num_classes", num_classes)
        elif config.data.conditional and info.text_charset:
            options.setdefault("condition", "text")
            options.setdefault("text_charset", info.text_charset)
            options.setdefault("text_length", info.text_length)
        if options.get("condition") != "text":
            # like the other text options, cross-attention to text means nothing without text labels
            # (e.g. the captcha config with data.conditional=false)
            options.pop("text_cross_attention", None)
    try:
        return build_model({"type": config.model.type, **options})
    except TypeError as error:
        raise ConfigError(f"model: {error}") from None


# --------------------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------------------


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run that already has checkpoints (unless resuming)."""
    has_checkpoint = (run_dir / CHECKPOINT).exists()
    if resume and not has_checkpoint:
        raise RunError(f"nothing to resume: {run_dir / CHECKPOINT} does not exist")
    if not resume and has_checkpoint:
        raise RunError(
            f"{run_dir} already holds a trained run; pass --resume to continue it "
            "or --run to choose another directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def train_run(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    hooks: list | None = None,
    report: bool = True,
) -> Trainer:
    """Build what ``config`` describes and train it in ``run_dir``; returns the finished Trainer.

    After training, toy runs get their plots and metrics (``report``).

    Under torchrun (after :func:`ddpmlab.distributed.init`) every process calls this: rank 0 prepares
    the run directory while the others wait, and alone writes into it; each process trains on its
    share of every global batch, on its own device. Resuming keeps the run's global batch size
    (``train.global_batch_size``), also with another number of processes.
    """
    run_dir = Path(run_dir)
    rank, world = distributed.rank(), distributed.world_size()
    distributed.main_first(prepare_run_dir, run_dir, resume)
    if resume:
        saved = Config.from_dict(load_checkpoint(run_dir / CHECKPOINT)["config"])
        saved_train = saved.to_dict()["train"]
        if saved_train["global_batch_size"] is None:  # saved before distributed training: one process
            saved_train["global_batch_size"] = saved_train["batch_size"] * saved_train["grad_accum"]
        # Only the stopping rule may change on resume: the rest must match what was trained.
        config = Config.from_dict({**saved.to_dict(), "train": {**saved_train, **_stop_keys(config)}})
    config = resolve_batch_size(config, world)
    if world > 1 and config.data.download:  # rank 0 fetches missing data alone, then the others read it
        distributed.main_first(lambda: build_data(config, rank, world) and None)
    torch.manual_seed(config.train.seed)
    batches, info = build_data(config, rank, world)
    hooks = list(hooks or [])
    if info.kind == "image" and config.train.sample_every:
        grid_steps = min(config.sample.steps or 50, 50)  # DDIM: quick enough to run during training
        hooks.append(lambda trainer: write_training_grid(trainer, run_dir, info, config, steps=grid_steps))
    model = build_model_for(config, info)
    diffusion = build_diffusion(config)
    if rank == 0:
        (run_dir / CONFIG_FILE).write_text(_batch_comment(config, world) + config.to_yaml())
    trainer = Trainer(
        model,
        diffusion,
        batches,
        config.train,
        run_dir=run_dir,
        conditional=config.data.conditional,
        run_config=config.to_dict(),
        hooks=hooks,
        device=distributed.local_device(config.train.device),
    )
    if resume:
        trainer.resume()
    trainer.fit()
    distributed.barrier()  # every process returns once the final checkpoint is written
    if report and info.kind == "toy" and rank == 0:
        from ddpmlab.toy_report import write_toy_report

        write_toy_report(open_run(run_dir))
    return trainer


def resolve_batch_size(config: Config, world_size: int = 1) -> Config:
    """``config`` with ``train.batch_size`` (per process) and ``train.global_batch_size`` (per optimizer
    step: batch_size x ``world_size`` processes x grad_accum) both filled in. A global batch size in
    the config decides (batch_size is derived from it); without one it follows from batch_size."""
    train = config.train
    per_step = world_size * train.grad_accum
    if train.global_batch_size is None:
        batch, global_batch = train.batch_size, train.batch_size * per_step
    elif train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} does not split evenly over {world_size} "
            f"process(es) x grad_accum {train.grad_accum}"
        )
    else:
        batch, global_batch = train.global_batch_size // per_step, train.global_batch_size
    if (batch, global_batch) == (train.batch_size, train.global_batch_size):
        return config
    if batch != train.batch_size and distributed.is_main():
        print(
            f"ddpmlab: train.batch_size={batch} per process, for train.global_batch_size={global_batch} "
            f"over {world_size} process(es) x grad_accum {train.grad_accum}",
            file=sys.stderr,
        )
    return config.with_overrides([f"train.batch_size={batch}", f"train.global_batch_size={global_batch}"])


def _batch_comment(config: Config, world_size: int) -> str:
    t = config.train
    return (
        f"# global batch per optimizer step: {t.global_batch_size} = batch_size {t.batch_size} per process"
        f" x {world_size} process(es) x grad_accum {t.grad_accum}; lr {t.lr:g} is not scaled with it\n"
    )


def _stop_keys(config: Config) -> dict[str, Any]:
    train = config.to_dict()["train"]
    return {key: train[key] for key in ("steps", "epochs", "minutes")}


# --------------------------------------------------------------------------------------------------
# Opening and sampling.
# --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained run loaded for sampling: its config, EMA model, diffusion and data description."""

    run_dir: Path
    config: Config
    model: torch.nn.Module
    diffusion: GaussianDiffusion
    info: DataInfo
    step: int
    device: torch.device

    @property
    def conditional(self) -> bool:
        return self.config.data.conditional

    @property
    def text_encoder(self) -> Any:
        """The model's :class:`~ddpmlab.models.embeddings.TextEmbedding` (its ``charset`` and
        ``length``) when the run is conditioned on text, else None."""
        from ddpmlab.models.embeddings import TextEmbedding

        encoder = getattr(self.model, "condition_encoder", None)
        return encoder if self.conditional and isinstance(encoder, TextEmbedding) else None


def open_run(run_dir: str | Path, device: str = "auto") -> Run:
    """Load a run directory's config and EMA weights."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} is not a trained run (no {CHECKPOINT})")
    target = distributed.local_device(device)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location="cpu")
    config = Config.from_dict(state["config"])
    _, info = build_data(config)
    model = build_model_for(config, info)
    model.load_state_dict(state["ema"]["model"])
    model.to(target).eval()
    return Run(run_dir, config, model, build_diffusion(config), info, int(state["step"]), target)


def make_run_sampler(
    run: Run,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    clip_x0: float | None = None,
) -> Sampler:
    """A sampler for ``run``, each option defaulting to the run's ``sample`` section."""
    s = run.config.sample
    name = sampler or s.sampler
    steps = steps if steps is not None else s.steps
    clip = clip_x0 if clip_x0 is not None else s.clip_x0
    if clip is None and run.info.kind == "image":
        clip = 1.0  # images live in [-1, 1]: clipping x0 there is what every image DDPM does
    options: dict[str, Any] = {"clip_x0": clip, "spacing": s.spacing}
    if name == "ddim":
        options["eta"] = eta if eta is not None else s.eta
    else:
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


def default_seed_block(info: DataInfo) -> int:
    return 1000 if info.kind == "toy" else 8


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
) -> tuple[torch.Tensor, Any]:
    """Draw ``num`` samples (EMA weights) with ``sampler``; returns (samples [num, ...] on CPU, labels).

    With ``distribute`` under torchrun, every process calls this and samples its share: each round of
    ``batch_size x processes`` samples is cut into one batch per rank, and rank 0 gathers them; it
    returns the samples on rank 0 and None as samples on the other ranks. Sample i depends on (seed, i)
    only, and the batches are the same as with one process, so the result does not depend on the
    number of processes.

    For a conditional run, ``labels`` gives each sample's condition (default: classes in turn, or for
    a text run random strings fixed by ``seed``) and ``guidance`` the classifier-free guidance scale w
    (default: the run's ``sample.guidance``).

    With ``classifier`` (a :class:`~ddpmlab.classifier_runs.ClassifierRun`), the model is also guided by
    the classifier's gradient with scale ``classifier_scale`` towards ``labels`` (default: classes in
    turn), which go to the classifier (and to the model too when the run is conditional).
    """
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    model, labels = _guided_model(run, num, guidance, labels, seed, classifier, classifier_scale)
    block = default_seed_block(run.info)
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
        cond = None
        if labels is not None:
            cond = _slice_condition(labels, start, count, num, run.device)
        x = sampler.sample(
            model,
            (count, *run.info.shape),
            cond=cond,
            generator=generators,
            device=run.device,
            progress=progress and rank == 0,
        )
        outputs.append(distributed.gather_rows(x.float(), counts) if world > 1 else x.float().cpu())
    if rank != 0:
        return None, labels
    samples = torch.cat(outputs)[:num]
    return samples, labels


def _guided_model(
    run: Run,
    num: int,
    guidance: float | None,
    labels: Any,
    seed: int,
    classifier: Any,
    classifier_scale: float,
) -> tuple[Any, Any]:
    """The model that sampling calls (with classifier-free and/or classifier guidance as asked) and
    each of the ``num`` samples' condition (None for an unconditional run without a classifier)."""
    model: Any = run.model
    if classifier is not None:
        labels = _condition_batch(run, num, labels, seed, classifier.num_classes)
    if run.conditional:
        labels = _condition_batch(run, num, labels, seed)
        scale = run.config.sample.guidance if guidance is None else guidance
        encoder = getattr(run.model, "condition_encoder", None)
        if encoder is None:
            raise RunError("this run's model has no condition encoder")
        if scale != 1.0:
            model = ClassifierFreeGuidance(run.model, scale, encoder.null_condition)
    elif labels is not None and classifier is None:
        raise RunError("this run is unconditional: it takes no labels")
    if classifier is not None:
        from ddpmlab.classifier_runs import guide_with_classifier

        model = guide_with_classifier(run, model, classifier, classifier_scale, labels)
    return model, labels


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
    from ddpmlab.data.images import to_uint8

    if run.info.kind != "image":
        raise RunError(f"{run.run_dir} is a {run.info.kind} run, not an image run")
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    model, labels = _guided_model(run, num, guidance, labels, seed, classifier, classifier_scale)
    block = default_seed_block(run.info)
    padded = -(-num // block) * block
    generators = seed_generators(seed, 0, padded, block, run.device)
    cond = None if labels is None else _slice_condition(labels, 0, padded, num, run.device)
    keep = set(snapshot_steps(sampler.num_steps, frames))
    x_t, x0, timesteps, taken = [], [], [], []
    iterator = sampler.steps(model, (padded, *run.info.shape), cond, generators, device=run.device)
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
    x_t.append(final)
    x0.append(final)
    timesteps.append(-1)
    taken.append(sampler.num_steps)
    return Trajectory(torch.stack(x_t), torch.stack(x0), timesteps, taken, labels)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """[0]*per_class + [1]*per_class + ...: with ``num_classes`` rows, each grid row is one class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def text_grid_labels(texts: list[str], per_text: int) -> list[str]:
    """[texts[0]]*per_text + [texts[1]]*per_text + ...: with len(texts) rows, each row is one string."""
    return [text for text in texts for _ in range(per_text)]


def sample_images(
    run: Run,
    num: int,
    sampler: Sampler,
    guidance: float | None = None,
    labels: Any = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    classifier: Any = None,
    classifier_scale: float = 1.0,
):
    """Like :func:`sample_run` for image runs, returning uint8 images [num, H, W, C] and labels."""
    from ddpmlab.data.images import to_uint8

    if run.info.kind != "image":
        raise RunError(f"{run.run_dir} is a {run.info.kind} run, not an image run")
    samples, used = sample_run(
        run, num, sampler, guidance, labels, seed, batch_size, progress,
        classifier=classifier, classifier_scale=classifier_scale,
    )
    return to_uint8(samples), used


def write_training_grid(
    trainer: Trainer, run_dir: Path, info: DataInfo, config: Config, per_class: int = 8, steps: int = 50
) -> Path:
    """A grid of EMA samples (DDIM, ``steps`` steps; one row per class when conditional, one row per
    random string for text runs), written to ``run_dir/samples/step_XXXXXXX.png`` and sent to
    TensorBoard."""
    from ddpmlab.data.images import to_uint8
    from ddpmlab.export import grid_image, save_grid
    from ddpmlab.sampling import DDIMSampler

    model: Any = trainer.ema.model
    diffusion = trainer.diffusion
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=trainer.device).manual_seed(config.sample.seed)
    encoder = getattr(model, "condition_encoder", None)
    if config.data.conditional and (info.num_classes or info.text_charset):
        if info.num_classes:
            rows = min(info.num_classes, 10)
            labels = class_grid_labels(rows, per_class).to(trainer.device)
        else:
            from ddpmlab.data.captcha import random_texts

            rows, length = 8, info.text_length or encoder.length
            texts = random_texts(rows, encoder.charset, length, config.sample.seed)
            labels = text_grid_labels(texts, per_class)
        if config.sample.guidance != 1.0:
            model = ClassifierFreeGuidance(model, config.sample.guidance, encoder.null_condition)
    else:
        labels, rows = None, per_class
    count = rows * per_class
    sampler = DDIMSampler(diffusion, min(steps, diffusion.num_timesteps), clip_x0=1.0)
    images = sampler.sample(model, (count, *info.shape), labels, generator, device=trainer.device)
    model.train(was_training)
    pixels = to_uint8(images.float().cpu())
    path = save_grid(pixels, run_dir / "samples" / f"step_{trainer.state.step:07d}.png", rows=rows)
    grid = torch.from_numpy(grid_image(pixels, rows)).permute(2, 0, 1).float() / 255.0  # [C, H, W] in [0, 1]
    trainer.log_image("samples", grid)
    return path


def _condition_batch(run: Run, num: int, labels: Any, seed: int = 0, num_classes: int | None = None) -> Any:
    """Each sample's condition; labels None: classes in turn (``num_classes``, default the data's)."""
    if labels is None and run.text_encoder is not None and num_classes is None:
        from ddpmlab.data.captcha import random_texts

        return random_texts(num, run.text_encoder.charset, _text_length(run), seed)
    if labels is None:
        classes = num_classes or run.info.num_classes
        return torch.arange(num) % classes
    if torch.is_tensor(labels) or isinstance(labels, (list, tuple)):
        if len(labels) == num:
            return torch.as_tensor(labels) if not isinstance(labels[0], str) else list(labels)
        if len(labels) and not isinstance(labels[0], str):
            cycle = torch.as_tensor(labels)
            return cycle[torch.arange(num) % len(cycle)]
        return [labels[i % len(labels)] for i in range(num)]
    raise RunError(f"cannot use {labels!r} as labels")


def _text_length(run: Run) -> int:
    """The length of random strings for a text run: the data's (captchas have one), else the model's."""
    return run.info.text_length or run.text_encoder.length


def _slice_condition(labels: Any, start: int, count: int, num: int, device: torch.device) -> Any:
    """The conditions of samples start .. start+count, padding past ``num`` by repeating the last one."""
    indices = [min(i, num - 1) for i in range(start, start + count)]
    if torch.is_tensor(labels):
        return labels[torch.tensor(indices)].to(device)
    return [labels[i] for i in indices]


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
