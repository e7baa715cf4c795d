"""Multi-process training and sampling through PyTorch's own engine (``torch.distributed``).

ddpmlab has no launcher of its own: ``torchrun`` starts one process per device and tells each who it
is through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``)::

    torchrun --nproc_per_node 4 -m ddpmlab train --config cifar10.yaml
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m ddpmlab train --config cifar10.yaml

The CLI calls :func:`init` (NCCL on CUDA, gloo on the CPU; one device per local rank) and
:func:`destroy`; everything else asks this module who it is. Without torchrun (or with one process)
every function here is a cheap no-op: rank 0 of a world of 1.
"""

from __future__ import annotations

import inspect
import os
import pickle
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "LaunchEnv",
    "launch_env",
    "init",
    "destroy",
    "is_initialized",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "barrier",
    "resolve_device",
    "local_device",
    "all_mean",
    "any_true",
    "broadcast_object",
    "all_gather_objects",
    "gather_rows",
    "main_first",
]

T = TypeVar("T")


@dataclass(frozen=True)
class LaunchEnv:
    """Who this process is, as torchrun (or any ``env://`` launcher) says."""

    rank: int
    world_size: int
    local_rank: int


def launch_env() -> LaunchEnv | None:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK, or None when not started by torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank_ = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank_))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"RANK={rank_} and WORLD_SIZE={world} do not describe a process group")
    return LaunchEnv(rank_, world, local)


def _uses_cuda(device: str) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def init(device: str = "auto") -> bool:
    """Join the process group torchrun set up (a no-op without torchrun or with one process).

    ``device`` is the run's device setting: CUDA (``auto`` on a GPU machine, ``cuda``) uses NCCL and
    pins this process to ``cuda:LOCAL_RANK``; anything else uses gloo. Returns whether a group of more
    than one process is now active.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    env = launch_env()
    if env is None or env.world_size == 1:
        return False
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    cuda = _uses_cuda(device)
    if cuda:
        torch.cuda.set_device(env.local_rank)
    options: dict[str, Any] = {}
    if cuda and "device_id" in inspect.signature(dist.init_process_group).parameters:
        options["device_id"] = torch.device("cuda", env.local_rank)  # binds NCCL to this device
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        **options,
    )
    return True


def destroy() -> None:
    """Leave the process group (if any)."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    env = launch_env()
    return env.local_rank if env is not None and is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def resolve_device(name: str) -> torch.device:
    """A device name as a ``torch.device``: ``auto`` -> ``cuda`` if available, else ``mps`` (Apple
    GPUs) if available, else ``cpu``; any other name as torch spells it (``cpu``, ``cuda:1``, ``mps``).

    Raises:
        ValueError: a name torch does not know.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}") from None


def local_device(name: str = "auto") -> torch.device:
    """The device of this process: ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` in a process group
    (an explicit ``cuda:N`` is kept as given); otherwise as :func:`resolve_device`."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and is_initialized():
        device = torch.device("cuda", local_rank())
    return device


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_mean(value: float) -> float:
    """The mean of ``value`` over all processes."""
    if world_size() == 1:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (all processes get the same answer)."""
    if world_size() == 1:
        return bool(flag)
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every process (picklable objects)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if world_size() == 1:
        return [obj]
    boxes: list[Any] = [None] * world_size()
    dist.all_gather_object(boxes, obj)
    return boxes


def gather_rows(rows: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
    """Concatenate every process's ``rows`` [counts[rank], ...] in rank order on rank 0 (on the CPU);
    other ranks get None. Each rank may hold a different number of rows (zero included); all must
    have the same trailing shape and dtype, and ``counts`` must be the same list on every rank."""
    if world_size() == 1:
        return rows.cpu()
    if rows.shape[0] != counts[rank()]:
        raise ValueError(f"rank {rank()} holds {rows.shape[0]} rows, not {counts[rank()]}")
    most = max(counts)
    device = _comm_device()
    padded = torch.zeros((most, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    buffers = [torch.empty_like(padded) for _ in counts]
    # all_gather rather than gather: every backend has it (sizes here are one sampling batch per rank).
    dist.all_gather(buffers, padded)
    if not is_main():
        return None
    return torch.cat([buffer[:count].cpu() for buffer, count in zip(buffers, counts)])


def main_first(function, *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` on rank 0 only while the others wait; its result (or its exception, re-raised
    on every rank, so that no process hangs when rank 0 fails) is returned everywhere."""
    if world_size() == 1:
        return function(*args, **kwargs)
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, function(*args, **kwargs))
        except Exception as error:  # handed to the other ranks, then re-raised here too
            outcome = (False, error)
    shared = outcome
    if not outcome[0]:
        try:
            pickle.dumps(outcome[1])
        except Exception:
            shared = (False, RuntimeError(f"rank 0 failed: {outcome[1]}"))
    shared = broadcast_object(shared)
    if not shared[0]:
        if is_main():
            raise outcome[1]
        raise shared[1]
    return shared[1]
