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
al. 2022), so that each region of the image can look up the character it should draw. With
``text_glyph`` they also see the string drawn in a plain font (:class:`~ddpmlab.models.glyphs.GlyphBank`)
as one more input channel beside x_t (TextDiffuser, GlyphControl): the task becomes restyling.

Residual block: GroupNorm -> SiLU -> Conv3x3 -> time embedding -> GroupNorm -> SiLU -> Dropout ->
zero-initialised Conv3x3, plus a 1x1 conv on the skip when the width changes. The time embedding is
added to the features (Ho et al.), or with ``scale_shift=True`` applied FiLM-style after the second norm,
h = norm(h) * (1 + scale) + shift (Nichol & Dhariwal 2021, "improved DDPM").

With in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention at 16x16
(level 1) and additive time embedding, this is Ho et al.'s CIFAR-10 model: 35,746,307 parameters (the
paper: 35.7M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ddpmlab.models.blocks import (
    COORDINATE_FREQUENCIES,
    AttentionBlock,
    CrossAttention,
    Downsample,
    ResidualBlock,
    Upsample,
    coordinate_features,
    zero_init,
)
from ddpmlab.models.checks import attention_heads, check_groups, check_sizes, resolve_attention_levels
from ddpmlab.models.embeddings import (
    CONDITION_KINDS,
    TimestepEmbedding,
    batch_timesteps,
    build_condition_encoder,
    embed_condition,
)
from ddpmlab.models.glyphs import GlyphBank, glyph_centres

__all__ = [
    "UNet",
    "ResidualBlock",
    "AttentionBlock",
    "CrossAttention",
    "COORDINATE_FREQUENCIES",
    "coordinate_features",
    "count_parameters",
]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)



def _check_text_options(condition: str | None, text_cross_attention: bool, text_glyph: bool) -> None:
    if text_cross_attention and condition != "text":
        raise ValueError("text_cross_attention needs condition='text'")
    if not isinstance(text_glyph, bool):
        raise ValueError(f"text_glyph must be true or false, got {text_glyph!r}")
    if text_glyph and condition != "text":
        raise ValueError("text_glyph needs condition='text'")


def _glyph_bank(
    text_glyph: bool, charset: str | None, length: int | None, size: Sequence[int] | None, image_size: int
) -> GlyphBank | None:
    """The UNet's :class:`GlyphBank` (None without ``text_glyph``); ``size`` defaults to a square."""
    if not text_glyph:
        return None
    size = list(size) if size is not None else [image_size, image_size]
    if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in size):
        raise ValueError(f"text_glyph_size must be [height, width] in pixels, got {size!r}")
    return GlyphBank(charset, length, *size)


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
        text_glyph: with ``condition="text"``, x_t is concatenated (before the patch folding) with one
            more channel, the glyph image of the string: its characters drawn once in Pillow's default
            font and laid side by side (:class:`~ddpmlab.models.glyphs.GlyphBank`, a buffer saved with
            the weights; the null string "" is blank). The outputs keep ``in_channels`` channels.
        text_glyph_size: (height, width) of the glyph image, the training images' size; default
            (image_size, image_size). Inputs of another size get the glyph image resized to theirs.
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
        norm_eps: every GroupNorm's epsilon (1e-5; Ho et al.'s published models use 1e-6).
        time_frequency_shift: 0 or 1, the ``frequency_shift`` of the sinusoidal timestep features
            (:func:`~ddpmlab.models.embeddings.sinusoidal_embedding`; Ho et al.'s code uses 1).
        downsample_padding: 1 pads the stride-2 convs on every side; 0 only on the right and at the
            bottom, as Ho et al.'s code (:class:`~ddpmlab.models.blocks.Downsample`).

    The last three only matter for models imported from other code (``ddpmlab import-diffusers``):
    their defaults are what ddpmlab has always trained.

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
        text_glyph: bool = False,
        text_glyph_size: Sequence[int] | None = None,
        scale_shift: bool = True,
        num_groups: int = 32,
        gradient_checkpointing: bool = False,
        patch_size: int = 1,
        norm_eps: float = 1e-5,
        time_frequency_shift: float = 0.0,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__()
        channel_mults = tuple(channel_mults)
        check_sizes(
            in_channels, out_channels, base_channels, channel_mults, num_res_blocks, dropout, image_size,
            patch_size,
        )
        check_groups(base_channels, channel_mults, num_groups)
        if condition not in CONDITION_KINDS:
            raise ValueError(f"unknown condition {condition!r}; choose one of None, 'class', 'text'")
        levels = resolve_attention_levels(
            attention_levels, attention_resolutions, image_size // patch_size, len(channel_mults)
        )
        _check_text_options(condition, text_cross_attention, text_glyph)
        self.text_cross_attention = bool(text_cross_attention)
        context_dim = text_token_dim if text_cross_attention else None
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch_size = patch_size
        self.downsampling_factor = patch_size * 2 ** (len(channel_mults) - 1)
        self.gradient_checkpointing = gradient_checkpointing
        widths = [base_channels * mult for mult in channel_mults]
        emb_dim = 4 * base_channels

        self.time_embedding = TimestepEmbedding(base_channels, emb_dim, time_frequency_shift)
        self.condition_encoder = build_condition_encoder(
            condition, emb_dim, num_classes=num_classes, text_charset=text_charset, text_length=text_length,
            text_token_dim=text_token_dim, text_pooling=text_pooling,
        )
        self.glyph_bank = _glyph_bank(text_glyph, text_charset, text_length, text_glyph_size, image_size)

        def stage(in_ch: int, out_ch: int, attention: bool) -> UNetStage:
            residual = ResidualBlock(in_ch, out_ch, emb_dim, dropout, num_groups, scale_shift, norm_eps)
            heads = attention_heads(out_ch, num_heads, head_dim) if attention else 0
            block = AttentionBlock(out_ch, heads, num_groups, context_dim, norm_eps) if attention else None
            return UNetStage(residual, block)

        input_width = (in_channels + int(text_glyph)) * patch_size**2  # x_t's channels (+ the glyph image)
        self.input_conv = nn.Conv2d(input_width, base_channels, 3, padding=1)
        self.down_levels, skip_widths = self._build_down(
            widths, base_channels, num_res_blocks, levels, stage, downsample_padding
        )
        deepest = widths[-1]
        self.middle = nn.ModuleList([stage(deepest, deepest, True), stage(deepest, deepest, False)])
        self.up_levels = self._build_up(widths, skip_widths, num_res_blocks, levels, stage)
        self.output_norm = nn.GroupNorm(num_groups, base_channels, eps=norm_eps)
        self.output_conv = zero_init(
            nn.Conv2d(base_channels, self.out_channels * patch_size**2, 3, padding=1)
        )

    @staticmethod
    def _build_down(widths, base_channels, num_res_blocks, attention_levels, stage, downsample_padding):
        """Down-path levels and the widths of every output saved for the skip connections."""
        levels, skip_widths, width = nn.ModuleList(), [base_channels], base_channels
        for index, level_width in enumerate(widths):
            stages = []
            for _ in range(num_res_blocks):
                stages.append(stage(width, level_width, index in attention_levels))
                width = level_width
                skip_widths.append(width)
            last = index == len(widths) - 1
            levels.append(UNetLevel(stages, None if last else Downsample(width, downsample_padding)))
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

    def glyph_image(self, cond: Any, batch: int, size: Sequence[int]) -> torch.Tensor:
        """The glyph image [B, 1, *size] of the strings ``cond`` (``None``: the null string, blank); a
        :class:`~ddpmlab.models.glyphs.PlacedText` has its characters drawn at its centres."""
        encoder = self.condition_encoder
        token_ids = encoder.tokenize(encoder.null_batch(batch) if cond is None else cond)
        if token_ids.shape[0] != batch:
            raise ValueError(f"got {token_ids.shape[0]} conditions for a batch of {batch}")
        image = self.glyph_bank(token_ids, None if cond is None else glyph_centres(cond, encoder.length))
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)
        return image

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
        if self.glyph_bank is not None:
            glyphs = self.glyph_image(cond, batch, x_t.shape[-2:]).to(device=device, dtype=x_t.dtype)
            x_t = torch.cat([x_t, glyphs], dim=1)
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
