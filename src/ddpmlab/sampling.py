"""Samplers of the reverse process: DDPM ancestral sampling and DDIM (DPM-Solver++ and Heun live in
:mod:`ddpmlab.solvers`).

All of them walk a (possibly respaced) schedule from its last index K-1 down to 0 with one shared loop,
:meth:`Sampler.steps`, a generator that yields every step (for trajectories, animations and progress
bars). Subclasses only say how one step moves x_t to x_{t-1} given the model's (eps, x0) prediction
(and, for multistep solvers, the predictions of the previous steps; for Heun, a way to call the model
once more):

- :class:`DDPMSampler`, Ho et al. (2020) Algorithm 2:
  x_{t-1} = mu_tilde(x_t, x0_hat) + sigma_t z, with sigma_t^2 = beta_tilde_t ("fixed_small") or
  beta_t ("fixed_large"); on a respaced schedule the betas are the respaced ones (Nichol & Dhariwal 2021).
- :class:`DDIMSampler`, Song et al. (2021) eq. 12:
  x_{t-1} = sqrt(alpha_bar_{t-1}) x0_hat + sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps_hat + sigma_t z,
  sigma_t = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t-1}).
  eta = 0 is deterministic; eta = 1 has the DDPM "fixed_small" variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ddpmlab.diffusion import GaussianDiffusion, Generator, Prediction, randn
from ddpmlab.schedules import Spacing, respace

__all__ = [
    "Sampler",
    "DDPMSampler",
    "DDIMSampler",
    "SamplerStep",
    "VARIANCE_TYPES",
    "accumulate",
    "add_scaled_noise",
]

VarianceType = Literal["fixed_small", "fixed_large"]
PredictFn = Callable[[torch.Tensor, int], Prediction]
VARIANCE_TYPES = ("fixed_small", "fixed_large")


@dataclass(frozen=True)
class SamplerStep:
    """One step of the reverse process.

    Attributes:
        index: position in the sampler's schedule, K-1 down to 0.
        timestep: the original timestep the model was called with.
        x_t: the input of this step, [B, ...].
        x0: the model's prediction of the clean sample at this step (after clipping, if any).
        eps: the model's prediction of the noise in x_t.
        x_prev: the output of this step, x at the next lower noise level (the final sample when index = 0).
    """

    index: int
    timestep: int
    x_t: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    x_prev: torch.Tensor


def _grad_context(model: Callable[..., torch.Tensor]):
    """inference_mode is fastest, but guidance by a classifier's gradient needs autograd."""
    return torch.no_grad() if getattr(model, "requires_grad_for_sampling", False) else torch.inference_mode()


class Sampler:
    """The loop shared by every sampler. Subclasses implement :meth:`step`.

    Args:
        diffusion: the diffusion the model was trained with (its full schedule).
        num_steps: K, how many reverse steps to take; the schedule is respaced to K steps
            (``spacing``, see :func:`ddpmlab.schedules.respaced_timesteps`). None: every training step.
        clip_x0: clamp the predicted x0 to [-clip_x0, clip_x0] (1.0 for images in [-1, 1]); None: no clamp.
        spacing: which K of the T timesteps to visit (:func:`ddpmlab.schedules.respaced_timesteps`).

    Raises:
        ValueError: clip_x0 <= 0; ``leading`` spacing with one step (it would visit t = 0 only).
        ScheduleError: an unknown spacing, or num_steps outside [1, T].

    Class attributes a subclass may set: ``history_length``, how many previous steps' predictions
    :meth:`step` receives (multistep solvers); ``evaluations_per_step``, model calls per step but the
    last (see :attr:`num_evaluations`).
    """

    history_length = 0
    evaluations_per_step = 1

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        num_steps: int | None = None,
        clip_x0: float | None = None,
        spacing: Spacing = "trailing",
    ) -> None:
        if clip_x0 is not None and clip_x0 <= 0:
            raise ValueError(f"clip_x0 must be positive, got {clip_x0}")
        num_steps = diffusion.num_timesteps if num_steps is None else num_steps
        if spacing == "leading" and num_steps == 1 and diffusion.num_timesteps > 1:
            raise ValueError(
                "leading spacing with one step visits t = 0 only (it would return the noise nearly "
                "unchanged); use trailing, linspace or logsnr spacing"
            )
        self.train_diffusion = diffusion
        self.schedule = respace(diffusion.schedule, num_steps, spacing)
        self.diffusion = GaussianDiffusion(self.schedule, diffusion.prediction)
        self.clip_x0 = clip_x0
        self.spacing = spacing
        self._coefficients = self._per_step_coefficients()
        self._original_timesteps: list[int] = self.schedule.timesteps.tolist()

    @property
    def num_steps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def timesteps(self) -> list[int]:
        """The original timesteps visited, in the order they are visited (noisiest first)."""
        return self.schedule.timesteps.flip(0).tolist()

    @property
    def num_evaluations(self) -> int:
        """How many times :meth:`sample` calls the model (NFE): one per step, except for solvers that
        evaluate it ``evaluations_per_step`` times per step (Heun: twice) and once at the last step.
        A guided model counts once per call (classifier-free guidance batches its two branches)."""
        return self.evaluations_per_step * (self.num_steps - 1) + 1

    def _per_step_coefficients(self) -> dict[str, list[float]]:
        """Every scalar a step needs, gathered once as Python floats (no device syncs in the loop)."""
        return {name: values.tolist() for name, values in self._coefficient_tensors().items()}

    def _coefficient_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------

    def predict(
        self,
        model: Callable[..., torch.Tensor],
        x_t: torch.Tensor,
        index: int,
        cond: Any = None,
        model_t: torch.Tensor | None = None,
    ) -> Prediction:
        """The model's (eps, x0) at schedule index ``index`` for every sample, x0 clipped if asked.

        ``model_t``: the original timestep of ``index`` as a tensor [B] on x_t's device (made here if None).
        The conversions between the model's output, eps and x0 use the step's scalar coefficients.
        """
        index = int(index)
        eps, x0 = self.diffusion.predict(model, x_t, index, cond, model_t)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = self.diffusion.eps_from_x0(x_t, index, x0)
        return Prediction(eps, x0)

    def _model_timesteps(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """For every schedule index, its original timestep as a tensor [B] on ``device``: views of one
        tensor [K] made once per loop (each a broadcast of one element, as models accept), so the loop
        allocates and gathers no timestep tensors."""
        originals = self.schedule.timesteps.to(device)
        return [originals[index].expand(batch) for index in range(self.num_steps)]

    def step(
        self,
        x_t: torch.Tensor,
        index: int,
        prediction: Prediction,
        noise: torch.Tensor | None = None,
        generator: Generator = None,
        history: tuple[Prediction, ...] = (),
        predict: PredictFn | None = None,
    ) -> torch.Tensor:
        """Move x_t [B, ...] at schedule index ``index`` to the next lower noise level.

        Args:
            prediction: the model's (eps, x0) at (x_t, index).
            noise: standard normal like x_t, to make a stochastic step deterministic; otherwise drawn
                from ``generator`` when the step needs any.
            history: the predictions of the previous ``history_length`` steps, oldest first (at indices
                ..., index + 2, index + 1); shorter at the start of the loop. One-step methods ignore it.
            predict: ``predict(x, index) -> Prediction``, the model at another point of this step
                (Heun's corrector); the loop passes it. One-evaluation methods ignore it.
        """
        raise NotImplementedError

    def steps(
        self,
        model: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        cond: Any = None,
        generator: Generator = None,
        x_T: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[SamplerStep]:
        """Run the reverse process, yielding every step (noisiest first).

        Each step calls the model once at (x, index) and hands :meth:`step` that prediction, the
        predictions of the previous ``history_length`` steps, and ``predict(x, index)`` for methods that
        call the model again within a step (Heun). Yields a :class:`SamplerStep` per step; the last
        one's ``x_prev`` is the sample [B, ...].

        Args:
            model: ``model(x_t, t[, cond])`` -> prediction shaped like x_t (see GaussianDiffusion).
            shape: [B, ...] of the samples.
            cond: the condition for each sample (or None for an unconditional model).
            generator: a torch.Generator, or one per sample (then each sample is reproducible on its
                own whatever the batch size).
            x_T: the starting noise; drawn from ``generator`` if None.
        """
        if x_T is None:
            x_T = randn(tuple(shape), generator, device, dtype)
        x = x_T
        history: tuple[Prediction, ...] = ()
        with _grad_context(model):
            model_timesteps = self._model_timesteps(x.shape[0], x.device)

            def predict(x_: torch.Tensor, index_: int) -> Prediction:
                return self.predict(model, x_, index_, cond, model_timesteps[index_])

            for index in range(self.num_steps - 1, -1, -1):
                prediction = predict(x, index)
                x_prev = self.step(
                    x, index, prediction, generator=generator, history=history, predict=predict
                )
                if self.history_length:
                    history = (history + (prediction,))[-self.history_length :]
                yield SamplerStep(
                    index=index,
                    timestep=self._original_timesteps[index],
                    x_t=x,
                    x0=prediction.x0,
                    eps=prediction.eps,
                    x_prev=x_prev,
                )
                x = x_prev

    def sample(
        self,
        model: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        cond: Any = None,
        generator: Generator = None,
        x_T: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw samples [B, ...]: :meth:`steps` run to the end, keeping only the final x_0."""
        iterator = self.steps(model, shape, cond, generator, x_T, device, dtype)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=self.num_steps, desc=type(self).__name__, leave=False)
        last = None
        for last in iterator:
            pass
        assert last is not None
        return last.x_prev

    def trajectory(
        self,
        model: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        cond: Any = None,
        generator: Generator = None,
        x_T: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        every: int = 1,
    ) -> tuple[list[int], torch.Tensor]:
        """The path of every sample: (timesteps [K+1 or fewer], states [len, B, ...]).

        ``timesteps[j]`` is the original timestep of ``states[j]``; the last entry is -1, the final sample
        x_0 after the last step. ``every`` keeps every n-th step (the first and last are always kept).
        """
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        timesteps, states = [], []
        for count, step in enumerate(self.steps(model, shape, cond, generator, x_T, device)):
            if count % every == 0:
                timesteps.append(step.timestep)
                states.append(step.x_t)
        timesteps.append(-1)
        states.append(step.x_prev)
        return timesteps, torch.stack(states)


class DDPMSampler(Sampler):
    """Ancestral sampling, Ho et al. (2020) Algorithm 2, with K <= T steps through respacing.

    Args:
        variance: ``fixed_small`` (sigma^2 = beta_tilde, the posterior variance; best for few steps) or
            ``fixed_large`` (sigma^2 = beta, with beta_tilde_1 at the last step as in Ho et al.'s code).
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        num_steps: int | None = None,
        variance: VarianceType = "fixed_small",
        clip_x0: float | None = None,
        spacing: Spacing = "trailing",
    ) -> None:
        if variance not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCE_TYPES)}")
        self.variance = variance
        super().__init__(diffusion, num_steps, clip_x0, spacing)

    def _coefficient_tensors(self) -> dict[str, torch.Tensor]:
        s = self.schedule
        if self.variance == "fixed_small":
            log_variance = s.posterior_log_variance_clipped
        else:
            log_variance = s.betas.clone()
            if s.num_timesteps > 1:
                log_variance[0] = s.posterior_variance[1]
            log_variance = log_variance.log()
        return {
            "coef_x0": s.posterior_mean_coef1,
            "coef_xt": s.posterior_mean_coef2,
            "std": (0.5 * log_variance).exp(),
        }

    def step(self, x_t, index, prediction, noise=None, generator=None, history=(), predict=None):
        c = self._coefficients
        # In place on this step's own temporaries: the same roundings as coef_x0 * x0 + coef_xt * x_t.
        mean = accumulate(prediction.x0 * c["coef_x0"][index], x_t * c["coef_xt"][index])
        if index == 0:  # the last step returns the mean: no noise is added to x_0 (Algorithm 2, line 3)
            return mean
        return add_scaled_noise(mean, c["std"][index], noise, generator)

    def __repr__(self) -> str:
        return f"DDPMSampler(steps={self.num_steps}, variance={self.variance!r}, clip_x0={self.clip_x0})"


class DDIMSampler(Sampler):
    """Denoising diffusion implicit models, Song et al. (2021) eq. 12.

    Args:
        num_steps: K (default 50).
        eta: 0 for the deterministic DDIM, 1 for DDPM-like noise.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        num_steps: int = 50,
        eta: float = 0.0,
        clip_x0: float | None = None,
        spacing: Spacing = "trailing",
    ) -> None:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)
        super().__init__(diffusion, num_steps, clip_x0, spacing)

    def _coefficient_tensors(self) -> dict[str, torch.Tensor]:
        s = self.schedule
        alpha_bar, alpha_bar_prev = s.alphas_cumprod, s.alphas_cumprod_prev
        sigma = (
            self.eta
            * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt()
            * (1 - alpha_bar / alpha_bar_prev).sqrt()
        )
        return {
            "coef_x0": alpha_bar_prev.sqrt(),
            "coef_eps": (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt(),
            "sigma": sigma,
        }

    def step(self, x_t, index, prediction, noise=None, generator=None, history=(), predict=None):
        c = self._coefficients
        x_prev = accumulate(prediction.x0 * c["coef_x0"][index], prediction.eps * c["coef_eps"][index])
        sigma = c["sigma"][index]
        if sigma == 0.0:
            return x_prev
        return add_scaled_noise(x_prev, sigma, noise, generator)

    def __repr__(self) -> str:
        return f"DDIMSampler(steps={self.num_steps}, eta={self.eta}, clip_x0={self.clip_x0})"


def accumulate(total: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """``total + term``, in place on ``total`` (a step's own temporary) when that gives the same tensor:
    the same rounding as the out-of-place sum, one temporary fewer."""
    if term.dtype != total.dtype or term.shape != total.shape:
        return total + term
    total += term
    return total


def add_scaled_noise(
    x: torch.Tensor, scale: float, noise: torch.Tensor | None, generator: Generator
) -> torch.Tensor:
    """``x + scale * noise`` with ``x`` a step's own temporary. Noise drawn here (from ``generator``) is
    scaled in place; noise given by the caller is left untouched."""
    if noise is None:
        noise = randn(x.shape, generator, x.device, x.dtype)
        noise *= scale
    else:
        noise = noise * scale
    return accumulate(x, noise)
