"""The UNet's building blocks: residual blocks, self- and cross-attention, down- and upsampling.

See :mod:`ddpmlab.models.unet` for how they are put together (Ho et al. 2020, appendix B, with the
options of Nichol & Dhariwal 2021) and what each option means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ResidualBlock",
    "AttentionBlock",
    "CrossAttention",
    "COORDINATE_FREQUENCIES",
    "coordinate_features",
    "Downsample",
    "Upsample",
    "zero_init",
    "memory_format",
]

def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResidualBlock(nn.Module):
    """Residual block with time-embedding injection (Ho et al. 2020; FiLM variant of Nichol & Dhariwal).

    Shapes: x [B, in_channels, H, W], emb [B, emb_dim] (already passed through SiLU)
    -> [B, out_channels, H, W]. ``eps``: both GroupNorms' epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        num_groups: int,
        scale_shift: bool,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm_1 = nn.GroupNorm(num_groups, in_channels, eps=eps)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_projection = nn.Linear(emb_dim, 2 * out_channels if scale_shift else out_channels)
        self.norm_2 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
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

    Shapes: x [B, C, H, W], context [B, L, context_dim] or None -> [B, C, H, W]. ``eps``: the
    GroupNorms' epsilon.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        num_groups: int,
        context_dim: int | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.projection = zero_init(nn.Conv2d(channels, channels, 1))
        self.cross = (
            CrossAttention(channels, context_dim, num_heads, num_groups, eps) if context_dim else None
        )

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
        return x + out.contiguous(memory_format=memory_format(x))


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

    def __init__(
        self, channels: int, context_dim: int, num_heads: int, num_groups: int, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.position = nn.Linear(4 * COORDINATE_FREQUENCIES, channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(context_dim, 2 * channels)
        self.projection = zero_init(nn.Linear(channels, channels))

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
        return x + out.contiguous(memory_format=memory_format(x))


def memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [B, C, H, W] -> [B, C, H/2, W/2].

    ``padding`` 1 (the default) pads one pixel on every side; 0 pads one pixel on the right and at the
    bottom only, as Ho et al.'s own code (and diffusers' ``downsample_padding=0``) does. Other values
    raise ValueError.
    """

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(f"downsample padding must be 0 or 1, got {padding!r}")
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
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
        return out.contiguous(memory_format=memory_format(x))


def _phase_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps of ``weight`` along ``dim`` merged into 2 for each output phase of a x2 upsampling:
    phase 0 sees input offsets (-1, 0) with taps {0}, {1, 2}; phase 1 sees (0, +1) with taps {0, 1}, {2}."""
    t0, t1, t2 = weight.unbind(dim)
    return torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)

