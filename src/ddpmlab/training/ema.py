"""Exponential moving average of a model's weights (Polyak averaging; used by Ho et al. with decay 0.9999).

The EMA copy is what gets sampled from: it averages out the noise of the last optimisation steps and
gives visibly cleaner samples than the raw weights.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["EMA"]


class EMA:
    """An averaged copy of ``model``: theta_ema <- d theta_ema + (1 - d) theta after every update.

    Args:
        model: the model being trained (its parameters and float buffers are tracked).
        decay: d. With ``warmup`` the decay used at update n is min(d, (1 + n) / (10 + n)), so that the
            average is not dominated by the random initial weights early in training.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._ema_tensors: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._source: torch.nn.Module | None = None
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _pairs(self, model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA parameters, model parameters), listed once per source model: walking the module tree
        at every step costs more than the update itself for small models."""
        if self._source is not model or self._ema_tensors is None:
            self._ema_tensors = (list(self.model.parameters()), [p.detach() for p in model.parameters()])
            self._buffers = list(zip(self.model.buffers(), model.buffers()))
            self._source = model
        return self._ema_tensors

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        ema_params, params = self._pairs(model)
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in self._buffers:
            if ema_buffer.dtype.is_floating_point:
                ema_buffer.lerp_(buffer, 1.0 - decay)
            else:
                ema_buffer.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
