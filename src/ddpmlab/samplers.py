"""Every sampler by name: ``SAMPLERS`` and :func:`make_sampler`, the one factory configs, the run layer
and the CLI use. DDPM and DDIM live in :mod:`ddpmlab.sampling`, DPM-Solver++ and Heun in
:mod:`ddpmlab.solvers`; this module sits above both."""

from __future__ import annotations

from typing import Any

from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.sampling import DDIMSampler, DDPMSampler, Sampler
from ddpmlab.solvers import DPMSolverSampler, HeunSampler

__all__ = ["SAMPLERS", "make_sampler", "sampler_options"]

SAMPLERS: dict[str, type[Sampler]] = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "dpm++1m": DPMSolverSampler,
    "dpm++2m": DPMSolverSampler,
    "dpm++3m": DPMSolverSampler,
    "sde-dpm++2m": DPMSolverSampler,
    "heun": HeunSampler,
}
"""Every sampler by name (name -> class; several DPM-Solver++ names share a class, see ``_FIXED``)."""

# What a name fixes, and the keyword options each name accepts besides num_steps.
_FIXED: dict[str, dict[str, Any]] = {
    "dpm++1m": {"order": 1},
    "dpm++2m": {"order": 2},
    "dpm++3m": {"order": 3},
    "sde-dpm++2m": {"order": 2, "stochastic": True},
}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "ddpm": ("variance", "clip_x0", "spacing"),
    "ddim": ("eta", "clip_x0", "spacing"),
    "dpm++1m": ("clip_x0", "spacing"),
    "dpm++2m": ("clip_x0", "spacing"),
    "dpm++3m": ("clip_x0", "spacing"),
    "sde-dpm++2m": ("clip_x0", "spacing"),
    "heun": ("clip_x0", "spacing"),
}


def sampler_options(name: str) -> tuple[str, ...]:
    """The keyword options :func:`make_sampler` accepts for sampler ``name`` (besides num_steps)."""
    _check_name(name)
    return _OPTIONS[name]


def _check_name(name: str) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def make_sampler(name: str, diffusion: GaussianDiffusion, num_steps: int | None = None, **options) -> Sampler:
    """Build a sampler by name: ``ddpm``, ``ddim``, ``dpm++1m``, ``dpm++2m``, ``dpm++3m``, ``sde-dpm++2m``
    (stochastic) or ``heun``.

    Args:
        num_steps: K; None for the class's default (DDPM: all T steps, DDIM: 50, DPM-Solver++: 20,
            Heun: 10, i.e. 19 evaluations).
        options: the keyword options of that sampler, :func:`sampler_options` (``variance`` for ddpm
            only, ``eta`` for ddim only; ``clip_x0`` and ``spacing`` for all).

    Raises:
        ValueError: an unknown name, or an option the sampler does not take (named in the message).
    """
    _check_name(name)
    unknown = [key for key in options if key not in _OPTIONS[name]]
    if unknown:
        raise ValueError(
            f"sampler {name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(_OPTIONS[name])}"
        )
    if num_steps is not None:
        options["num_steps"] = num_steps
    return SAMPLERS[name](diffusion, **options, **_FIXED.get(name, {}))
