"""Our :class:`~ddpmlab.models.unet.UNet` in diffusers' format, both ways, without importing diffusers.

diffusers' ``UNet2DModel`` (the network of ``DDPMPipeline`` / ``DDIMPipeline``) computes the same
network as our UNet block for block: a 3x3 input conv, per level ``layers_per_block`` residual blocks
(each followed by attention in ``AttnDownBlock2D`` levels) and a stride-2 conv, a middle of residual
block -> attention -> residual block, an up path of ``layers_per_block + 1`` residual blocks per level
on the concatenated skips, then GroupNorm -> SiLU -> 3x3 conv. This module translates

- the configuration: :func:`unet2d_config` (our UNet -> ``unet/config.json``) and
  :func:`unet_options` (``config.json`` -> our UNet's options, as ``build_model`` takes them);
- the weights: :func:`state_dict_to_diffusers` and :func:`state_dict_from_diffusers` (names and
  shapes; values unchanged except where stated).

Configuration keys, diffusers -> ours:

======================================  ==========================================================
``in_channels`` / ``out_channels``      ``in_channels`` (out_channels must equal it: no learned variance)
``sample_size`` (int or [H, W])         ``image_size`` (W; the data shape is [in_channels, H, W])
``block_out_channels`` [C_0, ...]       ``base_channels`` C_0, ``channel_mults`` C_l / C_0 (integers)
``layers_per_block``                    ``num_res_blocks``
``down_block_types`` / ``up_block_types``  ``attention_levels``: the ``AttnDownBlock2D`` levels (the up
                                        path must mirror them with ``AttnUpBlock2D``)
``attention_head_dim``                  ``head_dim``; null: one head per block (``num_heads`` 1)
``norm_num_groups`` / ``norm_eps``      ``num_groups`` / ``norm_eps``
``resnet_time_scale_shift``             ``scale_shift`` (``default``: False, ``scale_shift``: True)
``attn_norm_num_groups``                null, or ``norm_num_groups``: our middle attention always
                                        normalises (with scale_shift diffusers needs it set)
``freq_shift`` / ``flip_sin_to_cos``    ``time_frequency_shift`` / the order of the sinusoidal features
                                        (ours [sin, cos]: flipped weights are reordered)
``downsample_padding``                  ``downsample_padding`` (0 or 1)
``dropout``                             ``dropout``
``num_class_embeds`` N                  ``condition: class``; ``num_classes`` N - 1 when the folder was
                                        written by ddpmlab (its last row is our null class), else N
                                        (a null class is added with a zero embedding)
======================================  ==========================================================

Everything else must have diffusers' default value (positional time embedding, SiLU, conv up- and
downsampling, a ``UNetMidBlock2D`` with attention, no input centring, ``mid_block_scale_factor`` 1);
any other value raises ValueError naming the key. Our UNets that diffusers cannot express raise too:
``patch_size`` > 1, text conditioning, attention heads of unequal widths.

Weights (ours -> diffusers): ``input_conv`` -> ``conv_in``; ``time_embedding.linear_{1,2}`` ->
``time_embedding.linear_{1,2}``; ``condition_encoder.embedding`` -> ``class_embedding`` (all rows, the
null class last); ``{down,up}_levels.i.stages.j.residual`` -> ``{down,up}_blocks.i.resnets.j`` (norm_1 ->
norm1, conv_1 -> conv1, emb_projection -> time_emb_proj, norm_2 -> norm2, conv_2 -> conv2, skip ->
conv_shortcut); ``...stages.j.attention`` -> ``...attentions.j`` (norm -> group_norm, the 1x1 conv qkv
[3C, C, 1, 1] -> to_q, to_k, to_v [C, C] each, projection [C, C, 1, 1] -> to_out.0 [C, C]);
``{down,up}_levels.i.resample.conv`` -> ``{down,up}_blocks.i.{down,up}samplers.0.conv``;
``middle.0`` / ``middle.1`` -> ``mid_block.resnets.0`` + ``attentions.0`` / ``resnets.1``;
``output_norm`` -> ``conv_norm_out``, ``output_conv`` -> ``conv_out``. Old diffusers files name the
attention weights ``query``, ``key``, ``value``, ``proj_attn``: :func:`state_dict_from_diffusers`
reads those too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ddpmlab.models.embeddings import TextEmbedding
from ddpmlab.models.unet import UNet

__all__ = [
    "DIFFUSERS_VERSION",
    "DDPMLAB_KEY",
    "unet2d_config",
    "unet_options",
    "sample_shape",
    "state_dict_to_diffusers",
    "state_dict_from_diffusers",
]

DIFFUSERS_VERSION = "0.42.0"  # the diffusers release the written folders were checked with
DDPMLAB_KEY = "_ddpmlab"  # our own notes in config.json (diffusers ignores keys starting with "_")
DOWN, ATTN_DOWN, UP, ATTN_UP = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"

# Keys that must keep diffusers' default value (key -> (default, the values we accept)).
_FIXED = {
    "time_embedding_type": ("positional", ("positional",)),
    "center_input_sample": (False, (False,)),
    "mid_block_type": ("UNetMidBlock2D", ("UNetMidBlock2D",)),
    "mid_block_scale_factor": (1, (1,)),
    "downsample_type": ("conv", ("conv",)),
    "upsample_type": ("conv", ("conv",)),
    "act_fn": ("silu", ("silu",)),
    "class_embed_type": (None, (None,)),
    "add_attention": (True, (True,)),
    "resnet_time_scale_shift": ("default", ("default", "scale_shift")),
    "downsample_padding": (1, (0, 1)),
}
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


# --------------------------------------------------------------------------------------------------
# Configuration.
# --------------------------------------------------------------------------------------------------


def _attention_blocks(model: UNet) -> list[nn.Module]:
    stages = [stage for level in (*model.down_levels, *model.up_levels) for stage in level.stages]
    return [stage.attention for stage in (*stages, *model.middle) if stage.attention is not None]


def _attention_head_dim(model: UNet) -> int | None:
    """diffusers' one ``attention_head_dim`` for every attention block (None: one head each)."""
    blocks = _attention_blocks(model)
    if all(block.num_heads == 1 for block in blocks):
        return None
    widths = {block.qkv.in_channels // block.num_heads for block in blocks}
    if len(widths) != 1:
        raise ValueError(
            f"diffusers' UNet2DModel has one attention head width; this UNet's heads are {sorted(widths)} "
            "channels wide (choose head_dim instead of num_heads)"
        )
    return widths.pop()


def _check_expressible(model: nn.Module) -> None:
    if not isinstance(model, UNet):
        raise ValueError(f"diffusers' UNet2DModel holds image UNets, not a {type(model).__name__}")
    if model.patch_size > 1:
        raise ValueError(
            f"patch_size {model.patch_size} folds pixels into channels; diffusers' UNet2DModel has no "
            "such stem"
        )
    if isinstance(model.condition_encoder, TextEmbedding):
        raise ValueError(
            "text conditioning cannot be expressed in diffusers' UNet2DModel (it embeds class labels only)"
        )
    if model.out_channels != model.in_channels:
        raise ValueError("diffusers' DDPM pipelines need out_channels equal to in_channels")


def unet2d_config(model: UNet, sample_size: int | tuple[int, int]) -> dict[str, Any]:
    """The ``unet/config.json`` of diffusers' ``UNet2DModel`` that computes ``model``.

    ``sample_size``: the image size (an int for square images, else (H, W)). A class-conditional model
    gets ``num_class_embeds`` = its classes + 1 (our null class is the last row) and the note
    ``_ddpmlab: {num_classes: N}`` (diffusers ignores keys starting with ``_``).

    Raises:
        ValueError: a model diffusers cannot express (not a UNet, patch_size > 1, text conditioning,
            attention heads of unequal widths, out_channels != in_channels).
    """
    _check_expressible(model)
    levels = model.down_levels
    attention = [level.stages[0].attention is not None for level in levels]
    residual = levels[0].stages[0].residual
    downsamplers = [level.resample for level in levels if level.resample is not None]
    shift = float(model.time_embedding.frequency_shift)
    encoder = model.condition_encoder
    config = {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": sample_size if isinstance(sample_size, int) else list(sample_size),
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": int(shift) if shift.is_integer() else shift,
        "flip_sin_to_cos": False,
        "down_block_types": [ATTN_DOWN if a else DOWN for a in attention],
        "up_block_types": [ATTN_UP if a else UP for a in reversed(attention)],
        "block_out_channels": [level.stages[0].residual.conv_1.out_channels for level in levels],
        "layers_per_block": len(levels[0].stages),
        "mid_block_scale_factor": 1,
        "downsample_padding": downsamplers[0].padding if downsamplers else 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": residual.dropout.p,
        "act_fn": "silu",
        "attention_head_dim": _attention_head_dim(model),
        "norm_num_groups": model.output_norm.num_groups,
        "attn_norm_num_groups": model.output_norm.num_groups if residual.scale_shift else None,
        "norm_eps": model.output_norm.eps,
        "resnet_time_scale_shift": "scale_shift" if residual.scale_shift else "default",
        "add_attention": True,
        "class_embed_type": None,
        "num_class_embeds": encoder.embedding.num_embeddings if encoder is not None else None,
    }
    if encoder is not None:
        config[DDPMLAB_KEY] = {"num_classes": encoder.num_classes}
    return config


def _check_fixed(config: Mapping[str, Any]) -> None:
    for key, (default, allowed) in _FIXED.items():
        value = config.get(key, default)
        if value not in allowed:
            raise ValueError(
                f"UNet2DModel {key}={value!r} cannot be expressed in ddpmlab's UNet (it needs {allowed})"
            )


def _attention_levels(config: Mapping[str, Any]) -> list[int]:
    down, up = list(config.get("down_block_types", ())), list(config.get("up_block_types", ()))
    unknown = sorted({kind for kind in down + up if kind not in (DOWN, ATTN_DOWN, UP, ATTN_UP)})
    if unknown:
        raise ValueError(f"UNet2DModel blocks {unknown} have no counterpart in ddpmlab's UNet")
    mirrored = [ATTN_UP if kind == ATTN_DOWN else UP for kind in reversed(down)]
    if not down or up != mirrored:
        raise ValueError(
            f"ddpmlab's UNet attends at the same levels on both paths: up_block_types {up} do not mirror "
            f"down_block_types {down}"
        )
    return [index for index, kind in enumerate(down) if kind == ATTN_DOWN]


def _widths(config: Mapping[str, Any]) -> tuple[int, list[int]]:
    widths = [int(width) for width in config.get("block_out_channels", ())]
    if len(widths) != len(config.get("down_block_types", ())):
        raise ValueError("UNet2DModel block_out_channels and down_block_types differ in length")
    base = widths[0]
    if any(width % base for width in widths):
        raise ValueError(
            f"UNet2DModel block_out_channels {widths} are not multiples of the first (channel_mults)"
        )
    return base, [width // base for width in widths]


def sample_shape(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """The image shape (C, H, W) of a ``UNet2DModel`` config (its ``in_channels`` and ``sample_size``).

    Raises:
        ValueError: no ``sample_size``, or not an int or a pair.
    """
    size = config.get("sample_size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"UNet2DModel sample_size must be an image size, got {size!r}")
    return int(config.get("in_channels", 3)), int(size[0]), int(size[1])


def _num_classes(config: Mapping[str, Any]) -> int | None:
    rows = config.get("num_class_embeds")
    if rows is None:
        return None
    noted = (config.get(DDPMLAB_KEY) or {}).get("num_classes")
    return int(noted) if noted == rows - 1 else int(rows)


def unet_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our UNet's options (``build_model({"type": "unet", **options})``) for a ``UNet2DModel`` config
    (the dict of its ``config.json``), following the table of the module docstring.

    Raises:
        ValueError: one line naming the key whose value our UNet cannot express.
    """
    _check_fixed(config)
    base, mults = _widths(config)
    groups, shift = int(config.get("norm_num_groups", 32)), config.get("resnet_time_scale_shift", "default")
    attention_groups = config.get("attn_norm_num_groups")
    if attention_groups not in (None, groups) or (shift == "scale_shift" and attention_groups is None):
        raise ValueError(
            f"UNet2DModel attn_norm_num_groups={attention_groups!r} with resnet_time_scale_shift={shift!r}: "
            "ddpmlab's middle attention always has a GroupNorm of norm_num_groups groups"
        )
    if config.get("time_embedding_dim") not in (None, 4 * base):
        raise ValueError(
            f"UNet2DModel time_embedding_dim must be 4 x {base}, got {config['time_embedding_dim']}"
        )
    channels, out_channels = sample_shape(config)[0], config.get("out_channels", 3)
    if out_channels != channels:
        raise ValueError(
            f"UNet2DModel out_channels={out_channels} != in_channels={channels}: ddpmlab's DDPMs predict one "
            "value per pixel (no learned variance)"
        )
    head_dim = config.get("attention_head_dim", 8)
    options: dict[str, Any] = {
        "in_channels": channels,
        "base_channels": base,
        "channel_mults": mults,
        "num_res_blocks": int(config.get("layers_per_block", 2)),
        "attention_levels": _attention_levels(config),
        **({"num_heads": 1} if head_dim is None else {"head_dim": int(head_dim)}),
        "dropout": float(config.get("dropout", 0.0)),
        "image_size": sample_shape(config)[2],
        "scale_shift": shift == "scale_shift",
        "num_groups": groups,
        "norm_eps": float(config.get("norm_eps", 1e-5)),
        "time_frequency_shift": float(config.get("freq_shift", 0)),
        "downsample_padding": int(config.get("downsample_padding", 1)),
    }
    num_classes = _num_classes(config)
    if num_classes is not None:
        options.update(condition="class", num_classes=num_classes)
    return options


# --------------------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------------------

# How a tensor changes between the two formats: "copy"; "pointwise" (our 1x1 conv [O, I, 1, 1] <->
# their linear [O, I]); "qkv" (our one [3C, ...] <-> their three [C, ...]); "time" (the first linear of
# the time embedding: its input columns reordered when diffusers flips sin and cos); "class" (the
# class embedding: diffusers' table may lack our null class row).
_Pair = tuple[str, tuple[str, ...], str]


def _module(pairs: list[_Pair], ours: str, theirs: str, weight_kind: str = "copy") -> None:
    pairs.append((f"{ours}.weight", (f"{theirs}.weight",), weight_kind))
    pairs.append((f"{ours}.bias", (f"{theirs}.bias",), "copy"))


def _residual(pairs: list[_Pair], ours: str, theirs: str, block: nn.Module) -> None:
    names = [("norm_1", "norm1"), ("conv_1", "conv1"), ("emb_projection", "time_emb_proj")]
    names += [("norm_2", "norm2"), ("conv_2", "conv2")]
    names += [("skip", "conv_shortcut")] if isinstance(block.skip, nn.Conv2d) else []
    for a, b in names:
        _module(pairs, f"{ours}.{a}", f"{theirs}.{b}")


def _attention(pairs: list[_Pair], ours: str, theirs: str) -> None:
    _module(pairs, f"{ours}.norm", f"{theirs}.group_norm")
    for p in ("weight", "bias"):
        pairs.append((f"{ours}.qkv.{p}", tuple(f"{theirs}.to_{x}.{p}" for x in "qkv"), "qkv"))
    _module(pairs, f"{ours}.projection", f"{theirs}.to_out.0", weight_kind="pointwise")


def _pairs(model: UNet) -> list[_Pair]:
    """Every parameter of ``model`` with the diffusers parameter(s) it corresponds to."""
    pairs: list[_Pair] = []
    _module(pairs, "input_conv", "conv_in")
    _module(pairs, "time_embedding.linear_1", "time_embedding.linear_1", weight_kind="time")
    _module(pairs, "time_embedding.linear_2", "time_embedding.linear_2")
    if model.condition_encoder is not None:
        pairs.append(("condition_encoder.embedding.weight", ("class_embedding.weight",), "class"))
    for direction, levels in (("down", model.down_levels), ("up", model.up_levels)):
        for i, level in enumerate(levels):
            for j, stage in enumerate(level.stages):
                ours, theirs = f"{direction}_levels.{i}.stages.{j}", f"{direction}_blocks.{i}"
                _residual(pairs, f"{ours}.residual", f"{theirs}.resnets.{j}", stage.residual)
                if stage.attention is not None:
                    _attention(pairs, f"{ours}.attention", f"{theirs}.attentions.{j}")
            if level.resample is not None:
                resampler = f"{direction}_blocks.{i}.{direction}samplers.0.conv"
                _module(pairs, f"{direction}_levels.{i}.resample.conv", resampler)
    _residual(pairs, "middle.0.residual", "mid_block.resnets.0", model.middle[0].residual)
    _attention(pairs, "middle.0.attention", "mid_block.attentions.0")
    _residual(pairs, "middle.1.residual", "mid_block.resnets.1", model.middle[1].residual)
    _module(pairs, "output_norm", "conv_norm_out")
    _module(pairs, "output_conv", "conv_out")
    return pairs


def _swap_sin_cos(weight: torch.Tensor) -> torch.Tensor:
    """The time embedding's first linear layer [hidden, dim] for features [cos, sin] <-> [sin, cos]."""
    half = weight.shape[1] // 2
    return torch.cat([weight[:, half : 2 * half], weight[:, :half], weight[:, 2 * half :]], dim=1)


def state_dict_to_diffusers(model: UNet) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``UNet2DModel``'s parameter names and shapes (contiguous CPU copies,
    ready for safetensors), for the config of :func:`unet2d_config` (``flip_sin_to_cos`` false).

    Raises:
        ValueError: a model diffusers cannot express (see :func:`unet2d_config`).
    """
    _check_expressible(model)
    ours = model.state_dict()
    pairs = _pairs(model)
    uncovered = sorted(set(ours) - {pair[0] for pair in pairs})
    if uncovered:
        raise ValueError(f"UNet2DModel has no counterpart of {uncovered[:3]}")
    theirs: dict[str, torch.Tensor] = {}
    for name, sources, kind in pairs:
        tensor = ours[name].detach().cpu()
        parts = tensor.chunk(3) if kind == "qkv" else (tensor,)
        for source, part in zip(sources, parts, strict=True):
            part = part.flatten(1) if part.ndim == 4 and kind != "copy" else part
            theirs[source] = part.clone().contiguous()
    return theirs


def _modern_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers attention names (``query``, ``key``, ``value``, ``proj_attn``) -> today's."""
    pattern = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
    renamed = {}
    for name, tensor in state.items():
        match = pattern.match(name)
        renamed[f"{match[1]}.{_DEPRECATED_ATTENTION[match[2]]}.{match[3]}" if match else name] = tensor
    return renamed


def _ours_from(tensors: list[torch.Tensor], kind: str, target: torch.Tensor, flip: bool) -> torch.Tensor:
    tensor = torch.cat(tensors) if kind == "qkv" else tensors[0]
    if kind == "time" and flip:
        tensor = _swap_sin_cos(tensor)
    if kind == "class" and tensor.shape[0] == target.shape[0] - 1:  # no null class: a zero embedding
        tensor = torch.cat([tensor, tensor.new_zeros(1, tensor.shape[1])])
    if tensor.numel() != target.numel():
        raise ValueError(
            f"diffusers weights of shape {list(tensor.shape)} for a parameter of shape {list(target.shape)}"
        )
    return tensor.reshape(target.shape).to(target.dtype)


def state_dict_from_diffusers(
    state: Mapping[str, torch.Tensor], model: UNet, flip_sin_to_cos: bool = True, strict: bool = True
) -> dict[str, torch.Tensor]:
    """A ``UNet2DModel`` state dict under ``model``'s parameter names and shapes (for
    ``model.load_state_dict``); ``model`` only gives the structure (e.g. built from :func:`unet_options`).

    Args:
        state: diffusers' tensors (old attention names are accepted).
        model: our UNet of the same structure.
        flip_sin_to_cos: the config's value (diffusers' default True: features [cos, sin]).
        strict: raise when one of our parameters has no diffusers tensor (else leave it out).

    Raises:
        ValueError: diffusers tensors without a counterpart, missing ones (``strict``), or wrong shapes.
    """
    state = _modern_names(state)
    ours = model.state_dict()
    mapped, used, missing = {}, set(), []
    for name, sources, kind in _pairs(model):
        if not all(source in state for source in sources):
            missing.append(sources[0])
            continue
        used.update(sources)
        mapped[name] = _ours_from([state[source] for source in sources], kind, ours[name], flip_sin_to_cos)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"diffusers weights without a counterpart in ddpmlab's UNet: {unused[:3]}")
    if strict and missing:
        raise ValueError(
            f"the diffusers weights lack {len(missing)} tensors the UNet needs, e.g. {missing[0]}"
        )
    return mapped
