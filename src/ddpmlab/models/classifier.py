"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, section 4).

It is the encoder half of :class:`~ddpmlab.models.unet.UNet`, built from the same blocks:

- time embedding: sinusoidal(t, base) -> Linear -> SiLU -> Linear, width 4 * base (no condition: the
  class is what it predicts);
- input 3x3 conv to ``base`` channels;
- down path: at each level ``num_res_blocks`` residual blocks (each followed by self-attention at the
  attention levels), then a stride-2 conv except at the last level;
- middle: residual block, self-attention, residual block;
- head: GroupNorm -> SiLU -> global average pool over H, W -> Linear to ``num_classes`` logits (the
  "adaptive" pooling head of Dhariwal & Nichol's classifier).

It is trained with cross-entropy on x_t = q_sample(x0, t, eps), t uniform over the diffusion's
timesteps, so that grad_{x_t} log p(y | x_t, t) is meaningful at every noise level the sampler visits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.models.blocks import AttentionBlock, Downsample, ResidualBlock
from ddpmlab.models.checks import attention_heads, check_groups, check_sizes, resolve_attention_levels
from ddpmlab.models.embeddings import TimestepEmbedding, batch_timesteps
from ddpmlab.models.unet import UNetLevel, UNetStage

__all__ = ["NoisyClassifier"]


class NoisyClassifier(nn.Module):
    """Noise-aware image classifier: ``classifier(x_t, t) -> logits [B, num_classes]``.

    Args:
        num_classes: number of classes (at least 2).
        in_channels: channels of x_t (1 for grayscale, 3 for RGB).
        base_channels, channel_mults, num_res_blocks, attention_levels, attention_resolutions,
        num_heads, head_dim, dropout, image_size, scale_shift, num_groups: as for
            :class:`~ddpmlab.models.unet.UNet` (the encoder half of a UNet with these options).
            ``dropout`` defaults to 0 here.

    Shapes: x_t [B, in_channels, H, W] (H, W divisible by 2**(len(channel_mults) - 1)), t int64 [B]
    (original timestep indices, or one scalar for the whole batch) -> logits [B, num_classes].
    :meth:`features` gives the pooled features [B, base_channels * channel_mults[-1]] before the last
    linear layer.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] | None = None,
        attention_resolutions: Sequence[int] | None = None,
        num_heads: int = 4,
        head_dim: int | None = None,
        dropout: float = 0.0,
        image_size: int = 32,
        scale_shift: bool = True,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        channel_mults = tuple(channel_mults)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
        check_sizes(in_channels, None, base_channels, channel_mults, num_res_blocks, dropout, image_size)
        check_groups(base_channels, channel_mults, num_groups)
        levels = resolve_attention_levels(
            attention_levels, attention_resolutions, image_size, len(channel_mults)
        )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.downsampling_factor = 2 ** (len(channel_mults) - 1)
        widths = [base_channels * mult for mult in channel_mults]
        emb_dim = 4 * base_channels

        def stage(in_ch: int, out_ch: int, attention: bool) -> UNetStage:
            residual = ResidualBlock(in_ch, out_ch, emb_dim, dropout, num_groups, scale_shift)
            heads = attention_heads(out_ch, num_heads, head_dim) if attention else 0
            return UNetStage(residual, AttentionBlock(out_ch, heads, num_groups) if attention else None)

        self.time_embedding = TimestepEmbedding(base_channels, emb_dim)
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down_levels = nn.ModuleList()
        width = base_channels
        for index, level_width in enumerate(widths):
            stages = []
            for _ in range(num_res_blocks):
                stages.append(stage(width, level_width, index in levels))
                width = level_width
            last = index == len(widths) - 1
            self.down_levels.append(UNetLevel(stages, None if last else Downsample(width)))
        self.middle = nn.ModuleList([stage(width, width, True), stage(width, width, False)])
        self.output_norm = nn.GroupNorm(num_groups, width)
        self.head = nn.Linear(width, num_classes)

    def check_input(self, x_t: torch.Tensor) -> None:
        """Raise ValueError unless x_t is [B, in_channels, H, W] with H and W divisible as needed."""
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"NoisyClassifier expects x_t of shape [B, {self.in_channels}, H, W], got {list(x_t.shape)}"
            )
        height, width = x_t.shape[-2:]
        if height % self.downsampling_factor or width % self.downsampling_factor:
            raise ValueError(
                f"this classifier needs the image height and width divisible by {self.downsampling_factor}, "
                f"got {height}x{width}"
            )

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, H, W], t int64 [B] -> pooled features [B, width of the last level]."""
        self.check_input(x_t)
        emb = F.silu(self.time_embedding(batch_timesteps(t, x_t.shape[0], x_t.device)))
        h = self.input_conv(x_t)
        for level in self.down_levels:
            for stage in level.stages:
                h = stage(h, emb)
            if level.resample is not None:
                h = level.resample(h)
        for stage in self.middle:
            h = stage(h, emb)
        return F.silu(self.output_norm(h)).mean(dim=(2, 3))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, H, W], t int64 [B] (original timestep indices) -> logits [B, num_classes]."""
        return self.head(self.features(x_t, t))
