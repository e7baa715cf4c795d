"""Fewer network evaluations for the same samples: higher-order solvers of the probability-flow ODE
and of the reverse SDE.

DDIM with eta = 0 already follows the probability-flow ODE of the diffusion (Song et al. 2021), and
DDPM the reverse SDE, but both with first-order methods: their error shrinks like 1/K. The solvers here
are of higher order, so they reach the same accuracy with far fewer steps, each costing one model call
(DPM-Solver++ multistep, ODE or SDE form) or two (Heun). All are steps of the one shared loop,
:meth:`ddpmlab.sampling.Sampler.steps`, so they take the same seeds, guidance wrappers, ``clip_x0`` and
spacings as DDPM and DDIM.

Notation (VP diffusion, x_t = alpha_t x0 + sigma_t eps): alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t) = log SNR_t / 2 (it grows as the
noise falls). x0_hat(x_t, t) and eps_hat(x_t, t) are the model's predictions.

- :class:`DPMSolverSampler`, DPM-Solver++ multistep in the data-prediction form (Lu et al. 2022,
  "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"). The exact solution
  of the ODE from s to t (their eq. 9) is

      x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0_hat(x_lambda) dlambda;

  the integral is taken exactly for a polynomial in lambda through the last ``order`` predictions
  (order 1: constant, which is DDIM; order 2: the paper's Algorithm 2; order 3: the quadratic
  interpolant). Data prediction, unlike eps prediction, stays bounded under large guidance scales.
  ``stochastic=True`` solves the reverse SDE instead (order 1: DDPM's step; order 2: ``sde-dpm++2m``).
- :class:`HeunSampler`, Karras et al. (2022, "Elucidating the Design Space of Diffusion-Based Generative
  Models") Algorithm 1: Heun's second-order method on the same ODE written in sigma~ = sigma_t / alpha_t
  for x~ = x_t / alpha_t, where it reads dx~ / dsigma~ = (x~ - x0_hat) / sigma~ = eps_hat.

The last step of every solver goes from the last visited timestep to the clean data (sigma = 0,
lambda = +infinity), where any formula of order > 1 breaks down (the step h is infinite): it is the
first-order step x_0 = x0_hat(x, t), the same as DDIM's last step. How close the last visited timestep
is to t = 0 is the spacing's business: ``linspace`` and ``logsnr`` end at t = 0, ``trailing`` at T/K - 1
(see :func:`ddpmlab.schedules.respaced_timesteps`).
"""

from __future__ import annotations

import math

import torch

from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.sampling import Sampler, accumulate, add_scaled_noise
from ddpmlab.schedules import Spacing

__all__ = ["DPMSolverSampler", "HeunSampler", "DPM_SOLVER_ORDERS"]

DPM_SOLVER_ORDERS = (1, 2, 3)


class DPMSolverSampler(Sampler):
    """DPM-Solver++ multistep (data prediction), Lu et al. (2022), orders 1 to 3, one evaluation per step;
    with ``stochastic=True`` its SDE form, orders 1 and 2.

    Step from schedule index i (time s, the current x) to i-1 (time t), h = lambda_t - lambda_s > 0,
    m0 = x0_hat at s, m1 and m2 the predictions of the two previous steps (at lambda_s - h0 and
    lambda_s - h0 - h1):

    - order 1 (eq. 10 with k = 1; identical to DDIM with eta = 0):
      x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) m0
    - order 2 (Algorithm 2, "2M"), r = h0 / h:
      x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) (m0 + (m0 - m1) / (2 r))
    - order 3 ("3M"): the quadratic through (m2, m1, m0), m0 + d01 u + d012 u (u + h0) in
      u = lambda - lambda_s, with divided differences d01 = (m0 - m1) / h0 and
      d012 = (d01 - (m1 - m2) / h1) / (h0 + h1), integrated exactly:
      x_t = (sigma_t / sigma_s) x_s
            + alpha_t [ (1 - e^-h) m0 + (h - 1 + e^-h) (d01 + h0 d012) + 2 (h^2 / 2 - h + 1 - e^-h) d012 ].

    Stochastic (the SDE variant of DPM-Solver++ by the same authors, diffusers' ``sde-dpmsolver++``): the
    reverse SDE's exact solution with x0_hat constant is DDPM's posterior step (``fixed_small``),
      x_t = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) m0 + sigma_t sqrt(1 - e^-2h) z,
    and order 2 adds the same midpoint correction, alpha_t (1 - e^-2h) (m0 - m1) / (2 r). Unlike the ODE,
    the SDE forgets errors in its starting point: x_T ~ N(0, I) is not exactly q(x_T) (alpha_bar_T > 0),
    and a deterministic solver carries that mismatch to its samples (measured in
    ``benchmarks/results/solvers_oracle.md``), a stochastic one mostly removes it.

    The first steps lack history and use the highest order it allows (1, then 2); the last step, to
    sigma = 0, is of order 1 (see the module docstring). Note on diffusers' ``DPMSolverMultistepScheduler``
    (and the reference code of Lu et al.): their third-order step weights the d012 term by half of the
    exact integral above, which makes it a second-order method asymptotically (measured in
    ``tests/test_solvers.py``); this class uses the exact weight, and is otherwise step-for-step the same
    as diffusers with ``algorithm_type="dpmsolver++"`` (or ``"sde-dpmsolver++"``),
    ``solver_type="midpoint"``, ``final_sigmas_type="zero"`` and ``lower_order_final=False`` (diffusers by
    default also lowers the order of the last two steps when K < 15; this class does not).

    With ``clip_x0`` the clamped x0 is what the polynomial goes through: the clamp is not smooth, so
    where it acts the solver is only first order.

    Args:
        diffusion: the diffusion the model was trained with.
        num_steps: K, the number of steps and of model evaluations (default 20).
        order: 1, 2 or 3 (1 or 2 when stochastic).
        stochastic: the SDE form (noise drawn from the sampling generator at every step but the last).
        clip_x0, spacing: as for every :class:`~ddpmlab.sampling.Sampler`.

    Raises:
        ValueError: an order other than 1, 2, 3, or 3 with ``stochastic`` (and the base class's errors).
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        num_steps: int | None = 20,
        order: int = 2,
        clip_x0: float | None = None,
        spacing: Spacing = "trailing",
        stochastic: bool = False,
    ) -> None:
        if order not in DPM_SOLVER_ORDERS:
            raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order!r}")
        if stochastic and order == 3:
            raise ValueError("the stochastic (SDE) DPM-Solver++ has orders 1 and 2 only")
        self.order = int(order)
        self.stochastic = bool(stochastic)
        self.history_length = self.order - 1
        super().__init__(diffusion, num_steps, clip_x0, spacing)

    def _coefficient_tensors(self) -> dict[str, torch.Tensor]:
        s = self.schedule
        alpha, sigma = s.sqrt_alphas_cumprod.tolist(), s.sqrt_one_minus_alphas_cumprod.tolist()
        alpha_to = s.alphas_cumprod_prev.sqrt().tolist()  # index i steps to i-1; index 0 to alpha = 1
        sigma_to = (1.0 - s.alphas_cumprod_prev).sqrt().tolist()
        lam = [math.log(a / b) for a, b in zip(alpha, sigma, strict=True)]
        K = len(alpha)
        table = {name: [0.0] * K for name in ("ratio", "a0", "std", "mid", "a1", "b3")}
        for i in range(K):
            # e^-h = (alpha_s / sigma_s) (sigma_t / alpha_t), written out so that sigma_t = 0 is finite
            decay = sigma_to[i] * alpha[i] / (sigma[i] * alpha_to[i])
            if self.stochastic:
                table["ratio"][i] = sigma_to[i] / sigma[i] * decay
                table["a0"][i] = alpha_to[i] * (1.0 - decay * decay)  # alpha_t (1 - e^-2h)
                table["std"][i] = sigma_to[i] * math.sqrt(max(1.0 - decay * decay, 0.0))
            else:
                table["ratio"][i] = sigma_to[i] / sigma[i]
                table["a0"][i] = alpha_to[i] * (1.0 - decay)  # alpha_t (1 - e^-h)
            if i == 0 or i + 1 == K:
                continue  # the last step is first order (h is infinite); the first has no history
            h, h0 = lam[i - 1] - lam[i], lam[i] - lam[i + 1]
            table["mid"][i] = table["a0"][i] * h / (2.0 * h0)
            table["a1"][i] = alpha_to[i] * (h + math.expm1(-h))  # alpha_t (h - 1 + e^-h)
            if i + 2 < K:  # two previous predictions: third order
                a2 = alpha_to[i] * (0.5 * h * h - h - math.expm1(-h))  # alpha_t (h^2/2 - h + 1 - e^-h)
                table["b3"][i] = table["a1"][i] * h0 + 2.0 * a2
        table["h0"] = [lam[i] - lam[i + 1] if i + 1 < K else math.nan for i in range(K)]
        table["h1"] = [lam[i + 1] - lam[i + 2] if i + 2 < K else math.nan for i in range(K)]
        return {name: torch.tensor(values, dtype=torch.float64) for name, values in table.items()}

    def order_at(self, index: int, available: int) -> int:
        """The order of the step from ``index`` with ``available`` previous predictions."""
        return 1 if index == 0 else min(self.order, available + 1)

    def step(self, x_t, index, prediction, noise=None, generator=None, history=(), predict=None):
        """One DPM-Solver++ step (see the class docstring); ``history`` holds the previous steps'
        predictions, oldest first. Only the stochastic form uses ``noise`` / ``generator``, at every
        step but the last."""
        c = self._coefficients
        m0 = prediction.x0
        order = self.order_at(index, len(history))
        x_prev = accumulate(x_t * c["ratio"][index], m0 * c["a0"][index])
        if order == 2:
            x_prev = accumulate(x_prev, (m0 - history[-1].x0) * c["mid"][index])
        elif order == 3:
            m1, m2 = history[-1].x0, history[-2].x0
            d01 = (m0 - m1) / c["h0"][index]
            d012 = (d01 - (m1 - m2) / c["h1"][index]) / (c["h0"][index] + c["h1"][index])
            x_prev = accumulate(x_prev, d01 * c["a1"][index])
            x_prev = accumulate(x_prev, d012 * c["b3"][index])
        if self.stochastic and index > 0:
            x_prev = add_scaled_noise(x_prev, c["std"][index], noise, generator)
        return x_prev

    def __repr__(self) -> str:
        kind = ", stochastic" if self.stochastic else ""
        return f"DPMSolverSampler(steps={self.num_steps}, order={self.order}{kind}, clip_x0={self.clip_x0})"


class HeunSampler(Sampler):
    """Heun's method on the probability-flow ODE, Karras et al. (2022) Algorithm 1 (deterministic), on
    the VP schedule's own noise levels.

    With sigma~_i = sqrt((1 - alpha_bar_i) / alpha_bar_i) at the visited timesteps, sigma~ = 0 after the
    last, and x~ = x / sqrt(alpha_bar) (so that x~ = x0 + sigma~ eps), one step from i to i-1 is

        d   = eps_hat(x_i, i)                                  (= (x~_i - x0_hat) / sigma~_i)
        x~' = x~_i + (sigma~_{i-1} - sigma~_i) d               (Euler: exactly the DDIM step)
        d'  = eps_hat(x', i-1)                                 (the model at the Euler point)
        x~_{i-1} = x~_i + (sigma~_{i-1} - sigma~_i) (d + d') / 2

    and the last step, to sigma~ = 0, is the Euler step alone (Algorithm 1, line 6): its result is
    x0_hat. So K steps cost 2K - 1 model evaluations (:attr:`num_evaluations`): the evaluation at the
    Euler point is not reused by the next step, whose start is the corrected point. The record a step
    yields holds the first evaluation's (eps, x0).

    Args:
        diffusion: the diffusion the model was trained with.
        num_steps: K (default 10, i.e. 19 evaluations).
        clip_x0, spacing: as for every :class:`~ddpmlab.sampling.Sampler`; both evaluations are clamped.
    """

    evaluations_per_step = 2

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        num_steps: int | None = 10,
        clip_x0: float | None = None,
        spacing: Spacing = "trailing",
    ) -> None:
        super().__init__(diffusion, num_steps, clip_x0, spacing)

    def _coefficient_tensors(self) -> dict[str, torch.Tensor]:
        s = self.schedule
        sigma = ((1.0 - s.alphas_cumprod) / s.alphas_cumprod).sqrt()
        sigma_to = ((1.0 - s.alphas_cumprod_prev) / s.alphas_cumprod_prev).sqrt()
        scale_to = s.alphas_cumprod_prev.sqrt()
        # in x = sqrt(alpha_bar) x~: x_{i-1} = scale_to / scale x_i + scale_to (sigma~_{i-1} - sigma~_i) d
        return {
            "ratio": scale_to / s.sqrt_alphas_cumprod,
            "euler": scale_to * (sigma_to - sigma),
            "heun": 0.5 * scale_to * (sigma_to - sigma),
        }

    def step(self, x_t, index, prediction, noise=None, generator=None, history=(), predict=None):
        """One Heun step (see the class docstring). ``predict`` (the model at another point) is needed
        for every step but the last. Deterministic: ``noise`` and ``generator`` are not used.

        Raises:
            ValueError: ``predict`` missing at a step that needs the corrector.
        """
        c = self._coefficients
        euler = accumulate(x_t * c["ratio"][index], prediction.eps * c["euler"][index])
        if index == 0:
            return euler
        if predict is None:
            raise ValueError("HeunSampler.step needs predict(x, index) for its second evaluation")
        corrected = predict(euler, index - 1)
        slopes = prediction.eps + corrected.eps
        return accumulate(x_t * c["ratio"][index], slopes * c["heun"][index])

    def __repr__(self) -> str:
        return f"HeunSampler(steps={self.num_steps}, clip_x0={self.clip_x0})"
