"""Checkpoints that describe themselves, are written atomically, carry a checksum and load without
unpickling code.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data:

    format_version, kind ("ddpmlab-checkpoint"), step, config (the resolved config as a dict),
    model, ema, optimizer, lr_scheduler, grad_scaler, batches (data order state), rng (generator
    states), metrics (the last logged values); from a run of several processes (torchrun) also
    ranks (each rank's data stream state and global RNG); sha256 (see below). The model is always the
    unwrapped module, so a checkpoint loads with any number of processes.

It is written to a temporary file ``.NAME.XXXX.tmp`` in the same folder and renamed over the target,
so an interrupted save (even ``kill -9``) never leaves a half-written checkpoint; the temporary file
such a kill leaves behind is removed by the next save into that folder. A failed write (disk full, a
folder that cannot be written) raises :class:`CheckpointError` and leaves the previous checkpoint as
it was.

``sha256`` is the digest of the content (:func:`content_digest`: every tensor's dtype, shape and
bytes and every other value, in order), recorded when the checkpoint is written and checked when it
is read, so a damaged file (flipped bytes) is refused instead of sampled. Checkpoints written before
the digest existed have none and load unchecked. Loading uses ``weights_only=True``, so opening a
checkpoint from elsewhere cannot execute code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "peek_checkpoint",
    "content_digest",
    "remove_temporaries",
    "keep_recent",
    "CheckpointError",
    "first_line",
    "load_weights",
    "FORMAT_VERSION",
    "CHECKPOINT_KIND",
    "TRAINING_KEYS",
    "WEIGHTS_KEYS",
]

FORMAT_VERSION = 1  # the digest is an optional key: readers of version 1 without it ignore it
CHECKPOINT_KIND = "ddpmlab-checkpoint"
DIGEST_KEY = "sha256"
TRAINING_KEYS = ("step", "config", "model", "ema", "optimizer", "lr_scheduler", "batches", "rng")
WEIGHTS_KEYS = ("step", "config", "model", "ema")  # a weights-only checkpoint (ddpmlab import-diffusers)
MAX_DETAIL = 200  # characters of torch's error kept in a one-line message
KEPT_NAME = "step_{:07d}.pt"  # train.keep_checkpoints: the copies kept beside last.pt


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, foreign, incomplete, or not writable."""


def content_digest(state: Any) -> str:
    """The sha256 (hex) of a checkpoint's content: dicts, lists and tuples in order, every tensor's
    dtype, shape and bytes (whatever its device or memory layout), every other value's type and repr."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor{tuple(value.shape)}{value.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def _map_tensors(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``function`` applied to every tensor in its dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, function) for item in value)
    return value


def remove_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files ``.NAME.*.tmp`` that saves of ``path`` killed mid-write left in its
    folder; returns them. Only call it when no other process is saving ``path`` (the run's lock)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"))
    for temporary in stale:
        temporary.unlink(missing_ok=True)
    return stale


def _glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format version, kind and the content's sha256) to ``path`` atomically;
    returns the path. Temporary files of earlier, interrupted saves of ``path`` are removed first.

    Raises:
        CheckpointError: the file cannot be written (disk full, no permission, ...); the previous
            checkpoint at ``path``, if any, is untouched.
    """
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, "kind": CHECKPOINT_KIND, **state}
    payload = _map_tensors(payload, lambda tensor: tensor.detach().cpu())
    payload[DIGEST_KEY] = content_digest(payload)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(path)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
        _sync_folder(path.parent)
    except OSError as error:
        raise CheckpointError(
            f"cannot write checkpoint {path}: {_reason(error)}; the previous one is kept"
        ) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path


def first_line(error: BaseException) -> str:
    """An error's message cut to its first line (torch's can run to hundreds), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_weights(module: torch.nn.Module, weights: Any, source: str | Path, what: str = "model") -> None:
    """``module.load_state_dict(weights)``, with torch's error (one line per mismatched tensor, often
    hundreds) cut to one line.

    Raises:
        CheckpointError: weights missing, or of other names or shapes than ``module``'s.
    """
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {source} is damaged: its {what} weights are not a state dict")
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        detail = details[0] if details else first_line(error)
        detail = detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 3] + "..."
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise CheckpointError(
            f"the {what} weights of {source} do not fit the model its config describes: {detail}{more}"
        ) from None


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: fsync the folder; elsewhere nothing to do)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _read(path: Path, mmap: bool) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path} (damaged, or not a checkpoint): {first_line(error)}"
        ) from None
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a ddpmlab checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}; this ddpmlab reads up to {FORMAT_VERSION}: "
            "upgrade ddpmlab"
        )
    return state


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: Iterable[str] = ()
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``), check its sha256
    (when it has one) and that it holds every key in ``required`` (e.g. :data:`TRAINING_KEYS`), then
    move its tensors to ``map_location``.

    Raises:
        CheckpointError: missing file, not a checkpoint, damaged (unreadable, or content that does not
            match its sha256), missing a required entry, or a newer format than this version reads.
    """
    path = Path(path)
    state = _read(path, mmap=False)
    recorded = state.pop(DIGEST_KEY, None)
    if recorded is not None and recorded != content_digest(state):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its content does not match the sha256 recorded when it "
            "was written"
        )
    if "optimizer" not in state:  # weights only (an imported model): training starts afresh from them
        required = [key for key in required if key in WEIGHTS_KEYS]
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it has no {', '.join(missing)} entry")
    device = torch.device(map_location)
    if device != torch.device("cpu"):
        state = _map_tensors(state, lambda tensor: tensor.to(device))
    return state


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's entries with its tensors memory-mapped, not read (quick: e.g. to read its
    ``config`` and ``step``); the content is not checked against its sha256 (:func:`load_checkpoint`
    does that). Raises CheckpointError as :func:`load_checkpoint` does for unreadable files."""
    return _read(Path(path), mmap=True)


def keep_recent(path: str | Path, step: int, keep: int) -> Path | None:
    """Keep the checkpoint just written at ``path`` also as ``step_XXXXXXX.pt`` beside it (a hard link:
    no copy, unless the file system has none; then a copy, renamed into place) and delete all but the
    ``keep`` most recent such copies; returns the copy (None when ``keep`` is 0).

    Raises:
        CheckpointError: the copy cannot be made.
    """
    if keep <= 0:
        return None
    path = Path(path)
    kept = path.parent / KEPT_NAME.format(step)
    try:
        kept.unlink(missing_ok=True)
        try:
            os.link(path, kept)
        except OSError:  # no hard links here (some network and FAT file systems)
            partial = kept.with_name(f".{kept.name}.copy.tmp")
            shutil.copyfile(path, partial)
            os.replace(partial, kept)
    except OSError as error:
        raise CheckpointError(f"cannot keep checkpoint {kept}: {_reason(error)}") from None
    copies = sorted(path.parent.glob(KEPT_NAME.replace("{:07d}", "[0-9]" * 7)))
    for old in copies[: max(0, len(copies) - keep)]:
        with contextlib.suppress(OSError):
            old.unlink()
    return kept
