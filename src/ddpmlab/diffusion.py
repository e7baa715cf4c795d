"""The Gaussian diffusion process: forward noising, its posterior, and the training loss.

Notation (Ho et al. 2020, "DDPM"; Salimans & Ho 2022 for v):

=================  =======================  ====================================================
name in code       symbol                   meaning
=================  =======================  ====================================================
``x0``             x_0                      clean data, any shape [B, ...]
``x_t``            x_t                      noised data at timestep t
``t``              t                        int64 [B], index into the schedule, 0 .. T-1
``eps``            epsilon                  standard normal noise, shaped like x0
``v``              v                        sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0
``alpha_bar``      bar(alpha)_t             ``schedule.alphas_cumprod[t]``
=================  =======================  ====================================================

Equations implemented here:

- forward process, closed form (eq. 4):  x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
- posterior (eqs. 6-7): q(x_{t-1} | x_t, x0) = N(mu_tilde, beta_tilde), with
  mu_tilde = coef1_t x0 + coef2_t x_t  (see :mod:`ddpmlab.schedules`)
- x0 from eps (eq. 15 rearranged): x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
- v parameterisation (Salimans & Ho 2022, sec. 4): x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
- simple loss (eq. 14): E_{t, x0, eps} || target - model(x_t, t) ||^2, target = eps, x0 or v
- min-SNR-gamma weighting (Hang et al. 2023): the eps-loss weighted by min(SNR_t, gamma) / SNR_t,
  expressed for each target.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from ddpmlab.schedules import NoiseSchedule

__all__ = ["GaussianDiffusion", "Prediction", "PREDICTION_TYPES", "call_model", "randn"]

PredictionType = Literal["eps", "x0", "v"]
PREDICTION_TYPES = ("eps", "x0", "v")

Generator = torch.Generator | list[torch.Generator] | None


class Prediction(NamedTuple):
    """A model output turned into both quantities the samplers need, each shaped like x_t."""

    eps: torch.Tensor
    x0: torch.Tensor


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape``.

    ``generator`` may be one ``torch.Generator`` for the whole batch or a list of G generators, each
    drawing the noise of shape[0] / G consecutive samples (a "seed block"), so that a block's noise
    depends on its own seed only and not on how blocks are batched or spread over processes.
    Generators must live on ``device`` (or on the CPU, then the noise is moved).
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) == 0 or shape[0] % len(generator) != 0:
            raise ValueError(f"{len(generator)} generators cannot split a batch of {shape[0]} evenly")
        gen_device = generator[0].device
        if any(g.device != gen_device for g in generator):
            block = (shape[0] // len(generator),) + tuple(shape[1:])
            return torch.cat([randn(block, g, device, dtype) for g in generator])
        # Each block is drawn straight into its rows of one buffer (normal_ on a contiguous slice draws
        # exactly what torch.randn of the block's shape draws), then moved to ``device`` once.
        noise = torch.empty(tuple(shape), device=gen_device, dtype=dtype)
        rows = shape[0] // len(generator)
        for index, g in enumerate(generator):
            noise[index * rows : (index + 1) * rows].normal_(generator=g)
        return noise.to(device) if device is not None else noise
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return noise.to(device) if device is not None else noise


# Answers of _accepts_cond for functions and bound methods (keyed by the underlying function, so a
# model's answer is computed once, not at every sampling step: inspect.signature costs ~50 us).
_ACCEPTS_COND_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ACCEPTS_COND_METHODS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _accepts_cond(model: Callable[..., torch.Tensor]) -> bool:
    """Whether ``model`` can be called as model(x_t, t, cond)."""
    target = model.forward if isinstance(model, torch.nn.Module) else model
    if inspect.ismethod(target) and inspect.isfunction(target.__func__):
        cache, key = _ACCEPTS_COND_METHODS, target.__func__
    elif inspect.isfunction(target):
        cache, key = _ACCEPTS_COND_FUNCTIONS, target
    else:  # other callables (partials, objects with __call__, builtins): not cached
        return _signature_accepts_cond(target)
    answer = cache.get(key)
    if answer is None:
        answer = cache[key] = _signature_accepts_cond(target)
    return answer


def _signature_accepts_cond(target: Callable[..., torch.Tensor]) -> bool:
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def call_model(model: Callable[..., torch.Tensor], x_t: torch.Tensor, t: torch.Tensor, cond: Any = None):
    """Call a denoiser as ``model(x_t, t)`` or ``model(x_t, t, cond)``.

    Models without a condition argument are called without one; passing a condition to such a model is
    an error rather than something silently ignored.
    """
    if cond is None:
        return model(x_t, t)
    if not _accepts_cond(model):
        raise TypeError(f"{type(model).__name__} takes no condition, but a condition was given")
    return model(x_t, t, cond)


class GaussianDiffusion:
    """Forward process, posterior and loss for one :class:`NoiseSchedule` and one prediction target.

    The model is passed to each method rather than stored, so the same diffusion serves the training
    model, its EMA copy and guided wrappers. A model is any callable ``model(x_t, t[, cond])`` whose
    output is shaped like ``x_t`` and holds the ``prediction`` target; it is always called with the
    *original* timestep indices (``schedule.timesteps[t]``), also when the schedule was respaced.

    Args:
        schedule: the noise schedule.
        prediction: what the model predicts: ``eps`` (Ho et al.), ``x0``, or ``v`` (Salimans & Ho).
        min_snr_gamma: if set, weight the loss with min-SNR-gamma (Hang et al. 2023, gamma = 5 there).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction: PredictionType = "eps",
        min_snr_gamma: float | None = None,
    ) -> None:
        if prediction not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTION_TYPES)}"
            )
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {min_snr_gamma}")
        self.schedule = schedule
        self.prediction: PredictionType = prediction
        self.min_snr_gamma = min_snr_gamma
        self._coefficient_cache: dict[tuple[str, torch.device, torch.dtype | None], torch.Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def __repr__(self) -> str:
        return f"GaussianDiffusion({self.schedule!r}, prediction={self.prediction!r})"

    # ---------------------------------------------------------------------------------------------
    # Coefficients.
    # ---------------------------------------------------------------------------------------------

    def _on_device(self, name: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``schedule.<name>`` on ``device`` (in ``dtype`` if given), cached."""
        key = (name, device, dtype)
        if key not in self._coefficient_cache:
            values = getattr(self.schedule, name)
            self._coefficient_cache[key] = values.to(device) if dtype is None else values.to(device, dtype)
        return self._coefficient_cache[key]

    def coefficient(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``schedule.<name>[t]`` in ``like``'s dtype, shaped [B, 1, ..., 1] to broadcast over ``like``.

        ``t`` may also be one Python int, the same index for the whole batch (as in the samplers): the
        result is then a 0-dim view into a cached table in ``like``'s dtype and device, the same value
        as for a tensor ``t`` but without a gather, a cast or an allocation at each call.
        """
        if isinstance(t, int):
            return self._on_device(name, like.device, like.dtype)[t]
        t = torch.as_tensor(t, device=like.device)
        values = self._on_device(name, like.device)[t].to(like.dtype)
        if values.ndim == 0:
            return values
        return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original timestep indices a model must be called with for schedule indices ``t``."""
        if not self.schedule.is_respaced:
            return t
        return self._on_device("timesteps", t.device)[t]

    # ---------------------------------------------------------------------------------------------
    # Forward process.
    # ---------------------------------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)  (eq. 4).

        Args:
            x0: [B, ...]; t: int64 [B]; noise: like x0 (standard normal; drawn if None).
        Returns:
            x_t, shaped like x0.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            self.coefficient("sqrt_alphas_cumprod", t, x0) * x0
            + self.coefficient("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [B, ...] and variance [B, 1, ...] of q(x_t | x0)."""
        mean = self.coefficient("sqrt_alphas_cumprod", t, x0) * x0
        variance = 1.0 - self.coefficient("alphas_cumprod", t, x0)
        return mean, variance

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x0) = N(mu_tilde, beta_tilde I)  (eqs. 6-7).

        Returns:
            (mean like x_t, variance [B, 1, ...], log-variance [B, 1, ...] clipped at t = 0, where the
            variance is 0).
        """
        mean = (
            self.coefficient("posterior_mean_coef1", t, x_t) * x0
            + self.coefficient("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self.coefficient("posterior_variance", t, x_t)
        log_variance = self.coefficient("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # ---------------------------------------------------------------------------------------------
    # Conversions between eps, x0 and v (all at the same x_t and t).
    # ---------------------------------------------------------------------------------------------

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
        return (x_t - self.coefficient("sqrt_one_minus_alphas_cumprod", t, x_t) * eps) / self.coefficient(
            "sqrt_alphas_cumprod", t, x_t
        )

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)."""
        return (x_t - self.coefficient("sqrt_alphas_cumprod", t, x_t) * x0) / self.coefficient(
            "sqrt_one_minus_alphas_cumprod", t, x_t
        )

    def v_from_x0_eps(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0."""
        return (
            self.coefficient("sqrt_alphas_cumprod", t, x0) * eps
            - self.coefficient("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        )

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
        return (
            self.coefficient("sqrt_alphas_cumprod", t, x_t) * x_t
            - self.coefficient("sqrt_one_minus_alphas_cumprod", t, x_t) * v
        )

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
        return (
            self.coefficient("sqrt_one_minus_alphas_cumprod", t, x_t) * x_t
            + self.coefficient("sqrt_alphas_cumprod", t, x_t) * v
        )

    def prediction_to_eps_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """Interpret a model output of this diffusion's ``prediction`` type as (eps, x0)."""
        if self.prediction == "eps":
            return Prediction(output, self.x0_from_eps(x_t, t, output))
        if self.prediction == "x0":
            return Prediction(self.eps_from_x0(x_t, t, output), output)
        return Prediction(self.eps_from_v(x_t, t, output), self.x0_from_v(x_t, t, output))

    def eps_to_prediction(self, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`prediction_to_eps_x0`: express eps as this diffusion's target."""
        if self.prediction == "eps":
            return eps
        x0 = self.x0_from_eps(x_t, t, eps)
        return x0 if self.prediction == "x0" else self.v_from_x0_eps(x0, eps, t)

    def predict(
        self,
        model: Callable[..., torch.Tensor],
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: Any = None,
        model_t: torch.Tensor | None = None,
    ) -> Prediction:
        """Run the model once at schedule indices ``t`` (int64 [B]) and return (eps, x0).

        The model is called with the original timesteps (``schedule.timesteps[t]``). Its output is cast
        to x_t's dtype, so a model run under bf16 autocast still yields float32 predictions.

        ``t`` may be one Python int for the whole batch; ``model_t`` then gives the original timesteps
        [B] the model is called with (the samplers make them once per loop, not at every step).
        """
        if model_t is None:
            if isinstance(t, int):
                t_batch = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
                model_t = self.model_timesteps(t_batch)
            else:
                model_t = self.model_timesteps(t)
        output = call_model(model, x_t, model_t, cond)
        if output.shape != x_t.shape:
            raise ValueError(
                f"the model returned shape {list(output.shape)} for x_t of shape {list(x_t.shape)}"
            )
        return self.prediction_to_eps_x0(output.to(x_t.dtype), x_t, t)

    # ---------------------------------------------------------------------------------------------
    # Training.
    # ---------------------------------------------------------------------------------------------

    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model should output for x_t = q_sample(x0, t, eps)."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self.v_from_x0_eps(x0, eps, t)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights [B] of the min-SNR-gamma loss (None when unweighted).

        The MSE on eps, x0 and v differ by factors of SNR: ||x0 err||^2 = ||eps err||^2 / SNR and
        ||v err||^2 = ||eps err||^2 (1 + SNR) / SNR. Each weight below makes the loss equal to
        min(SNR, gamma) / SNR * ||eps err||^2, Hang et al.'s weighting of the eps-loss.
        """
        if self.min_snr_gamma is None:
            return None
        snr = self._on_device("snr", t.device)[t].float()
        clipped = snr.clamp(max=self.min_snr_gamma)
        if self.prediction == "eps":
            return clipped / snr
        if self.prediction == "x0":
            return clipped
        return clipped / (snr + 1.0)

    def draw_t_and_noise(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The timesteps and noise of a training batch of ``shape`` [B, ...]: t ~ U{0, ..., T-1} [B]
        (int64) then eps ~ N(0, I) (``shape``, ``dtype``), drawn in that order from ``generator`` (the
        global RNG when None), each unless given; both returned on ``device``. Every training objective
        draws through here, so runs on one or several processes draw the same numbers."""
        if t is None:
            t = torch.randint(
                0, self.num_timesteps, (shape[0],), generator=generator, device=_gen_device(generator)
            )
        t = t.to(device)
        if noise is None:
            noise = randn(tuple(shape), generator, device, dtype)
        return t, noise

    def training_loss(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        cond: Any = None,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The simple DDPM loss (eq. 14, Algorithm 1) for one batch, as a scalar.

        Draws t uniformly from {0, ..., T-1} and eps ~ N(0, I) (both from ``generator`` when given,
        unless passed in), noises x0 to x_t, and returns the mean over the batch of the per-sample
        mean squared error between the model's output and the target (optionally min-SNR weighted).

        Args:
            x0: [B, ...] clean data; cond: the model's condition for each sample, or None.
        """
        t, noise = self.draw_t_and_noise(x0.shape, generator, x0.device, x0.dtype, t, noise)
        x_t = self.q_sample(x0, t, noise)
        output = call_model(model, x_t, self.model_timesteps(t), cond)
        if output.shape != x0.shape:
            raise ValueError(
                f"the model returned shape {list(output.shape)} for data of shape {list(x0.shape)}"
            )
        target = self.training_target(x0, noise, t)
        per_sample = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)
        weights = self.loss_weights(t)
        if weights is not None:
            per_sample = per_sample * weights
        return per_sample.mean()


def _gen_device(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None
