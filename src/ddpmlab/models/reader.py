"""A captcha reader: a small CRNN (Shi et al. 2015, "An End-to-End Trainable Neural Network for
Image-based Sequence Recognition") trained with CTC (Graves et al. 2006, "Connectionist Temporal
Classification: Labelling Unsegmented Sequence Data with Recurrent Neural Networks").

It reads the text of clean images, for the evaluation of text-conditional samples ("does the sample of
"fngff" read "fngff"?"), and its pooled sequence features are the features of FD_reader / KID_reader.

Architecture, for an input [B, C, H, W] in [-1, 1] (ddpmlab's data range; captchas: 1 x 32 x 96)::

    [conv3x3 -> BatchNorm -> ReLU] (w)  -> maxpool 2        H/2 x W/2
    [conv3x3 -> BatchNorm -> ReLU] (2w) -> maxpool 2        H/4 x W/4
    [conv3x3 -> BatchNorm -> ReLU] (4w) -> maxpool (2, 1)   H/8 x W/4
    [conv3x3 -> BatchNorm -> ReLU] (4w)
    collapse the height: each column's 4w x H/8 values -> Linear -> ReLU     [B, T = W/4, hidden]
    bidirectional GRU over the T columns                                      [B, T, 2 * rnn_hidden]
        (mean over the columns: the features, [B, 2 * rnn_hidden])
    Linear -> per-column logits over blank + the charset                      [B, T, 1 + len(charset)]

Class 0 is CTC's blank; character ``charset[i]`` is class i + 1. Reading is best-path (greedy) decoding
(Graves et al. 2006, section 3.2): the most likely class of each column, repeats merged, blanks dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BLANK", "CaptchaReader", "best_path", "paths_to_texts", "encode_texts"]

BLANK = 0  # CTC's blank class; character charset[i] is class i + 1


def best_path(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy CTC decoding of per-column scores (logits, log-probabilities or probabilities).

    Args:
        logits: [B, T, K] with class 0 the blank.

    Returns:
        (classes int64 [B, T]: the decoded sequence of each row in its first ``lengths[b]`` entries, -1
        after; lengths int64 [B]). The argmax of each column, then a class equal to the column before
        it is merged into it and blanks are dropped: "a a - a b" -> "a a b". Tensor operations only (no
        host synchronisation), so it can run on every training step.
    """
    best = logits.argmax(dim=-1)  # [B, T]
    before = F.pad(best, (1, 0), value=BLANK)[:, :-1]
    keep = (best != BLANK) & (best != before)
    lengths = keep.sum(dim=1)
    count = best.shape[1]
    slot = torch.where(keep, keep.cumsum(dim=1) - 1, torch.full_like(best, count))  # dropped -> column T
    out = torch.full((best.shape[0], count + 1), -1, dtype=best.dtype, device=best.device)
    out.scatter_(1, slot, torch.where(keep, best, torch.full_like(best, -1)))
    return out[:, :count], lengths


def paths_to_texts(classes: torch.Tensor, lengths: torch.Tensor, charset: str) -> list[str]:
    """Decoded classes [B, T] and lengths [B] (:func:`best_path`) -> B strings of ``charset``."""
    rows = classes.cpu().tolist()
    return ["".join(charset[c - 1] for c in row[:n]) for row, n in zip(rows, lengths.cpu().tolist())]


def encode_texts(texts: Sequence[str], charset: str, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Strings -> (classes int64 [B, width], -1 past each string's end; lengths int64 [B]).

    Raises:
        ValueError: an empty string, one longer than ``width``, or a character outside ``charset``.
    """
    index = {c: i + 1 for i, c in enumerate(charset)}
    targets = torch.full((len(texts), width), -1, dtype=torch.int64)
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text or len(text) > width:
            raise ValueError(f"a reader's target must be a string of 1 to {width} characters, got {text!r}")
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"{text!r} has characters {''.join(unknown)!r} outside the charset {charset!r}")
        targets[row, : len(text)] = torch.tensor([index[c] for c in text])
    return targets, torch.tensor([len(text) for text in texts], dtype=torch.int64)


def _block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class CaptchaReader(nn.Module):
    """A CRNN reader of text images with a CTC head (see the module docstring).

    Args:
        charset: the characters it reads (distinct; the data's ``text_charset``).
        max_length: the longest string it reads (the data's ``text_length``).
        in_channels, height, width: the images' (height >= 8; width / 4 columns must be at least
            2 * max_length + 1, so that any string, repeated characters included, has a CTC path).
        width_channels: channels of the first convolution (then 2x and 4x).
        hidden: the per-column features after the height is collapsed.
        rnn_hidden: the GRU's size per direction (the features are 2 * rnn_hidden wide).

    Raises:
        ValueError: an empty or repeating charset, a size below 1, or images too small for the strings.
    """

    def __init__(
        self,
        charset: str = "2345678bcdefgmnpwxy",
        max_length: int = 5,
        in_channels: int = 1,
        height: int = 32,
        width: int = 96,
        width_channels: int = 16,
        hidden: int = 96,
        rnn_hidden: int = 48,
    ) -> None:
        super().__init__()
        if not isinstance(charset, str) or not charset or len(set(charset)) != len(charset):
            raise ValueError(f"charset must be a non-empty string of distinct characters, got {charset!r}")
        _check_positive(
            max_length=max_length, in_channels=in_channels, height=height, width=width,
            width_channels=width_channels, hidden=hidden, rnn_hidden=rnn_hidden,
        )
        if height < 8 or width // 4 < 2 * max_length + 1:
            raise ValueError(
                f"a reader of up to {max_length} characters needs images at least 8 pixels high and "
                f"{4 * (2 * max_length + 1)} wide, got {height}x{width}"
            )
        self.charset, self.max_length = charset, max_length
        self.in_channels, self.height, self.width = in_channels, height, width
        w = width_channels
        self.trunk = nn.Sequential(
            *_block(in_channels, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            nn.MaxPool2d((2, 1)),
            *_block(4 * w, 4 * w),
        )
        self.columns = width // 4
        self.collapse = nn.Sequential(nn.Linear(4 * w * (height // 8), hidden), nn.ReLU())
        self.rnn = nn.GRU(hidden, rnn_hidden, batch_first=True, bidirectional=True)
        self.feature_dim = 2 * rnn_hidden
        self.head = nn.Linear(self.feature_dim, 1 + len(charset))

    @property
    def data_options(self) -> dict[str, object]:
        """The options that come from the data (recorded in a reader run's config)."""
        return {
            "charset": self.charset, "max_length": self.max_length, "in_channels": self.in_channels,
            "height": self.height, "width": self.width,
        }

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> per-column features [B, T, 2 * rnn_hidden]."""
        f = self.trunk(x)  # [B, 4w, H/8, T]
        b, c, h, t = f.shape
        f = self.collapse(f.permute(0, 3, 1, 2).reshape(b, t, c * h))
        return self.rnn(f)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate layer: images [B, C, H, W] -> features [B, 2 * rnn_hidden]."""
        return self.sequence(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> per-column logits [B, T, 1 + len(charset)] (0: blank)."""
        return self.head(self.sequence(x))

    def read(self, x: torch.Tensor) -> list[str]:
        """Images [B, C, H, W] in [-1, 1] -> B strings (greedy CTC decoding, :func:`best_path`)."""
        return paths_to_texts(*best_path(self(x)), self.charset)
