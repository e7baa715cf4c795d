"""Guidance: wrappers that are themselves denoisers, so any sampler can use them unchanged.

- :class:`ClassifierFreeGuidance` (Ho & Salimans 2022, eq. 6):
  eps_hat = eps(x_t, null) + w (eps(x_t, c) - eps(x_t, null)).
  w = 1 is the conditional model, w = 0 the unconditional one, w > 1 trades diversity for fidelity.
  (The paper writes (1 + w') eps_c - w' eps_null; its w' is our w - 1.) Because x0 and v are affine in
  eps at fixed (x_t, t) and the weights (1 - w, w) sum to 1, mixing the model's raw outputs is the same
  as mixing eps, whatever the model predicts.
- :class:`ClassifierGuidance` (Dhariwal & Nichol 2021, Algorithm 2):
  eps_hat = eps(x_t) - s sqrt(1 - alpha_bar_t) grad_{x_t} log p_phi(y | x_t, t).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ddpmlab.diffusion import GaussianDiffusion, call_model

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance", "concat_conditions"]


def concat_conditions(cond: Any, null_cond: Any) -> Any:
    """[cond_1..cond_B, null x B]: a batch of conditions followed by as many null conditions.

    ``cond`` may be a tensor [B, ...] (null_cond then a scalar or a tensor [...] broadcast over the batch)
    or a list of B items such as strings (null_cond then one item, e.g. "").
    """
    if torch.is_tensor(cond):
        if isinstance(null_cond, (bool, int, float)):  # filled on the device: no host-to-device copy
            null = torch.full_like(cond, null_cond)
        else:
            null = torch.as_tensor(null_cond, dtype=cond.dtype, device=cond.device).expand_as(cond)
        return torch.cat([cond, null])
    if isinstance(cond, Sequence) and not isinstance(cond, (str, bytes)):
        return list(cond) + [null_cond] * len(cond)
    raise TypeError(f"cannot batch a condition of type {type(cond).__name__} with its null condition")


class ClassifierFreeGuidance(torch.nn.Module):
    """A conditional model guided without a classifier: one batched forward of [cond; null].

    Args:
        model: ``model(x_t, t, cond)`` trained with condition dropout (cond replaced by ``null_cond``).
        scale: w; 1 gives the conditional model, 0 the unconditional one.
        null_cond: the condition meaning "no condition" (e.g. the extra class index ``num_classes``).
    """

    def __init__(self, model: Callable[..., torch.Tensor], scale: float, null_cond: Any) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)
        self.null_cond = null_cond

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance needs a condition for every sample")
        if self.scale == 1.0:
            return call_model(self.model, x_t, t, cond)
        if self.scale == 0.0:
            return call_model(self.model, x_t, t, concat_conditions(cond, self.null_cond)[len(x_t) :])
        both = call_model(
            self.model, torch.cat([x_t, x_t]), torch.cat([t, t]), concat_conditions(cond, self.null_cond)
        )
        conditional, unconditional = both.chunk(2)
        # unconditional + w (conditional - unconditional), in place on the one temporary (same roundings)
        guided = conditional - unconditional
        guided *= self.scale
        guided += unconditional
        return guided


class ClassifierGuidance(torch.nn.Module):
    """A denoiser pushed towards class y by a noise-aware classifier's gradient.

    Args:
        model: the denoiser, called as ``model(x_t, t)`` (or ``model(x_t, t, cond)`` when
            ``condition_model`` is True, for a conditional model guided further).
        classifier: ``classifier(x_t, t)`` -> logits [B, num_classes], trained on noised data.
        scale: s, the gradient scale (Dhariwal & Nichol use 1 to 10).
        diffusion: the diffusion the model was trained with: supplies alpha_bar_t at the model's
            timesteps and the model's prediction type.
    """

    requires_grad_for_sampling = True

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scale: float,
        diffusion: GaussianDiffusion,
        condition_model: bool = False,
    ) -> None:
        super().__init__()
        if diffusion.schedule.is_respaced:
            raise ValueError("ClassifierGuidance needs the training diffusion, not a respaced one")
        self.model = model
        self.classifier = classifier
        self.scale = float(scale)
        self.diffusion = diffusion
        self.condition_model = condition_model

    def log_prob_gradient(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} log p(y | x_t, t), shaped like x_t."""
        with torch.enable_grad(), torch.inference_mode(False):
            # Tensors made under inference_mode cannot take part in autograd: work on normal copies.
            x = x_t.detach().clone().requires_grad_(True)
            t, labels = t.clone(), labels.clone()
            logits = self.classifier(x, t)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            log_probs = torch.log_softmax(logits, dim=-1)
            selected = log_probs[torch.arange(len(labels), device=labels.device), labels]
            (gradient,) = torch.autograd.grad(selected.sum(), x)
        return gradient

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond is None:
            raise ValueError("classifier guidance needs a target label for every sample")
        with torch.no_grad():
            output = call_model(self.model, x_t, t, cond if self.condition_model else None)
        if self.scale == 0.0:
            return output
        eps, _ = self.diffusion.prediction_to_eps_x0(output.to(x_t.dtype), x_t, t)
        gradient = self.log_prob_gradient(x_t, t, cond)
        sigma = self.diffusion.coefficient("sqrt_one_minus_alphas_cumprod", t, x_t)
        guided_eps = eps - self.scale * sigma * gradient
        return self.diffusion.eps_to_prediction(guided_eps, x_t, t)
