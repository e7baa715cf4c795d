"""A residual MLP denoiser for low-dimensional data (toy distributions in 1-D, 2-D, ...).

The timestep enters as in Ho et al. 2020 (sinusoidal features -> MLP, added inside every block), and a
class label, when the model has classes, is embedded and added to the time embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ddpmlab.models.embeddings import ClassEmbedding, TimestepEmbedding, batch_timesteps, embed_condition

__all__ = ["MLPDenoiser", "MLP_NORMS"]

MLP_NORMS = ("layer", "none")


class ResidualMLPBlock(nn.Module):
    """h + Linear(Dropout(SiLU(Linear(Norm(h)) + Linear(emb)))).

    Shapes: h [B, hidden], emb [B, emb_dim] (already passed through SiLU) -> [B, hidden].
    """

    def __init__(self, hidden: int, emb_dim: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden) if norm == "layer" else nn.Identity()
        self.linear_1 = nn.Linear(hidden, hidden)
        self.emb_projection = nn.Linear(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        a = nn.functional.silu(self.linear_1(self.norm(h)) + self.emb_projection(emb))
        return h + self.linear_2(self.dropout(a))


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser: ``model(x_t, t, cond=None) -> [B, data_dim]``.

    Input projection, ``num_blocks`` residual blocks (:class:`ResidualMLPBlock`) each receiving the
    time (+ class) embedding, then Norm -> SiLU -> a zero-initialised output layer (the model outputs 0
    at initialisation).

    Args:
        data_dim: D, the data dimension; inputs are [B, D] (a 1-D dataset is [B, 1]).
        hidden: width of the residual stream.
        num_blocks: number of residual blocks.
        time_dim: width of the sinusoidal features and of the time embedding.
        num_classes: when set, the model is class-conditional: ``cond`` is int64 labels [B] in
            0 .. num_classes, where ``num_classes`` (``condition_encoder.null_condition``) means "no
            class"; ``cond=None`` is the same as all-null labels.
        dropout: dropout probability inside the blocks.
        norm: "layer" (LayerNorm at the start of each block) or "none".

    Attributes:
        condition_encoder: a :class:`ClassEmbedding` (for condition dropout and ``null_condition``), or
            None when the model is unconditional.
    """

    def __init__(
        self,
        data_dim: int,
        hidden: int = 256,
        num_blocks: int = 4,
        time_dim: int = 128,
        num_classes: int | None = None,
        dropout: float = 0.0,
        norm: Literal["layer", "none"] = "layer",
    ) -> None:
        super().__init__()
        _check_options(data_dim, hidden, num_blocks, time_dim, dropout, norm)
        self.data_dim = data_dim
        self.time_embedding = TimestepEmbedding(time_dim, time_dim)
        self.condition_encoder = ClassEmbedding(num_classes, time_dim) if num_classes is not None else None
        self.input_projection = nn.Linear(data_dim, hidden)
        self.blocks = nn.ModuleList(
            ResidualMLPBlock(hidden, time_dim, norm, dropout) for _ in range(num_blocks)
        )
        self.output_norm = nn.LayerNorm(hidden) if norm == "layer" else nn.Identity()
        self.output_layer = nn.Linear(hidden, data_dim)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def embed(self, t: torch.Tensor, cond: Any, batch: int, device: torch.device) -> torch.Tensor:
        """Time (+ condition) embedding [B, time_dim], after SiLU, as every block consumes it."""
        emb = self.time_embedding(batch_timesteps(t, batch, device))
        cond_emb = embed_condition(self.condition_encoder, cond, batch, device)
        if cond_emb is not None:
            emb = emb + cond_emb
        return nn.functional.silu(emb)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x_t [B, D], t int64 [B] -> [B, D]."""
        if x_t.ndim != 2 or x_t.shape[1] != self.data_dim:
            raise ValueError(f"MLPDenoiser expects x_t of shape [B, {self.data_dim}], got {list(x_t.shape)}")
        emb = self.embed(t, cond, x_t.shape[0], x_t.device)
        h = self.input_projection(x_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.output_layer(nn.functional.silu(self.output_norm(h)))


def _check_options(
    data_dim: int, hidden: int, num_blocks: int, time_dim: int, dropout: float, norm: str
) -> None:
    for name, value in (("data_dim", data_dim), ("hidden", hidden), ("time_dim", time_dim)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be non-negative, got {num_blocks}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if norm not in MLP_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(MLP_NORMS)}")
