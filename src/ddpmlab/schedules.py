"""Noise schedules: how much noise the forward process adds at each step.

A schedule is fully described by its betas, beta_t = Var of the noise added at step t
(Ho et al. 2020, eq. 2: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)).
Everything else follows from them:

=======================  =====================  ==========================================
attribute                paper symbol           definition
=======================  =====================  ==========================================
``betas``                beta_t                 given
``alphas``               alpha_t                1 - beta_t
``alphas_cumprod``       alpha_bar_t            prod_{s<=t} alpha_s   (eq. 4)
``alphas_cumprod_prev``  alpha_bar_{t-1}        with alpha_bar_{-1} = 1
``posterior_variance``   beta_tilde_t           (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t  (eq. 7)
``posterior_mean_coef1`` coefficient of x_0     sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)  (eq. 7)
``posterior_mean_coef2`` coefficient of x_t     sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
``snr``                  SNR(t)                 alpha_bar_t / (1 - alpha_bar_t)  (Kingma et al. 2021)
``log_snr``              lambda_t               log SNR(t)
``timesteps``            -                      the original timestep index of each entry (respacing)
=======================  =====================  ==========================================

Timesteps are 0-based indices: t = 0 is the first noising step, t = T - 1 the last.

Schedules are built by name (``linear``, ``cosine``, ``quadratic``, ``sigmoid``), from a callable
alpha_bar(tau) on tau in [0, 1], from a ``"package.module:function"`` path to such a callable, or from
an explicit array of betas. ``respace`` keeps a subset of the timesteps for faster sampling.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import torch

__all__ = [
    "NoiseSchedule",
    "make_schedule",
    "respace",
    "respaced_timesteps",
    "betas_from_alpha_bar",
    "schedule_names",
    "ScheduleError",
    "structure_timesteps",
]

AlphaBarFn = Callable[[torch.Tensor], torch.Tensor]
ScheduleSpec = Union[str, AlphaBarFn, Sequence[float], np.ndarray, torch.Tensor]  # noqa: UP007
Spacing = Literal["trailing", "linspace", "leading", "logsnr"]
SPACINGS = ("trailing", "linspace", "leading", "logsnr")

# The largest beta any schedule defined through alpha_bar may take: Nichol & Dhariwal (2021, sec. 3.2)
# clip at 0.999 so that the last step, where alpha_bar -> 0, does not become singular.
MAX_BETA = 0.999
MAX_TIMESTEPS = 1_000_000  # T of a schedule built here (1000 is usual); more would only exhaust memory


class ScheduleError(ValueError):
    """A schedule that cannot define a forward process (bad betas, unknown name, ...)."""


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete noise schedule and every quantity derived from it, as float64 tensors of shape [T].

    Build one with :func:`make_schedule` (or directly from betas). It holds no model and no device
    state; :class:`ddpmlab.GaussianDiffusion` moves the coefficients it needs to the data's device.

    Args:
        betas: float tensor [T], every entry in (0, 1).
        name: a label for plots and tables.
        timesteps: int64 [T], the original timestep index that each entry stands for. ``arange(T)``
            unless the schedule was respaced, in which case models are still called with these indices.
    """

    betas: torch.Tensor
    name: str = "custom"
    timesteps: torch.Tensor | None = None

    alphas: torch.Tensor = field(init=False, repr=False)
    alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    alphas_cumprod_prev: torch.Tensor = field(init=False, repr=False)
    sqrt_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    sqrt_one_minus_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    posterior_variance: torch.Tensor = field(init=False, repr=False)
    posterior_log_variance_clipped: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef1: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef2: torch.Tensor = field(init=False, repr=False)
    snr: torch.Tensor = field(init=False, repr=False)
    log_snr: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = _validated_betas(self.betas)
        T = betas.numel()
        timesteps = torch.arange(T) if self.timesteps is None else torch.as_tensor(self.timesteps)
        timesteps = timesteps.to(torch.int64)
        if timesteps.shape != (T,):
            raise ScheduleError(f"timesteps must have shape [{T}], got {list(timesteps.shape)}")
        if T > 1 and not bool((timesteps[1:] > timesteps[:-1]).all()):
            raise ScheduleError("timesteps must be strictly increasing")

        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # beta_tilde_0 = 0: the log would be -inf, so (as in Ho et al.'s code) the first entry borrows
        # the second one. Only the log is clipped; the variance itself stays exact.
        log_var_source = posterior_variance.clone()
        if T > 1:
            log_var_source[0] = posterior_variance[1]
        else:
            log_var_source[0] = betas[0]
        snr = alphas_cumprod / (1.0 - alphas_cumprod)

        derived = {
            "betas": betas,
            "timesteps": timesteps,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_var_source.log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
            "snr": snr,
            "log_snr": snr.log(),
        }
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    @property
    def num_timesteps(self) -> int:
        """T, the number of steps of this (possibly respaced) schedule."""
        return self.betas.numel()

    @property
    def num_train_timesteps(self) -> int:
        """The number of steps of the schedule the model was trained with (last original index + 1)."""
        return int(self.timesteps[-1]) + 1

    @property
    def is_respaced(self) -> bool:
        return self.num_timesteps != self.num_train_timesteps

    def __len__(self) -> int:
        return self.num_timesteps

    def __repr__(self) -> str:
        respaced = f", respaced from {self.num_train_timesteps}" if self.is_respaced else ""
        return f"NoiseSchedule(name={self.name!r}, T={self.num_timesteps}{respaced})"


def _validated_betas(betas: object) -> torch.Tensor:
    try:
        betas = torch.as_tensor(np.asarray(betas, dtype=np.float64) if not torch.is_tensor(betas) else betas)
    except (TypeError, ValueError) as error:
        raise ScheduleError(f"betas must be an array of numbers: {error}") from None
    betas = betas.detach().to(device="cpu", dtype=torch.float64).flatten()
    if betas.numel() == 0:
        raise ScheduleError("a schedule needs at least one timestep")
    if not bool(torch.isfinite(betas).all()):
        raise ScheduleError("betas contain NaN or infinity")
    bad = (betas <= 0) | (betas >= 1)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise ScheduleError(
            f"every beta must lie in (0, 1), but beta[{index}] = {float(betas[index]):.6g}; "
            "a beta of 0 adds no noise (alpha_bar does not decrease) and a beta of 1 destroys x_t-1 "
            "entirely"
        )
    return betas


# --------------------------------------------------------------------------------------------------
# Named schedules. Each returns betas [T] as float64.
# --------------------------------------------------------------------------------------------------


def _scaled_endpoints(num_timesteps: int, beta_start: float, beta_end: float) -> tuple[float, float]:
    """Ho et al.'s endpoints are for T = 1000; improved-diffusion scales them by 1000 / T so that the
    total amount of noise (and so alpha_bar at the end) stays about the same for other T."""
    scale = 1000.0 / num_timesteps
    if not all(isinstance(b, (int, float)) and 0 < b < 1 for b in (beta_start, beta_end)):
        raise ScheduleError(f"beta_start and beta_end must lie in (0, 1), got {beta_start!r}, {beta_end!r}")
    if beta_end * scale >= 1.0:
        raise ScheduleError(
            f"T = {num_timesteps} is too small for beta_end = {beta_end} scaled by 1000/T (beta would reach "
            f"{beta_end * scale:.3g}); use more timesteps or a smaller beta_end"
        )
    return beta_start * scale, beta_end * scale


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020, sec. 4): betas rising linearly from 1e-4 to 0.02 over T = 1000 steps."""
    start, end = _scaled_endpoints(num_timesteps, beta_start, beta_end)
    return torch.linspace(start, end, num_timesteps, dtype=torch.float64)


def quadratic_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas whose square roots rise linearly: slow at first, fast at the end
    (diffusers' ``scaled_linear``)."""
    start, end = _scaled_endpoints(num_timesteps, beta_start, beta_end)
    return torch.linspace(math.sqrt(start), math.sqrt(end), num_timesteps, dtype=torch.float64) ** 2


def sigmoid_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, steepness: float = 6.0
) -> torch.Tensor:
    """Betas following a logistic curve from beta_start to beta_end (sigmoid of linspace(-k, k))."""
    start, end = _scaled_endpoints(num_timesteps, beta_start, beta_end)
    ramp = torch.sigmoid(torch.linspace(-steepness, steepness, num_timesteps, dtype=torch.float64))
    return start + (end - start) * ramp


def cosine_alpha_bar(tau: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021, eq. 17) without normalisation:
    f(tau) = cos^2((tau + s) / (1 + s) * pi / 2)."""
    return torch.cos((tau + s) / (1.0 + s) * math.pi / 2.0) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Nichol & Dhariwal (2021, eq. 17): alpha_bar_t = f(t) / f(0), betas clipped at ``max_beta``."""
    return betas_from_alpha_bar(lambda tau: cosine_alpha_bar(tau, s), num_timesteps, max_beta)


_NAMED_SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "quadratic": quadratic_betas,
    "sigmoid": sigmoid_betas,
}


def schedule_names() -> tuple[str, ...]:
    """The names :func:`make_schedule` understands."""
    return tuple(_NAMED_SCHEDULES)


# --------------------------------------------------------------------------------------------------
# User-defined schedules.
# --------------------------------------------------------------------------------------------------


def _evaluate_alpha_bar(fn: AlphaBarFn, tau: torch.Tensor) -> torch.Tensor:
    """Call ``fn`` on a float64 tensor of times; fall back to one Python float at a time for functions
    written with ``math`` rather than ``torch``."""
    try:
        values = fn(tau)
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.shape != tau.shape:
            raise TypeError("shape mismatch")
    except (TypeError, ValueError, RuntimeError):
        try:
            values = torch.tensor([float(fn(float(x))) for x in tau], dtype=torch.float64)
        except (TypeError, ValueError, ArithmeticError) as error:
            raise ScheduleError(f"the alpha_bar function failed on tau in [0, 1]: {error}") from None
    return values


def betas_from_alpha_bar(fn: AlphaBarFn, num_timesteps: int, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Discretise a continuous alpha_bar(tau), tau in [0, 1], into T betas (Nichol & Dhariwal 2021):

        beta_t = min(1 - f((t + 1) / T) / f(t / T), max_beta),   t = 0 .. T-1,

    so that alpha_bar_t = prod_s (1 - beta_s) = f((t + 1) / T) / f(0) wherever no clipping happens.
    ``fn`` must be positive and decreasing; it need not start at exactly 1.
    """
    if isinstance(max_beta, bool) or not isinstance(max_beta, (int, float)) or not 0 < max_beta < 1:
        raise ScheduleError(f"max_beta must lie in (0, 1), got {max_beta!r}")
    tau = torch.linspace(0.0, 1.0, num_timesteps + 1, dtype=torch.float64)
    values = _evaluate_alpha_bar(fn, tau)
    if not bool(torch.isfinite(values).all()):
        raise ScheduleError("the alpha_bar function returned NaN or infinity")
    if bool((values[:-1] <= 0).any()):
        raise ScheduleError("the alpha_bar function must be positive on [0, 1)")
    if bool((values[1:] >= values[:-1]).any()):
        raise ScheduleError("the alpha_bar function must be strictly decreasing on [0, 1]")
    return (1.0 - values[1:] / values[:-1]).clamp(max=max_beta)


def _load_callable(path: str) -> AlphaBarFn:
    """Import ``"package.module:function"`` (the module must be importable from the current directory
    or the Python path)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ScheduleError(f"a schedule path must look like 'package.module:function', got {path!r}")
    added = os.getcwd() not in sys.path
    if added:  # let "my_schedules:fn" find my_schedules.py in the current directory, as a user expects
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ScheduleError(f"cannot import module {module_name!r} for schedule {path!r}: {error}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ScheduleError(f"{path!r}: module {module_name!r} has no function {attribute!r}")
    return fn


def make_schedule(spec: ScheduleSpec, num_timesteps: int = 1000, **options: float) -> NoiseSchedule:
    """Build a :class:`NoiseSchedule`.

    Args:
        spec: one of
            - a name from :func:`schedule_names` (``linear``, ``cosine``, ``quadratic``, ``sigmoid``);
              ``options`` are passed to it (``beta_start``, ``beta_end``, ``s``, ``steepness``, ...);
            - ``"package.module:function"`` or a Python callable alpha_bar(tau), tau in [0, 1],
              discretised by :func:`betas_from_alpha_bar` (option ``max_beta``);
            - an explicit sequence / array / tensor of betas (then ``num_timesteps`` is ignored).
        num_timesteps: T.

    Example:
        >>> make_schedule("linear", 1000).alphas_cumprod[-1]   # about 4e-5
        >>> make_schedule(lambda tau: 1 - tau ** 2 + 1e-4, 1000)
    """
    if isinstance(spec, str) and spec in _NAMED_SCHEDULES:
        _check_timesteps(num_timesteps)
        try:
            betas = _NAMED_SCHEDULES[spec](num_timesteps, **options)
        except ScheduleError:
            raise
        except (TypeError, ValueError, ArithmeticError, RuntimeError) as error:  # options of the wrong kind
            raise ScheduleError(f"schedule {spec!r}: {error}") from None
        return NoiseSchedule(betas, name=spec)
    if isinstance(spec, str):
        if ":" not in spec:
            raise ScheduleError(
                f"unknown schedule {spec!r}; choose one of {', '.join(schedule_names())} "
                "or give 'package.module:function' returning alpha_bar(tau)"
            )
        _check_timesteps(num_timesteps)
        return NoiseSchedule(betas_from_alpha_bar(_load_callable(spec), num_timesteps, **options), name=spec)
    if callable(spec):
        _check_timesteps(num_timesteps)
        name = getattr(spec, "__name__", "custom")
        return NoiseSchedule(betas_from_alpha_bar(spec, num_timesteps, **options), name=name)
    if isinstance(spec, (int, float)) or (torch.is_tensor(spec) and spec.ndim == 0):
        raise ScheduleError(f"a schedule is a name, a function or an array of betas, not the number {spec!r}")
    return NoiseSchedule(spec, name="custom")


def _check_timesteps(num_timesteps: int) -> None:
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ScheduleError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    if num_timesteps > MAX_TIMESTEPS:
        raise ScheduleError(f"num_timesteps must be at most {MAX_TIMESTEPS:,}, got {num_timesteps:,}")


# --------------------------------------------------------------------------------------------------
# Respacing.
# --------------------------------------------------------------------------------------------------


def respaced_timesteps(
    num_train_timesteps: int,
    num_steps: int,
    spacing: Spacing = "trailing",
    log_snr: torch.Tensor | None = None,
) -> list[int]:
    """Which of the T training timesteps a K-step sampler visits, in increasing order.

    Every spacing but ``leading`` visits T-1, the noisiest step the model was trained on, so that a
    sampler starts where x_T ~ N(0, I) is (nearly) the truth; a one-step sampler visits T-1 alone.

    - ``trailing`` (default): K evenly spaced steps counted back from the last one, T-1, T-1-T/K, ...
      Lin et al. (2024, "Common diffusion noise schedules and sample steps are flawed", table 2) show
      that the older ``leading`` spacing, which starts at e.g. t = 981 of 1000 for 50 steps (diffusers
      issue 2585), leaves signal in x_T that the sampler never removes. Its last visited step is T/K - 1,
      so the sampler's final jump to the clean data starts from a noise level that shrinks with K: the
      default for DDPM and DDIM, which are first order anyway.
    - ``linspace``: uniform in time, K steps evenly spread from 0 to T-1, both ends included (K = 1: T-1
      alone). The last visited step is t = 0 whatever K, so the final jump is from the smallest noise
      level: the spacing under which an ODE solver's error shrinks at its order as K grows.
    - ``logsnr``: uniform in log-SNR (DPM-Solver's "logSNR" time steps, Lu et al. 2022, sec. 3.3): the
      steps whose log SNR_t lies nearest K values evenly spread from log SNR_{T-1} to log SNR_0, both
      ends included. Exponential integrators (DPM-Solver) are written in lambda = log SNR / 2, and equal
      steps in it give every step the same size h. It spends most steps at low noise (for the linear
      schedule 6 of K = 20 steps lie below t = 50); where the schedule's log SNR falls faster than one
      target gap per timestep (near t = 0 for large K) consecutive timesteps are taken instead. Needs
      ``log_snr``, the schedule's [T] log SNR (``NoiseSchedule.log_snr``).
    - ``leading``: 0, T/K, 2T/K, ... as in the DDIM paper's code; kept to reproduce older results only.
      It does not include T-1, and for K = 1 it is [0]: a one-step sampler would take the noise x_T for
      data at t = 0, so the samplers refuse that combination.

    Raises:
        ScheduleError: for an unknown spacing, K outside [1, T], or ``logsnr`` without ``log_snr`` [T].
    """
    if spacing not in SPACINGS:
        raise ScheduleError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= num_train_timesteps:
        raise ScheduleError(f"num_steps must be between 1 and {num_train_timesteps}, got {num_steps}")
    T, K = num_train_timesteps, num_steps
    if spacing == "trailing":
        steps = np.round(T - np.arange(K) * T / K).astype(np.int64) - 1
    elif spacing == "linspace":
        # np.linspace(0, T - 1, 1) is [0]: one step must start from the noisiest timestep instead
        steps = np.array([T - 1]) if K == 1 else np.round(np.linspace(0, T - 1, K)).astype(np.int64)
    elif spacing == "logsnr":
        steps = _log_snr_uniform_steps(T, K, log_snr)
    else:
        steps = np.arange(K, dtype=np.int64) * (T // K)
    steps = sorted(set(int(s) for s in steps))
    if len(steps) != K:  # rounding collisions cannot happen for K <= T, but fail loudly if they do
        raise ScheduleError(f"{spacing} spacing gave {len(steps)} distinct steps instead of {K}")
    return steps


def _log_snr_uniform_steps(T: int, K: int, log_snr: torch.Tensor | None) -> np.ndarray:
    """K distinct timesteps, 0 and T-1 included (T-1 alone for K = 1), whose log SNR is as close as
    possible to K values evenly spaced between log SNR_0 and log SNR_{T-1}."""
    if log_snr is None:
        raise ScheduleError("logsnr spacing needs the schedule's log SNR (respace passes it)")
    values = torch.as_tensor(log_snr, dtype=torch.float64).flatten().numpy()
    if values.shape != (T,) or not bool(np.all(np.diff(values) < 0)):
        raise ScheduleError(f"logsnr spacing needs a strictly decreasing log SNR of length {T}")
    if K == 1:
        return np.array([T - 1])
    targets = np.linspace(values[0], values[-1], K)
    # log SNR falls with t: interpolate t(log SNR) on the reversed (increasing) table, then round
    steps = np.round(np.interp(targets[::-1], values[::-1], np.arange(T)[::-1]))[::-1].astype(np.int64)
    steps[0], steps[-1] = 0, T - 1
    for i in range(1, K):  # where rounding merged neighbours, take the next timestep up ...
        steps[i] = max(steps[i], steps[i - 1] + 1)
    steps[-1] = T - 1
    for i in range(K - 2, -1, -1):  # ... and keep the top at T-1 (K <= T leaves room for every step)
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


def respace(
    schedule: NoiseSchedule, num_steps: int | Sequence[int], spacing: Spacing = "trailing"
) -> NoiseSchedule:
    """Keep a subset of timesteps, S = [s_0 < ... < s_{K-1}], for sampling in K steps.

    alpha_bar is kept exactly at the kept steps, and the betas are recomputed from it
    (Nichol & Dhariwal 2021, sec. 4): beta'_i = 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}},
    with alpha_bar_{s_{-1}} = 1. The result's ``timesteps`` holds the original indices s_i, which is
    what a model trained on the full schedule must be called with.

    Args:
        num_steps: K (the steps are chosen by ``spacing``, see :func:`respaced_timesteps`),
            or an explicit increasing list of indices into ``schedule``.
    """
    if spacing not in SPACINGS:
        raise ScheduleError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if isinstance(num_steps, int):
        if num_steps == schedule.num_timesteps:
            return schedule
        kept = respaced_timesteps(schedule.num_timesteps, num_steps, spacing, schedule.log_snr)
    else:
        kept = sorted(int(s) for s in num_steps)
        if not kept or kept[0] < 0 or kept[-1] >= schedule.num_timesteps or len(set(kept)) != len(kept):
            raise ScheduleError(f"respace: steps must be distinct indices in [0, {schedule.num_timesteps})")
    index = torch.tensor(kept, dtype=torch.int64)
    kept_alphas_cumprod = schedule.alphas_cumprod[index]
    previous = torch.cat([kept_alphas_cumprod.new_ones(1), kept_alphas_cumprod[:-1]])
    betas = 1.0 - kept_alphas_cumprod / previous
    return NoiseSchedule(betas, name=schedule.name, timesteps=schedule.timesteps[index])


# --------------------------------------------------------------------------------------------------
# Inspection.
# --------------------------------------------------------------------------------------------------


def structure_timesteps(
    schedule: NoiseSchedule, thresholds: Sequence[float] = (0.5, 0.1, 0.01)
) -> dict[float, int | None]:
    """For each threshold, the first timestep t at which alpha_bar_t < threshold (None if never).

    alpha_bar_t is the fraction of the signal's variance left in x_t, so these timesteps say how long a
    schedule keeps the data structured: a later crossing means more steps spent on recognisable data.
    """
    result: dict[float, int | None] = {}
    for threshold in thresholds:
        below = (schedule.alphas_cumprod < threshold).nonzero()
        result[threshold] = int(schedule.timesteps[below[0]]) if below.numel() else None
    return result
