"""Checkpoints that describe themselves, are written atomically and load without unpickling code.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data:

    format_version, kind ("ddpmlab-checkpoint"), step, config (the resolved config as a dict),
    model, ema, optimizer, lr_scheduler, grad_scaler, batches (data order state), rng (generator
    states), metrics (the last logged values); from a run of several processes (torchrun) also
    ranks (each rank's data stream state and global RNG). The model is always the unwrapped module,
    so a checkpoint loads with any number of processes.

It is written to a temporary file in the same folder and renamed over the target, so an interrupted
save never leaves a half-written checkpoint, and loaded with ``weights_only=True``, so opening a
checkpoint from elsewhere cannot execute code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT_VERSION", "CHECKPOINT_KIND"]

FORMAT_VERSION = 1
CHECKPOINT_KIND = "ddpmlab-checkpoint"


class CheckpointError(ValueError):
    """A file that is not a usable ddpmlab checkpoint."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format version and kind) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, "kind": CHECKPOINT_KIND, **state}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: missing file, not a checkpoint, or a newer format than this version reads.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a ddpmlab checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}; this ddpmlab reads up to {FORMAT_VERSION}: "
            "upgrade ddpmlab"
        )
    return state
