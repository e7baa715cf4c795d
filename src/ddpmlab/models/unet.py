"""The U-Net denoiser of Ho et al. 2020 (appendix B), with the options of Nichol & Dhariwal 2021.

Structure, for L = len(channel_mults) levels with C_l = base_channels * channel_mults[l]:

- time embedding: sinusoidal(t, base) -> Linear -> SiLU -> Linear, width 4 * base (Ho et al.), plus the
  condition embedding (class or text) when the model is conditional;
- input 3x3 conv to ``base`` channels (after folding p x p patches into channels with ``patch_size`` p);
- down path: at each level ``num_res_blocks`` residual blocks (each followed by self-attention at the
  attention levels), then a stride-2 conv except at the last level;
- middle: residual block, self-attention, residual block;
- up path: at each level ``num_res_blocks + 1`` residual blocks, each taking the previous output
  concatenated with one saved output of the down path (every down-path output, the input conv's
  included, is used once: the skip connections of Ho et al.), then nearest upsampling + 3x3 conv except
  at level 0;
- output: GroupNorm -> SiLU -> zero-initialised 3x3 conv (then unfolding the patches).

Text-conditional models can also cross-attend (``text_cross_attention``): each attention block then
follows its self-attention with attention from the pixels to the string's character tokens (Rombach et
al. 2022), so that each region of the image can look up the character it should draw.

Residual block: GroupNorm -> SiLU -> Conv3x3 -> time embedding -> GroupNorm -> SiLU -> Dropout ->
zero-initialised Conv3x3, plus a 1x1 conv on the skip when the width changes. The time embedding is
added to the features (Ho et al.), or with ``scale_shift=True`` applied FiLM-style after the second norm,
h = norm(h) * (1 + scale) + shift (Nichol & Dhariwal 2021, "improved DDPM").

With in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention at 16x16
(level 1) and additive time embedding, this is Ho et al.'s CIFAR-10 model: 35,746,307 parameters (the
paper: 35.7M).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ddpmlab.models.embeddings import (
    CONDITION_KINDS,
    TimestepEmbedding,
    batch_timesteps,
    build_condition_encoder,
    embed_condition,
)

__all__ = ["UNet", "ResidualBlock", "AttentionBlock", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResidualBlock(nn.Module):
    """Residual block with time-embedding injection (Ho et al. 2020; FiLM variant of Nichol & Dhariwal).

    Shapes: x [B, in_channels, H, W], emb [B, emb_dim] (already passed through SiLU)
    -> [B, out_channels, H, W].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        num_groups: int,
        scale_shift: bool,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm_1 = nn.GroupNorm(num_groups, in_channels)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_projection = nn.Linear(emb_dim, 2 * out_channels if scale_shift else out_channels)
        self.norm_2 = nn.GroupNorm(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = _zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.silu(self.norm_1(x)))
        emb = self.emb_projection(emb)
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = _film_group_norm(h, self.norm_2, scale, shift)
        else:
            h = self.norm_2(h + emb[:, :, None, None])
        h = self.conv_2(_dropout(F.silu(h), self.dropout.p, self.dropout.training))
        skip = x if isinstance(self.skip, nn.Identity) else _pointwise_conv(x, self.skip)
        return h.add_(skip)  # in place: the convolution's backward does not need its output


def _pointwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1x1 convolution, as one batched matrix product [C_out, C_in] @ [C_in, H*W].

    The same numbers as the convolution; on the CPU its backward pass is 2-3x faster than oneDNN's 1x1
    convolution (measured at the MNIST UNet's shapes).
    """
    batch, _, height, width = x.shape
    weight = conv.weight.flatten(1).expand(batch, -1, -1)
    if conv.bias is None:
        out = torch.bmm(weight, x.flatten(2))
    else:
        out = torch.baddbmm(conv.bias[:, None], weight, x.flatten(2))
    return out.view(batch, -1, height, width)


def _film_group_norm(
    h: torch.Tensor, norm: nn.GroupNorm, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``norm(h) * (1 + scale) + shift`` for scale, shift [B, C], in two passes over h instead of three.

    The norm's affine weight and bias are folded into per-sample coefficients:
    (n * weight + bias) * (1 + scale) + shift = n * (weight * (1 + scale)) + (bias * (1 + scale) + shift).
    """
    normalized = F.group_norm(h, norm.num_groups, None, None, norm.eps)
    gain = 1 + scale
    return torch.addcmul(
        (norm.bias * gain + shift)[:, :, None, None], normalized, (norm.weight * gain)[:, :, None, None]
    )


def _dropout(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout(h, p, training)``: each entry is kept with probability 1 - p and
    scaled by 1 / (1 - p). The mask comes from uniform draws (``rand_like(h) >= p``), which torch makes
    about twice as fast on the CPU as the Bernoulli draws of ``F.dropout``."""
    if not training or p == 0.0:
        return h
    if p == 1.0:
        return h * 0.0
    mask = torch.rand_like(h).ge_(p).mul_(1.0 / (1.0 - p))
    return h * mask


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual (Ho et al. 2020, appendix B), and
    optionally cross-attention to condition tokens (Rombach et al. 2022, sec. 3.3).

    Self-attention: GroupNorm -> 1x1 conv to q, k, v -> scaled dot-product attention per head ->
    zero-initialised 1x1 output projection, added to the input.

    With ``context_dim``, then cross-attention: GroupNorm -> queries from the pixels, keys and values from
    the context tokens [B, L, context_dim] (e.g. a string's characters) -> attention per head ->
    zero-initialised output projection, added. Each pixel chooses which tokens it draws: how a text-
    conditional model learns to put the right character in the right place.

    Shapes: x [B, C, H, W], context [B, L, context_dim] or None -> [B, C, H, W].
    """

    def __init__(
        self, channels: int, num_heads: int, num_groups: int, context_dim: int | None = None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.projection = _zero_init(nn.Conv2d(channels, channels, 1))
        self.cross = CrossAttention(channels, context_dim, num_heads, num_groups) if context_dim else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self._self_attention(x)
        if self.cross is not None:
            if context is None:
                raise ValueError("this attention block cross-attends: it needs the condition's tokens")
            x = self.cross(x, context)
        return x

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        heads, positions = self.num_heads, height * width
        # The 1x1 convolutions run as linear layers on [B, HW, C] (their weights are [out, in, 1, 1]), so
        # that q, k and v come out as [B, heads, HW, head_dim] views with unit stride in the last
        # dimension, the layout the fused CPU/GPU kernels of scaled_dot_product_attention take.
        h = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(h, self.qkv.weight.flatten(1), self.qkv.bias)  # [B, HW, 3C]
        q, k, v = qkv.view(batch, positions, 3, heads, channels // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, positions, channels)
        out = F.linear(out, self.projection.weight.flatten(1), self.projection.bias)  # [B, HW, C]
        # [B, HW, C] is a channels-last view of [B, C, H, W]; the sum takes x's layout.
        out = out.transpose(1, 2).view(batch, channels, height, width)
        return x + out.contiguous(memory_format=_memory_format(x))


COORDINATE_FREQUENCIES = 6


def coordinate_features(height: int, width: int, num_frequencies: int, device=None) -> torch.Tensor:
    """Sinusoidal features of each pixel's position, [H*W, 4 * num_frequencies], row-major.

    With u = (column + 0.5) / W and v = (row + 0.5) / H in (0, 1) and f_k = pi * 2**k, the features are
    [sin(u f_k), cos(u f_k), sin(v f_k), cos(v f_k)] over k: relative positions, so the same for any
    image size (a character slot is "the second fifth of the width" at 32x96 and at 64x192 alike).
    """
    frequencies = math.pi * 2.0 ** torch.arange(num_frequencies, device=device, dtype=torch.float32)
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    u, v = u.repeat(height)[:, None] * frequencies, v.repeat_interleave(width)[:, None] * frequencies
    return torch.cat([u.sin(), u.cos(), v.sin(), v.cos()], dim=1)


class CrossAttention(nn.Module):
    """Residual multi-head attention from pixels to context tokens:
    x + out(attn(q(norm x + pos), k(c), v(c))).

    The queries also see where the pixel is (``pos``: a learned projection of
    :func:`coordinate_features`): convolutional features hardly know their position, and without it a
    pixel cannot tell which character of a string belongs at its place (measured: the captcha model drew
    the requested characters in scrambled order).

    Shapes: x [B, C, H, W], context [B, L, context_dim] -> [B, C, H, W]. The output projection starts at
    zero, so a new block is the identity until it has learned something.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int, num_groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        self.position = nn.Linear(4 * COORDINATE_FREQUENCIES, channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(context_dim, 2 * channels)
        self.projection = _zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        if context.ndim != 3 or context.shape[0] != batch:
            raise ValueError(f"context must be [{batch}, L, dim], got {list(context.shape)}")
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        coordinates = coordinate_features(height, width, COORDINATE_FREQUENCIES, x.device).to(h.dtype)
        h = h + self.position(coordinates)  # [HW, C] broadcast over the batch
        q = self.query(h).view(batch, -1, heads, head_dim).transpose(1, 2)  # [B, heads, HW, d]
        k, v = self.key_value(context.to(h.dtype)).view(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, channels)
        out = self.projection(out).transpose(1, 2).view(batch, channels, height, width)
        return x + out.contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling then a 3x3 conv: [B, C, H, W] -> [B, C, 2H, 2W].

    Computed without materialising the upsampled image: output pixel (2i + a, 2j + b) only sees input
    rows i - 1 + a .. i + a and columns j - 1 + b .. j + b, so the 3x3 kernel's taps that land on the
    same input pixel are summed into one 2x2 kernel per output phase (a, b). Four 2x2 convolutions at
    the input resolution do the work of one 3x3 convolution at twice the resolution: 16 instead of 36
    multiply-adds per input pixel and channel pair, the same result up to float rounding.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        padded = F.pad(x, (1, 1, 1, 1))
        phases = [
            F.conv2d(padded[:, :, a : a + height + 1, b : b + width + 1], kernel, self.conv.bias)
            for a, row_kernel in enumerate(_phase_taps(self.conv.weight, dim=2))
            for b, kernel in enumerate(_phase_taps(row_kernel, dim=3))
        ]
        out = torch.stack(phases, dim=2).view(batch, -1, 2, 2, height, width)  # [B, C, a, b, H, W]
        out = out.permute(0, 1, 4, 2, 5, 3).reshape(batch, -1, 2 * height, 2 * width)
        return out.contiguous(memory_format=_memory_format(x))


def _phase_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps of ``weight`` along ``dim`` merged into 2 for each output phase of a x2 upsampling:
    phase 0 sees input offsets (-1, 0) with taps {0}, {1, 2}; phase 1 sees (0, +1) with taps {0, 1}, {2}."""
    t0, t1, t2 = weight.unbind(dim)
    return torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)


class UNetStage(nn.Module):
    """A residual block, optionally followed by attention: (x, emb, context=None) -> features."""

    def __init__(self, residual: ResidualBlock, attention: AttentionBlock | None) -> None:
        super().__init__()
        self.residual = residual
        self.attention = attention

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.residual(x, emb)
        return self.attention(h, context) if self.attention is not None else h


class UNetLevel(nn.Module):
    """The stages of one resolution level and the resampling that follows them (or None)."""

    def __init__(self, stages: list[UNetStage], resample: nn.Module | None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.resample = resample


class UNet(nn.Module):
    """U-Net denoiser for images: ``model(x_t, t, cond=None) -> [B, out_channels, H, W]``.

    Ho et al. 2020 (appendix B) with options from Nichol & Dhariwal 2021; see the module docstring.

    Args:
        in_channels: channels of x_t (1 for grayscale, 3 for RGB).
        out_channels: output channels; defaults to ``in_channels``.
        base_channels: width of level 0; level l has ``base_channels * channel_mults[l]`` channels.
        channel_mults: one multiplier per resolution level; level l works at image_size / 2**l.
        num_res_blocks: residual blocks per level in the down path (the up path has one more).
        attention_levels: level indices (0 = full resolution) with self-attention after each residual
            block. Default: level 1 (16x16 for 32x32 images, as in Ho et al.), or none with one level.
        attention_resolutions: alternative to ``attention_levels``: pixel sizes (e.g. [16]), translated
            to levels with ``image_size``. Give at most one of the two.
        num_heads: attention heads (ignored when ``head_dim`` is given).
        head_dim: channels per attention head; the number of heads then follows from the width.
        dropout: dropout probability in the residual blocks (0.1 for CIFAR-10 in Ho et al.).
        image_size: the training image size. Inputs may have any height and width divisible by
            patch_size * 2**(len(channel_mults) - 1) (the model is convolutional); ``image_size`` must
            be divisible too, and it defines the pixel sizes of ``attention_resolutions``.
        condition: None (unconditional), "class" or "text"; the condition embedding is added to the time
            embedding. ``cond=None`` to a conditional model means the null condition.
        num_classes: number of classes for ``condition="class"``.
        text_charset, text_length, text_token_dim, text_pooling: options of the
            :class:`~ddpmlab.models.embeddings.TextEmbedding` for ``condition="text"``.
        text_cross_attention: with ``condition="text"``, every attention block (those of
            ``attention_levels`` and the middle one) also cross-attends to the string's character
            tokens (:class:`CrossAttention`), besides the pooled text embedding added to the time
            embedding: each region of the image can look up the character it should draw, instead of
            decoding positions from one pooled vector (the way text-to-image models condition).
        scale_shift: FiLM-style time conditioning (True) or additive (False, Ho et al.).
        num_groups: GroupNorm groups; every level's width must be divisible by it.
        gradient_checkpointing: recompute each stage's activations in the backward pass (less memory,
            about 30% more compute); only while training with gradients enabled.
        patch_size: p > 1 folds each p x p patch of pixels into channels before the input conv
            (``pixel_unshuffle``: [B, C, H, W] -> [B, C p^2, H/p, W/p]) and unfolds the output the same
            way (``pixel_shuffle``), so level 0 works at H/p x W/p: the "simple diffusion" stem of
            Hoogeboom et al. 2023. Fewer, wider pixels cost far less on a CPU (the full-resolution
            level of a narrow UNet is mostly memory traffic); ``image_size`` must then be divisible by
            p * 2**(len(channel_mults) - 1), and ``attention_resolutions`` count the reduced pixels.

    Attributes:
        condition_encoder: the :class:`ClassEmbedding` / :class:`TextEmbedding`, or None.

    Shapes: x_t [B, in_channels, H, W] (contiguous or channels-last), t int64 [B], cond: int64 labels [B]
    for "class", a list of B strings for "text" -> [B, out_channels, H, W].
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] | None = None,
        attention_resolutions: Sequence[int] | None = None,
        num_heads: int = 4,
        head_dim: int | None = None,
        dropout: float = 0.1,
        image_size: int = 32,
        condition: Literal["class", "text"] | None = None,
        num_classes: int | None = None,
        text_charset: str | None = None,
        text_length: int | None = None,
        text_token_dim: int = 64,
        text_pooling: Literal["flatten", "mean"] = "flatten",
        text_cross_attention: bool = False,
        scale_shift: bool = True,
        num_groups: int = 32,
        gradient_checkpointing: bool = False,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        channel_mults = tuple(channel_mults)
        _check_sizes(
            in_channels, out_channels, base_channels, channel_mults, num_res_blocks, dropout, image_size,
            patch_size,
        )
        _check_groups(base_channels, channel_mults, num_groups)
        if condition not in CONDITION_KINDS:
            raise ValueError(f"unknown condition {condition!r}; choose one of None, 'class', 'text'")
        levels = _attention_levels(
            attention_levels, attention_resolutions, image_size // patch_size, len(channel_mults)
        )
        if text_cross_attention and condition != "text":
            raise ValueError("text_cross_attention needs condition='text'")
        self.text_cross_attention = bool(text_cross_attention)
        context_dim = text_token_dim if text_cross_attention else None
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch_size = patch_size
        self.downsampling_factor = patch_size * 2 ** (len(channel_mults) - 1)
        self.gradient_checkpointing = gradient_checkpointing
        widths = [base_channels * mult for mult in channel_mults]
        emb_dim = 4 * base_channels

        self.time_embedding = TimestepEmbedding(base_channels, emb_dim)
        self.condition_encoder = build_condition_encoder(
            condition,
            emb_dim,
            num_classes=num_classes,
            text_charset=text_charset,
            text_length=text_length,
            text_token_dim=text_token_dim,
            text_pooling=text_pooling,
        )

        def stage(in_ch: int, out_ch: int, attention: bool) -> UNetStage:
            residual = ResidualBlock(in_ch, out_ch, emb_dim, dropout, num_groups, scale_shift)
            heads = _heads(out_ch, num_heads, head_dim) if attention else 0
            block = AttentionBlock(out_ch, heads, num_groups, context_dim) if attention else None
            return UNetStage(residual, block)

        self.input_conv = nn.Conv2d(in_channels * patch_size**2, base_channels, 3, padding=1)
        self.down_levels, skip_widths = self._build_down(widths, base_channels, num_res_blocks, levels, stage)
        self.middle = nn.ModuleList(
            [stage(widths[-1], widths[-1], True), stage(widths[-1], widths[-1], False)]
        )
        self.up_levels = self._build_up(widths, skip_widths, num_res_blocks, levels, stage)
        self.output_norm = nn.GroupNorm(num_groups, base_channels)
        self.output_conv = _zero_init(
            nn.Conv2d(base_channels, self.out_channels * patch_size**2, 3, padding=1)
        )

    @staticmethod
    def _build_down(widths, base_channels, num_res_blocks, attention_levels, stage):
        """Down-path levels and the widths of every output saved for the skip connections."""
        levels, skip_widths, width = nn.ModuleList(), [base_channels], base_channels
        for index, level_width in enumerate(widths):
            stages = []
            for _ in range(num_res_blocks):
                stages.append(stage(width, level_width, index in attention_levels))
                width = level_width
                skip_widths.append(width)
            last = index == len(widths) - 1
            levels.append(UNetLevel(stages, None if last else Downsample(width)))
            if not last:
                skip_widths.append(width)
        return levels, skip_widths

    @staticmethod
    def _build_up(widths, skip_widths, num_res_blocks, attention_levels, stage):
        """Up-path levels, deepest first; each stage consumes one skip width from the end."""
        skip_widths, levels, width = list(skip_widths), nn.ModuleList(), widths[-1]
        for index in reversed(range(len(widths))):
            stages = []
            for _ in range(num_res_blocks + 1):
                stages.append(stage(width + skip_widths.pop(), widths[index], index in attention_levels))
                width = widths[index]
            levels.append(UNetLevel(stages, Upsample(width) if index > 0 else None))
        return levels

    def _run(
        self, stage: UNetStage, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, context, use_reentrant=False)
        return stage(h, emb, context)

    def embed(
        self,
        t: torch.Tensor,
        cond: Any,
        batch: int,
        device: torch.device,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Time (+ condition) embedding [B, 4 * base_channels], after SiLU, as every block consumes it.

        ``context``: the condition's tokens from :meth:`context`, when already computed (the pooled text
        embedding is then taken from them instead of tokenizing the strings again)."""
        emb = self.time_embedding(batch_timesteps(t, batch, device))
        if context is not None:
            cond_emb = self.condition_encoder.pool(context)
        else:
            cond_emb = embed_condition(self.condition_encoder, cond, batch, device)
        if cond_emb is not None:
            emb = emb + cond_emb
        return F.silu(emb)

    def context(self, cond: Any, batch: int, device: torch.device) -> torch.Tensor | None:
        """The tokens [B, L, text_token_dim] the attention blocks cross-attend to (None without
        ``text_cross_attention``); ``cond=None`` gives the null condition's tokens."""
        if not self.text_cross_attention:
            return None
        encoder = self.condition_encoder
        tokens = encoder.tokens(encoder.null_batch(batch, device) if cond is None else cond)
        if tokens.shape[0] != batch:
            raise ValueError(f"got {tokens.shape[0]} conditions for a batch of {batch}")
        return tokens

    def check_input(self, x_t: torch.Tensor) -> None:
        """Raise ValueError unless x_t is [B, in_channels, H, W] with H and W divisible as needed."""
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects x_t of shape [B, {self.in_channels}, H, W], got {list(x_t.shape)}"
            )
        height, width = x_t.shape[-2:]
        factor = self.downsampling_factor
        if height % factor or width % factor:
            raise ValueError(
                f"this UNet ({len(self.down_levels)} levels) needs the image height and width divisible by "
                f"{factor}, got {height}x{width}"
            )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x_t [B, C, H, W], t int64 [B] (original timestep indices), cond or None -> [B, C_out, H, W]."""
        self.check_input(x_t)
        batch, device = x_t.shape[0], x_t.device
        context = self.context(cond, batch, device)  # text tokens once per call (None without cross-attn)
        emb = self.embed(t, cond, batch, device, context)
        h = self.input_conv(F.pixel_unshuffle(x_t, self.patch_size) if self.patch_size > 1 else x_t)
        skips = [h]
        for level in self.down_levels:
            for stage in level.stages:
                h = self._run(stage, h, emb, context)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        for stage in self.middle:
            h = self._run(stage, h, emb, context)
        for level in self.up_levels:
            for stage in level.stages:
                h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb, context)
            if level.resample is not None:
                h = level.resample(h)
        out = self.output_conv(F.silu(self.output_norm(h)))
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out


def _check_sizes(
    in_channels, out_channels, base_channels, channel_mults, num_res_blocks, dropout, image_size, patch_size=1
):
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    for name, value in (("in_channels", in_channels), ("base_channels", base_channels)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if out_channels is not None and out_channels < 1:
        raise ValueError(f"out_channels must be at least 1, got {out_channels}")
    if not channel_mults or any(mult < 1 for mult in channel_mults):
        raise ValueError(
            f"channel_mults must be a non-empty list of positive integers, got {list(channel_mults)}"
        )
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be at least 1, got {num_res_blocks}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    factor = patch_size * 2 ** (len(channel_mults) - 1)
    if image_size < 1 or image_size % factor:
        raise ValueError(
            f"image_size must be divisible by {factor} (patch_size * 2 ** (len(channel_mults) - 1) for "
            f"{len(channel_mults)} levels and patch_size {patch_size}), got {image_size}"
        )


def _check_groups(base_channels: int, channel_mults: tuple[int, ...], num_groups: int) -> None:
    widths = sorted({base_channels, *(base_channels * mult for mult in channel_mults)})
    bad = [width for width in widths if width % num_groups]
    if num_groups < 1 or bad:
        raise ValueError(
            f"num_groups={num_groups} must divide every level's width {widths}; it does not divide {bad}"
        )


def _attention_levels(
    levels: Sequence[int] | None, resolutions: Sequence[int] | None, image_size: int, num_levels: int
) -> frozenset[int]:
    """The attention level indices from either argument (or the default), validated."""
    if levels is not None and resolutions is not None:
        raise ValueError("give attention_levels or attention_resolutions, not both")
    allowed_levels = list(range(num_levels))
    if resolutions is not None:
        sizes = [image_size // 2**level for level in allowed_levels]
        unknown = [size for size in resolutions if size not in sizes]
        if unknown:
            raise ValueError(f"attention resolutions {unknown} are not among this UNet's resolutions {sizes}")
        return frozenset(sizes.index(size) for size in resolutions)
    if levels is None:
        return frozenset({1} if num_levels > 1 else ())
    unknown = [level for level in levels if level not in allowed_levels]
    if unknown:
        raise ValueError(f"attention levels {unknown} are not among this UNet's levels {allowed_levels}")
    return frozenset(levels)


def _heads(channels: int, num_heads: int, head_dim: int | None) -> int:
    """Number of attention heads for a block of ``channels``, validated."""
    if head_dim is not None:
        if head_dim < 1 or channels % head_dim:
            raise ValueError(f"head_dim={head_dim} must divide the attention width {channels}")
        return channels // head_dim
    if num_heads < 1 or channels % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the attention width {channels}")
    return num_heads
