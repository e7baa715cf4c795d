"""A judge: a small CNN classifier of *clean* images, trained on real data only, that looks at what a
generator makes from outside.

Its predictions give the class accuracy of class-conditional samples ("is the digit asked for the digit
drawn?"); its penultimate layer gives the features on which Frechet distance, KID, precision/recall and
memorisation are computed for a dataset that the Inception network knows nothing about (numbers on these
features are labelled FD_judge / KID_judge, never FID).

Architecture (for MNIST-sized inputs, about 150k parameters at width 32)::

    [conv3x3 -> BatchNorm -> ReLU] x 2 (width w) -> maxpool 2
    [conv3x3 -> BatchNorm -> ReLU] x 2 (width 2w) -> maxpool 2
    adaptive average pool to 3x3 -> Dropout -> Linear(2w * 9, feature_dim) -> ReLU   (the features)
    -> Dropout -> Linear(feature_dim, num_classes)                                  (the logits)

Inputs are images in [-1, 1] (ddpmlab's data range), [B, C, H, W].
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["JudgeCNN"]


def _block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class JudgeCNN(nn.Module):
    """A CNN classifier of clean images with a feature layer (see the module docstring).

    Args:
        in_channels, image_size, num_classes: the data's (image_size only checks inputs: >= 4).
        width: channels of the first two convolutions (the next two have twice as many).
        feature_dim: the width of the feature layer (the dimension of the judge's features).
        dropout: dropout probability before each linear layer.

    Raises:
        ValueError: a size, width or class count below 1, or images smaller than 4x4.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width: int = 32,
        feature_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("width", width),
            ("feature_dim", feature_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if image_size < 4:
            raise ValueError(f"the judge needs images of at least 4x4 pixels, got {image_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.feature_dim = feature_dim
        self.trunk = nn.Sequential(
            *_block(in_channels, width),
            *_block(width, width),
            nn.MaxPool2d(2),
            *_block(width, 2 * width),
            *_block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * 9, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: images [B, C, H, W] in [-1, 1] -> features [B, feature_dim] (>= 0)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> logits [B, num_classes]."""
        return self.head(self.features(x))
