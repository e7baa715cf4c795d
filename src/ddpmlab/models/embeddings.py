"""Embeddings of the timestep and of the condition, shared by every denoiser.

- :func:`sinusoidal_embedding`: the Transformer position encoding (Vaswani et al. 2017, sec. 3.5) used
  for the diffusion timestep by Ho et al. 2020 (appendix B).
- :class:`TimestepEmbedding`: sinusoidal features followed by a two-layer MLP (Ho et al. 2020).
- Condition encoders, for conditional models and classifier-free guidance (Ho & Salimans 2022):
  :class:`ClassEmbedding` (class labels) and :class:`TextEmbedding` (short fixed-length strings such as
  captcha text). Both follow one interface, :class:`ConditionEncoder`:

  ``null_condition``
      the value meaning "no condition" (used for the unconditional half of guidance);
  ``forward(cond) -> [B, dim]``
      the embedding of a batch of conditions, added to the time embedding by the models;
  ``drop(cond, p, generator=None)``
      a new batch where each condition was replaced by ``null_condition`` with probability ``p``
      (condition dropout, the training half of classifier-free guidance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "sinusoidal_embedding",
    "TimestepEmbedding",
    "ConditionEncoder",
    "ClassEmbedding",
    "TextEmbedding",
    "build_condition_encoder",
    "embed_condition",
    "batch_timesteps",
    "CONDITION_KINDS",
    "TEXT_POOLINGS",
]

CONDITION_KINDS = (None, "class", "text")
TEXT_POOLINGS = ("flatten", "mean")
ConditionKind = Literal["class", "text"] | None


def sinusoidal_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, frequency_shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal features of timesteps (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, appendix B).

    With half = dim // 2 and frequencies f_i = max_period ** (-i / (half - frequency_shift)),
    i = 0 .. half-1, the embedding of t is [sin(t f_0) .. sin(t f_{half-1}), cos(t f_0) .. cos(t f_{half-1})],
    plus one zero column when ``dim`` is odd. So t = 0 maps to sin = 0, cos = 1.

    Args:
        t: [B] timesteps (int64 indices or floats).
        dim: number of features, >= 1.
        max_period: the longest wavelength (with ``frequency_shift`` 0).
        frequency_shift: 0 (the default) or 1, as in Ho et al.'s own code (diffusers' ``freq_shift``:
            the published DDPM models use 1, so that the lowest frequency is exactly 1 / max_period).

    Raises:
        ValueError: ``dim`` < 1, t not [B], or half - frequency_shift <= 0.

    Returns:
        float32 tensor [B, dim] on t's device.
    """
    if dim < 1:
        raise ValueError(f"the embedding dimension must be at least 1, got {dim}")
    if t.ndim != 1:
        raise ValueError(f"timesteps must have shape [B], got {list(t.shape)}")
    half = dim // 2
    denominator = half - frequency_shift if frequency_shift else max(half, 1)
    if denominator <= 0:
        raise ValueError(f"frequency_shift {frequency_shift} leaves no frequencies for dim {dim}")
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / denominator
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = t.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class TimestepEmbedding(nn.Module):
    """Timestep embedding of Ho et al. 2020: sinusoidal(t, dim) -> Linear -> SiLU -> Linear.

    Args:
        dim: number of sinusoidal features.
        hidden: width of both linear layers, and of the output.
        frequency_shift: see :func:`sinusoidal_embedding` (0 by default).

    Shapes: t [B] (int64 timestep indices) -> [B, hidden].
    """

    def __init__(self, dim: int, hidden: int, frequency_shift: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.frequency_shift = frequency_shift
        self.linear_1 = nn.Linear(dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_embedding(t, self.dim, frequency_shift=self.frequency_shift)
        return self.linear_2(nn.functional.silu(self.linear_1(features)))


def _drop_mask(batch: int, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Bool [B], each entry True with probability p (drawn from ``generator`` when given)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the dropout probability must be in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else device
    return (torch.rand(batch, generator=generator, device=gen_device) < p).to(device)


class ConditionEncoder(nn.Module):
    """Base class of condition encoders: ``null_condition``, ``forward(cond) -> [B, dim]`` and ``drop``.

    Subclasses set ``null_condition`` and ``dim`` and implement ``forward`` and ``drop``.
    """

    null_condition: Any
    dim: int

    def drop(self, cond: Any, p: float, generator: torch.Generator | None = None) -> Any:
        """Replace each condition by ``null_condition`` with probability ``p``; returns a new batch."""
        raise NotImplementedError

    def null_batch(self, batch: int, device: torch.device | str | None = None) -> Any:
        """A batch of ``batch`` null conditions, in the type ``forward`` takes."""
        raise NotImplementedError


class ClassEmbedding(ConditionEncoder):
    """Embedding of class labels, with one extra row for "no class" (classifier-free guidance).

    Args:
        num_classes: number of real classes; labels are 0 .. num_classes - 1.
        dim: embedding width.

    ``null_condition`` is ``num_classes`` (the extra row). ``forward``: int64 labels [B] (a tensor, or a
    sequence of ints) in 0 .. num_classes -> [B, dim].
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.dim = dim
        self.null_condition = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def labels(self, cond: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """``cond`` as a validated int64 tensor [B] on this module's device."""
        labels = torch.as_tensor(cond, device=self.embedding.weight.device)
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"class labels must be integers of shape [B], got {labels.dtype} {list(labels.shape)}"
            )
        # The range check reads the labels back to the host: on the CPU that is free, on a GPU it would
        # stall every step (and break CUDA graphs and compiled graphs), where the embedding lookup's own
        # device-side bounds check catches bad labels instead.
        checkable = labels.device.type == "cpu" and not torch.compiler.is_compiling()
        if checkable and labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(
                f"class labels must be in 0..{self.num_classes - 1} (or {self.num_classes} for no class), "
                f"got values in {labels.min().item()}..{labels.max().item()}"
            )
        return labels.long()

    def forward(self, cond: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return self.embedding(self.labels(cond))

    def drop(
        self, cond: torch.Tensor | Sequence[int], p: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Labels [B] with each replaced by ``num_classes`` with probability ``p`` (a new tensor)."""
        labels = torch.as_tensor(cond)
        mask = _drop_mask(labels.shape[0], p, generator, labels.device)
        return torch.where(mask, torch.full_like(labels, self.null_condition), labels)

    def null_batch(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.full((batch,), self.null_condition, dtype=torch.long, device=device)


class TextEmbedding(ConditionEncoder):
    """Embedding of short strings of at most ``length`` characters from ``charset`` (e.g. captcha text).

    Each character becomes a token (its index in ``charset`` + 1; 0 pads strings shorter than
    ``length``), embedded and summed with a learned embedding of its position. The tokens are then
    pooled through a small MLP:

    - ``pooling="flatten"``: the [length, token_dim] features are concatenated, then Linear -> SiLU ->
      Linear. Keeps which character is where (what a captcha needs).
    - ``pooling="mean"``: Linear -> SiLU on each token, mean over positions, then Linear.

    ``null_condition`` is the empty string "" (all padding tokens). ``forward``: a sequence of B strings
    -> [B, dim]. Characters outside ``charset`` and strings longer than ``length`` raise ValueError.

    Args:
        charset: the allowed characters, each once.
        length: the maximum string length.
        dim: output width.
        token_dim: width of the character and position embeddings.
        pooling: "flatten" or "mean".
    """

    def __init__(
        self,
        charset: str,
        length: int,
        dim: int,
        token_dim: int = 64,
        pooling: Literal["flatten", "mean"] = "flatten",
    ) -> None:
        super().__init__()
        _check_charset(charset)
        if length < 1:
            raise ValueError(f"the text length must be at least 1, got {length}")
        if pooling not in TEXT_POOLINGS:
            raise ValueError(f"unknown text pooling {pooling!r}; choose one of {', '.join(TEXT_POOLINGS)}")
        self.charset = charset
        self.length = length
        self.dim = dim
        self.pooling = pooling
        self.null_condition = ""
        self._token_ids = {character: index + 1 for index, character in enumerate(charset)}
        self.character_embedding = nn.Embedding(len(charset) + 1, token_dim)
        self.position_embedding = nn.Parameter(torch.randn(length, token_dim) * 0.02)
        if pooling == "flatten":
            self.token_mlp = nn.Identity()
            self.head = nn.Sequential(nn.Linear(length * token_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        else:
            self.token_mlp = nn.Sequential(nn.Linear(token_dim, dim), nn.SiLU())
            self.head = nn.Linear(dim, dim)

    def tokenize(self, cond: Sequence[str]) -> torch.Tensor:
        """Strings -> int64 token ids [B, length] on this module's device (0 = padding / null)."""
        if isinstance(cond, (str, bytes)) or not isinstance(cond, Sequence):
            raise ValueError(f"text conditions must be a sequence of strings, got {type(cond).__name__}")
        rows = [self._tokenize_one(text) for text in cond]
        device = self.character_embedding.weight.device
        return torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), self.length)

    def _tokenize_one(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text conditions must be strings, got {type(text).__name__}")
        if len(text) > self.length:
            raise ValueError(f"text {text!r} is longer than the maximum length {self.length}")
        unknown = sorted(set(text) - self._token_ids.keys())
        if unknown:
            raise ValueError(
                f"text {text!r} has characters {''.join(unknown)!r} outside the charset {self.charset!r}"
            )
        return [self._token_ids[character] for character in text] + [0] * (self.length - len(text))

    def tokens(self, cond: Sequence[str]) -> torch.Tensor:
        """Per-character features [B, length, token_dim]: character embedding + position embedding.

        What cross-attention layers attend to (``UNet(text_cross_attention=True)``); padding and the
        null condition "" are tokens too (id 0), so the unconditional branch has a context as well."""
        return self.character_embedding(self.tokenize(cond)) + self.position_embedding

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding [B, dim] of the token features [B, length, token_dim] of :meth:`tokens`."""
        features = self.token_mlp(tokens)
        pooled = features.flatten(1) if self.pooling == "flatten" else features.mean(1)
        return self.head(pooled)

    def forward(self, cond: Sequence[str]) -> torch.Tensor:
        return self.pool(self.tokens(cond))

    def drop(self, cond: Sequence[str], p: float, generator: torch.Generator | None = None) -> list[str]:
        """A new list of strings with each replaced by "" with probability ``p``."""
        texts = list(cond)
        mask = _drop_mask(len(texts), p, generator, torch.device("cpu")).tolist()
        return [self.null_condition if dropped else text for text, dropped in zip(texts, mask, strict=True)]

    def null_batch(self, batch: int, device: torch.device | str | None = None) -> list[str]:
        return [self.null_condition] * batch


def _check_charset(charset: str) -> None:
    if not isinstance(charset, str) or not charset:
        raise ValueError(f"the charset must be a non-empty string, got {charset!r}")
    repeated = sorted({character for character in charset if charset.count(character) > 1})
    if repeated:
        raise ValueError(f"the charset repeats the characters {''.join(repeated)!r}")


def build_condition_encoder(
    kind: ConditionKind,
    dim: int,
    *,
    num_classes: int | None = None,
    text_charset: str | None = None,
    text_length: int | None = None,
    text_token_dim: int = 64,
    text_pooling: Literal["flatten", "mean"] = "flatten",
) -> ConditionEncoder | None:
    """The condition encoder for ``kind`` (None, "class" or "text"), or None for an unconditional model.

    "class" needs ``num_classes``; "text" needs ``text_charset`` and ``text_length`` (see
    :class:`TextEmbedding` for the other text options). The encoder outputs [B, dim].
    """
    if kind not in CONDITION_KINDS:
        raise ValueError(f"unknown condition {kind!r}; choose one of None, 'class', 'text'")
    if kind is None:
        return None
    if kind == "class":
        if num_classes is None:
            raise ValueError("condition='class' needs num_classes")
        return ClassEmbedding(num_classes, dim)
    if text_charset is None or text_length is None:
        raise ValueError("condition='text' needs text_charset and text_length")
    return TextEmbedding(text_charset, text_length, dim, token_dim=text_token_dim, pooling=text_pooling)


def embed_condition(
    encoder: ConditionEncoder | None, cond: Any, batch: int, device: torch.device
) -> torch.Tensor | None:
    """The condition embedding [B, dim] a model adds to its time embedding (None when unconditional).

    A conditional model called with ``cond=None`` embeds ``batch`` null conditions (its unconditional
    mode); an unconditional model given a condition raises rather than silently ignoring it.
    """
    if encoder is None:
        if cond is not None:
            raise ValueError("this model is unconditional (condition=None) but a condition was given")
        return None
    embedding = encoder(encoder.null_batch(batch, device) if cond is None else cond)
    if embedding.shape[0] != batch:
        raise ValueError(f"got {embedding.shape[0]} conditions for a batch of {batch}")
    return embedding


def batch_timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    """Timesteps as a tensor [B] on ``device``: a scalar is repeated, a [B] tensor checked."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timesteps must have shape [{batch}] (one per sample), got {list(t.shape)}")
    return t
