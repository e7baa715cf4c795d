"""Feature networks: anything that turns a batch of uint8 images into feature vectors.

The image metrics (:mod:`ddpmlab.metrics.distances`, :mod:`~ddpmlab.metrics.manifold`,
:mod:`~ddpmlab.metrics.memorisation`) work on features [N, D]. A feature network is any callable

    network(images: uint8 tensor [B, H, W, C]) -> features [B, D]

with a ``name`` attribute that labels the numbers it produces (the standard Inception network of
:func:`ddpmlab.metrics.load_inception`, or a classifier trained on the data such as the MNIST judge).
:func:`extract_features` feeds it a large set in batches.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ddpmlab.metrics.arrays import ArrayLike

__all__ = ["FeatureNetwork", "as_uint8_images", "extract_features", "network_input", "network_name"]


@runtime_checkable
class FeatureNetwork(Protocol):
    """uint8 images [B, H, W, C] -> features [B, D]; ``name`` says which network (and layer)."""

    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def network_name(network: object) -> str:
    """The network's ``name`` attribute, or its class name."""
    return str(getattr(network, "name", type(network).__name__))


def as_uint8_images(images: ArrayLike) -> torch.Tensor:
    """Images as a uint8 tensor [N, H, W, C] (channels last, as ``ddpmlab sample --out x.npz`` writes).

    Args:
        images: uint8 [N, H, W] (grey) or [N, H, W, C], a tensor or an array.

    Raises:
        ValueError: not uint8 (convert with ``ddpmlab.data.images.to_uint8`` first), or another shape.
    """
    images = images if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images in 0..255, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected uint8 images [N, H, W] or [N, H, W, C], got shape {list(images.shape)}")
    return images


def network_input(
    images: torch.Tensor, shape: tuple[int, int, int], device: torch.device, name: str
) -> torch.Tensor:
    """uint8 images [N, H, W, C] as a trained network's input: float32 [N, C, H, W] in [-1, 1] on
    ``device`` (the range of ddpmlab's training data). ``shape`` is (C, H, W); ``name`` names the network
    in the error.

    Raises:
        ValueError: not uint8 [N, H, W, C] of that shape.
    """
    images = torch.as_tensor(images)
    c, h, w = shape
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (h, w, c):
        raise ValueError(
            f"{name} takes uint8 images [N, {h}, {w}, {c}], got {images.dtype} {list(images.shape)}"
        )
    return images.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def extract_features(images: ArrayLike, network: FeatureNetwork, batch_size: int = 100) -> torch.Tensor:
    """Run ``network`` over uint8 images [N, H, W, C] (or [N, H, W]) in batches, without gradients.

    Args:
        images: uint8 images, on the CPU (each batch is passed on as it is; the network moves it).
        network: a :class:`FeatureNetwork`.
        batch_size: images per call.

    Returns:
        float32 features [N, D] on the CPU.
    """
    images = as_uint8_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            features = torch.as_tensor(network(images[start : start + batch_size]))
            if features.ndim != 2 or len(features) != len(images[start : start + batch_size]):
                raise ValueError(
                    f"{network_name(network)} returned shape {list(features.shape)} for a batch of "
                    f"{len(images[start : start + batch_size])} images; expected [B, D]"
                )
            chunks.append(features.detach().to("cpu", torch.float32))
    return torch.cat(chunks)
