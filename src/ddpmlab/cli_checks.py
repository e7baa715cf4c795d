"""What the ``ddpmlab`` command checks before it loads or writes anything: the leftovers of the
argument parse (with a hint for dotted overrides placed before an option), the device, the numbers of
a sampling request and figure destinations. Each problem is a :class:`UsageError`: one line, exit 2."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["UsageError", "FIGURE_SUFFIXES", "parse_args", "check_device", "check_numbers", "check_figure"]

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


class UsageError(Exception):
    """An error caused by the user's input: printed on one line, exit status 2."""


def parse_args(parser, argv: list[str] | None):
    """``parser``'s parse of ``argv``; arguments left over are refused in one line, with a hint when
    they are dotted overrides placed before a later option (argparse takes overrides in one run only)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(args, "command", None) or ""
        subparser = parser.commands.get(command, parser)
        overrides = [token for token in extra if "=" in token and not token.startswith("-")]
        hint = ""
        if overrides and hasattr(args, "overrides"):
            hint = f" (put dotted overrides such as {overrides[0]} after all the options)"
        elif overrides:
            hint = f" ({command} takes no key=value overrides)"
        subparser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def check_device(name: str) -> None:
    """Refuse a device this machine does not have (``--device cuda`` without a GPU), before anything
    is loaded onto it."""
    import torch

    from ddpmlab.distributed import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"--device {name}: no Apple GPU (MPS) is available here; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: ddpmlab runs on cpu, cuda or mps")


def check_numbers(args) -> None:
    """Counts and scales of a sampling request: counts positive, scales finite, seeds in range."""
    from ddpmlab.config import MAX_SEED

    for option in ("num", "batch_size", "steps"):
        value = getattr(args, option, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be positive, got {value}")
    for option in ("guidance", "eta", "classifier_scale"):
        value = getattr(args, option, None)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{option.replace('_', '-')} must be a finite number, got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be from 0 to {MAX_SEED}, got {args.seed}")


def check_figure(out: str) -> None:
    """A picture's destination: a known figure suffix, in a folder that exists and can be written."""
    from ddpmlab.export import check_destination

    if Path(out).suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out must end in one of {', '.join(FIGURE_SUFFIXES)}, got {out}")
    check_destination(out)
