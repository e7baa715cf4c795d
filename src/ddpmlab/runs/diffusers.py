"""Runs as diffusers pipelines and back: ``ddpmlab export --diffusers`` and ``ddpmlab import-diffusers``.

The folder is the layout ``diffusers.DDPMPipeline.from_pretrained(DIR)`` (and ``DDIMPipeline``) loads::

    DIR/model_index.json                          {"_class_name": "DDPMPipeline", "unet": [...], ...}
    DIR/unet/config.json                          UNet2DModel's configuration
    DIR/unet/diffusion_pytorch_model.safetensors  its weights (our EMA weights)
    DIR/scheduler/scheduler_config.json           DDPMScheduler's configuration (the run's schedule)
    DIR/README.md                                 what the folder holds and how to sample it

It is written and read with json and safetensors only: diffusers is never imported. The network's
translation is :mod:`ddpmlab.models.diffusers_format`; the scheduler's is
:mod:`ddpmlab.runs.diffusers_scheduler`. An imported folder becomes a complete run directory (config.yaml
with ``data.info``, ``checkpoints/last.pt`` holding the weights as both model and EMA at step 0) that
``sample``, ``export`` and ``train --resume`` (fine-tuning, from a fresh optimizer) accept. Folders
from other code may hold ``diffusion_pytorch_model.bin`` instead (read with ``weights_only``) and old
attention weight names (``query``, ``key``, ``value``, ``proj_attn``), as the published DDPM models do.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import Config
from ddpmlab.data import DataInfo, build_data, describe_data
from ddpmlab.models.diffusers_format import (
    DDPMLAB_KEY,
    DIFFUSERS_VERSION,
    sample_shape,
    state_dict_from_diffusers,
    state_dict_to_diffusers,
    unet2d_config,
    unet_options,
)
from ddpmlab.runs.build import build_model_for
from ddpmlab.runs.diffusers_scheduler import import_schedule, scheduler_config
from ddpmlab.runs.rundir import CHECKPOINT, CONFIG_FILE, RunError, open_run
from ddpmlab.training.checkpoint import save_checkpoint

__all__ = ["MODEL_INDEX", "UNET_WEIGHTS", "export_diffusers", "import_diffusers", "read_diffusers_folder"]

MODEL_INDEX = "model_index.json"
UNET_CONFIG = Path("unet") / "config.json"
UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
UNET_PICKLE = Path("unet") / "diffusion_pytorch_model.bin"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
FINE_TUNING_LR = 1e-4  # an imported run's train.lr (every train key can be set at import)


# --------------------------------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------------------------------


def export_diffusers(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the trained image run ``run_dir`` (its EMA weights) as a diffusers pipeline folder.

    The folder is built next to ``out_dir`` and renamed into place, so an interrupted export leaves
    nothing half-written. A class-conditional run keeps all its classes plus the null class of
    classifier-free guidance (``num_class_embeds`` = classes + 1, the last row); diffusers' pipelines
    do not pass labels, so the folder's README gives the sampling loop with guidance.

    Raises:
        RunError: not an image run, or ``out_dir`` exists and is not empty. ValueError: a model that
            diffusers' UNet2DModel cannot express (patch_size > 1, text conditioning, unequal head
            widths: see :func:`ddpmlab.models.diffusers_format.unet2d_config`).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} already exists; export into a new folder")
    run = open_run(run_dir, device="cpu")
    if run.info.kind != "image" or tuple(run.info.value_range or ()) != (-1.0, 1.0):
        raise RunError(f"{run_dir} is a {run.info.kind} run; diffusers' pipelines make images in [-1, 1]")
    _, height, width = run.info.shape
    unet = unet2d_config(run.model, height if height == width else (height, width))
    if run.info.class_names and DDPMLAB_KEY in unet:
        unet[DDPMLAB_KEY]["class_names"] = list(run.info.class_names)
    files = {
        MODEL_INDEX: _model_index(),
        UNET_CONFIG: unet,
        SCHEDULER_CONFIG: scheduler_config(run.diffusion.schedule, run.config),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(json.dumps(content, indent=2) + "\n")
        _save_safetensors(state_dict_to_diffusers(run.model), staging / UNET_WEIGHTS)
        (staging / "README.md").write_text(_readme(run, unet, out.name))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _model_index() -> dict[str, Any]:
    return {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


def _readme(run: Any, unet: dict[str, Any], folder: str) -> str:
    classes = unet.get("num_class_embeds")
    lines = [
        f"# {run.config.name}: a ddpmlab run as a diffusers pipeline",
        "",
        f"Exported by ddpmlab from `{run.run_dir}` (step {run.step}, EMA weights): diffusers' `UNet2DModel`",
        f"and `DDPMScheduler`, images of shape {list(run.info.shape)} in [-1, 1].",
        "",
    ]
    if classes is None:
        lines += [
            "```python",
            "from diffusers import DDPMPipeline",
            f'pipeline = DDPMPipeline.from_pretrained("{folder}")  # or DDIMPipeline',
            "images = pipeline(batch_size=16).images",
            "```",
            "",
            "DDIMPipeline (eta 0, use_clipped_model_output=True) makes ddpmlab's DDIM images when",
            f"num_inference_steps K divides T = {run.diffusion.num_timesteps} (diffusers' DDIM steps back by",
            "T // K).",
        ]
    else:
        names = unet[DDPMLAB_KEY].get("class_names") or list(range(classes - 1))
        lines += [
            f"Class-conditional: labels 0..{classes - 2} ({', '.join(map(str, names))});",
            f"label {classes - 1} is the null class of classifier-free guidance. The pipelines pass no",
            "labels: sample with the loop of ddpmlab's README (section \"diffusers\"), with",
            "eps = uncond + w (cond - uncond).",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Import.
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found: not a diffusers UNet2DModel + scheduler folder") from None
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not JSON: {error}") from None
    if not isinstance(content, dict):
        raise RunError(f"{path} does not hold a configuration")
    return content


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / UNET_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / UNET_WEIGHTS))
    if (folder / UNET_PICKLE).is_file():
        return torch.load(folder / UNET_PICKLE, map_location="cpu", weights_only=True)
    raise RunError(f"{folder / 'unet'} holds neither {UNET_WEIGHTS.name} nor {UNET_PICKLE.name}")


def read_diffusers_folder(
    folder: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(UNet2DModel config, its state dict, scheduler config) of a diffusers pipeline folder.

    Raises:
        RunError: a missing or unreadable file, or a pipeline whose network is not a UNet2DModel (a
            text-to-image or latent pipeline).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder} is not a folder")
    if (folder / MODEL_INDEX).is_file():
        index = _read_json(folder / MODEL_INDEX)
        unet_class = (index.get("unet") or [None, None])[1]
        if unet_class != "UNet2DModel":
            raise RunError(
                f"{folder} is a {index.get('_class_name')} whose network is {unet_class}, not a UNet2DModel"
            )
    unet = _read_json(folder / UNET_CONFIG)
    if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise RunError(f"{folder / UNET_CONFIG} describes a {unet['_class_name']}, not a UNet2DModel")
    return unet, _read_weights(folder), _read_json(folder / SCHEDULER_CONFIG)


def import_diffusers(folder: str | Path, run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """Make the diffusers folder ``folder`` (UNet2DModel + DDPM-family scheduler) the run ``run_dir``.

    The run's config has the UNet's options (:func:`ddpmlab.models.diffusers_format.unet_options`),
    the scheduler's diffusion and sampler settings (:func:`.diffusers_scheduler.import_schedule`),
    ``train.lr`` 1e-4, and ``data.info`` describing images of the UNet's shape in [-1, 1]. The data
    is only needed to fine-tune (``train --resume``), and is fixed at import like every key of a
    run: ``overrides`` (dotted, e.g. ``data.name=cifar10`` or ``data.name=folder data.root=DIR``)
    set it; the data's description is then recorded, and must match the network's shape and classes.
    Returns the run's config.

    Raises:
        RunError: an unreadable folder, a run directory that already holds a checkpoint, or data that
            does not fit the network. ValueError: a network or scheduler ddpmlab cannot express.
    """
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} already holds a trained run; import into another directory")
    unet, weights, scheduler = read_diffusers_folder(folder)
    config = _import_config(run_dir.name, unet, scheduler, list(overrides or []))
    model = build_model_for(config, DataInfo.from_dict(config.data.info))
    flip = bool(unet.get("flip_sin_to_cos", True))
    model.load_state_dict(state_dict_from_diffusers(weights, model, flip))
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    ema = {"model": {name: tensor.clone() for name, tensor in state.items()}, "num_updates": 0}
    source = str(Path(folder).resolve())
    checkpoint = {
        "step": 0,
        "samples_seen": 0,
        "elapsed_seconds": 0.0,
        "last_metrics": {},
        "config": config.to_dict(),
        "model": state,
        "ema": {**ema, "decay": config.train.ema_decay},
        "imported_from": source,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / CHECKPOINT, checkpoint)
    (run_dir / CONFIG_FILE).write_text(f"# imported from the diffusers folder {source}\n" + config.to_yaml())
    return config


def _import_config(
    name: str, unet: dict[str, Any], scheduler: dict[str, Any], overrides: list[str]
) -> Config:
    """The config of a run imported from these UNet and scheduler configs, with ``data.info``."""
    options = unet_options(unet)
    diffusion, sample = import_schedule(scheduler)
    shape = sample_shape(unet)
    num_classes = options.get("num_classes")
    raw: dict[str, Any] = {
        "name": name,
        "data": {"name": "folder", "conditional": num_classes is not None},
        "model": {"type": "unet", **options},
        "diffusion": diffusion,
        "train": {"lr": FINE_TUNING_LR},
        "sample": sample,
    }
    if shape[1] == shape[2]:
        raw["data"]["image_size"] = shape[2]
    config = Config.from_dict(raw).with_overrides(overrides)
    if any(item.startswith("data.") for item in overrides):
        info = _data_info(config, shape, num_classes)
    else:
        class_names = (unet.get(DDPMLAB_KEY) or {}).get("class_names")
        info = DataInfo("image", shape, num_classes or 0, class_names=class_names, value_range=(-1.0, 1.0))
    raw = config.to_dict()
    raw["data"]["info"] = info.to_dict()
    return Config.from_dict(raw)


def _data_info(config: Config, shape: tuple[int, int, int], num_classes: int | None) -> DataInfo:
    """The description of the data the overrides chose (read from the files where the config alone
    cannot tell), checked against the network."""
    info = describe_data(config.data)
    if info is None:
        info = build_data(config.data, config.train.batch_size, config.train.seed)[1]
    if info.kind != "image" or tuple(info.shape) != tuple(shape):
        raise RunError(
            f"the data {config.data.name} is {info.kind} data of shape {list(info.shape)}; the network "
            f"makes images of shape {list(shape)}"
        )
    if num_classes is not None and (not config.data.conditional or info.num_classes != num_classes):
        raise RunError(
            f"the network is conditioned on {num_classes} classes; the data {config.data.name} has "
            f"{info.num_classes} (with data.conditional={config.data.conditional})"
        )
    if num_classes is None and config.data.conditional:
        raise RunError("the network is unconditional: data.conditional must be false")
    return info
