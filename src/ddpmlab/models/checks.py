"""Checks of a UNet's options, shared by :class:`~ddpmlab.models.unet.UNet` and the noise-aware
classifier built from its encoder half; each raises ValueError with the reason."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_sizes", "check_groups", "resolve_attention_levels", "attention_heads"]

def check_sizes(
    in_channels, out_channels, base_channels, channel_mults, num_res_blocks, dropout, image_size, patch_size=1
):
    """Channel counts, multipliers, block counts and dropout in range; ``image_size`` divisible by the
    total downsampling (``patch_size * 2 ** (levels - 1)``)."""
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


def check_groups(base_channels: int, channel_mults: tuple[int, ...], num_groups: int) -> None:
    """GroupNorm's ``num_groups`` divides every level's width."""
    widths = sorted({base_channels, *(base_channels * mult for mult in channel_mults)})
    bad = [width for width in widths if width % num_groups]
    if num_groups < 1 or bad:
        raise ValueError(
            f"num_groups={num_groups} must divide every level's width {widths}; it does not divide {bad}"
        )


def resolve_attention_levels(
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


def attention_heads(channels: int, num_heads: int, head_dim: int | None) -> int:
    """Number of attention heads for a block of ``channels``, validated."""
    if head_dim is not None:
        if head_dim < 1 or channels % head_dim:
            raise ValueError(f"head_dim={head_dim} must divide the attention width {channels}")
        return channels // head_dim
    if num_heads < 1 or channels % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the attention width {channels}")
    return num_heads

