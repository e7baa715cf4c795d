"""The standard FID feature network: the TensorFlow Inception v3 of 2015-12-05, as ported to PyTorch.

FID and KID are only comparable across papers when computed with exactly this network and input
recipe, the one of the original TensorFlow FID code; torch-fidelity and torchmetrics use the same port
and weights. ddpmlab borrows torch-fidelity's module (an optional extra,
``pip install 'ddpmlab[metrics]'``; it adds no dependency ddpmlab does not already have) and never
downloads: the weights file must be in torch hub's cache or at a path you give, and is checked by
SHA-256 and loaded with ``torch.load(..., weights_only=True)`` (no pickled code is executed).

The weights (95,628,359 bytes):

    file     weights-inception-2015-12-05-6726825d.pth
    from     https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth
    into     torch.hub.get_dir()/checkpoints/   (~/.cache/torch/hub/checkpoints/ unless $TORCH_HOME is set)
    sha256   6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2

(the same bytes as pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``; torch hub's naming puts
the first hex digits of the SHA-256 in the file name.)

Input recipe, per image (uint8 [H, W, C], any H and W):

1. grey images (C = 1, or [H, W]) are repeated to 3 channels; RGB is used as it is;
2. uint8 -> float32, resized to 299 x 299 by bilinear interpolation as TensorFlow 1.x's
   ``resize_bilinear(align_corners=False)``: output pixel i samples the input at i * H_in / 299 (no
   half-pixel offset), between the two neighbouring pixels (the last one repeated at the edge), with no
   antialiasing (torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``). torchmetrics'
   default (``antialias=True``) resizes differently and gives other numbers;
3. scaled to [-1, 1] by (x - 128) / 128; features = the 2048 average-pooled activations of the last
   block ("pool3").

Steps 2-3 run inside torch-fidelity's ``FeatureExtractorInceptionV3.forward``; this module does step 1
and the loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ddpmlab.metrics.arrays import ArrayLike
from ddpmlab.metrics.features import as_uint8_images

__all__ = [
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "INCEPTION_SHA256",
    "INCEPTION_BYTES",
    "INCEPTION_NAME",
    "FeatureNetworkError",
    "inception_weights_dir",
    "find_inception_weights",
    "file_sha256",
    "inception_input",
    "load_inception",
    "InceptionFeatures",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_BYTES = 95_628_359
# The label of the numbers computed on these features: FD on them is FID.
INCEPTION_NAME = "inception-v3-tf-2015-12-05 pool3 (2048)"


class FeatureNetworkError(ValueError):
    """A feature network cannot be loaded: its weights or its package are missing or wrong (one line)."""


def inception_weights_dir() -> Path:
    """Where torch hub keeps downloaded weights, and where the Inception file is looked for:
    ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default
    ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(weights: str | Path | None = None) -> Path:
    """The path of the Inception weights file; nothing is downloaded.

    Args:
        weights: a file, or a folder holding :data:`INCEPTION_FILE`; None: the torch hub cache
            (:func:`inception_weights_dir`).

    Raises:
        FeatureNetworkError: the file is not there; the one-line message says which file to download,
            from where, into which folder.
    """
    if weights is None or Path(weights).expanduser().is_dir():
        folder = inception_weights_dir() if weights is None else Path(weights).expanduser()
        path = folder / INCEPTION_FILE
        where = f"into {folder}/"
    else:
        path = Path(weights).expanduser()
        folder = path.parent
        where = f"into {folder}/ as {path.name}"
    if not path.is_file():
        raise FeatureNetworkError(
            f"Inception weights not found: {path} does not exist; download {INCEPTION_FILE} "
            f"({INCEPTION_BYTES:,} bytes) from {INCEPTION_URL} {where} (nothing is downloaded automatically)"
        )
    return path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_state_dict(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """Check the file's SHA-256, then load it with ``weights_only=True`` (tensors and containers only)."""
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise FeatureNetworkError(
            f"{path} has sha256 {actual}, expected {sha256} (a partial or different file; "
            f"download {INCEPTION_URL} again)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for pickled code, RuntimeError for a broken archive
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FeatureNetworkError(f"cannot load {path} as plain weights: {message}") from None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise FeatureNetworkError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def _torch_fidelity_inception() -> Any:
    """torch-fidelity's Inception module, or a one-line error saying how to install it."""
    try:
        from torch_fidelity import feature_extractor_inceptionv3 as module
    except ImportError:
        raise FeatureNetworkError(
            "the Inception feature network needs torch-fidelity: pip install 'ddpmlab[metrics]'"
        ) from None
    if not hasattr(module, "load_state_dict_from_url") or not hasattr(module, "FeatureExtractorInceptionV3"):
        raise FeatureNetworkError(
            "this torch-fidelity version is not supported: pip install 'torch-fidelity>=0.3'"
        )
    return module


def _build_network(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 holding ``state_dict``.

    Its constructor either downloads the weights (``load_state_dict_from_url``, when given no path) or
    unpickles a path with ``weights_only=False``. Neither is wanted, so for the duration of the call its
    module-level ``load_state_dict_from_url`` is replaced by a function returning the state dict that
    was already checked and loaded safely: no network, no code from the file. (Not thread-safe: do not
    construct two at once from several threads.)
    """
    module = _torch_fidelity_inception()
    original = module.load_state_dict_from_url

    def verified_weights(url: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return state_dict

    module.load_state_dict_from_url = verified_weights
    try:
        return module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    except RuntimeError as error:  # load_state_dict: missing or unexpected keys, wrong shapes
        raise FeatureNetworkError(
            f"the weights do not fit torch-fidelity's Inception: {str(error).splitlines()[0]}"
        ) from None
    finally:
        module.load_state_dict_from_url = original


def inception_input(images: ArrayLike) -> torch.Tensor:
    """Step 1 of the recipe: uint8 images [N, H, W], [N, H, W, 1] or [N, H, W, 3] -> uint8 [N, 3, H, W],
    grey repeated to 3 channels. (Resizing and scaling happen inside the network.)

    Raises:
        ValueError: not uint8, or not 1 or 3 channels.
    """
    images = as_uint8_images(images)
    channels = images.shape[-1]
    if channels == 1:
        images = images.expand(-1, -1, -1, 3)
    elif channels != 3:
        raise ValueError(f"the Inception network takes grey or RGB images, got {channels} channels")
    return images.permute(0, 3, 1, 2).contiguous()


class InceptionFeatures:
    """The FID feature network as a :class:`~ddpmlab.metrics.FeatureNetwork`: uint8 images
    [B, H, W, C] (C = 1 or 3, or [B, H, W]) -> float32 pool3 features [B, 2048] on the CPU.

    Made by :func:`load_inception`. ``name`` is :data:`INCEPTION_NAME` and ``fd_label`` "FID" for the
    standard weights; other weights get another name and the label "FD", so their numbers are never
    reported as FID.
    """

    dim = 2048

    def __init__(self, network: torch.nn.Module, device: torch.device, sha256: str) -> None:
        self.network = network.to(device).eval()
        self.device = device
        self.sha256 = sha256
        standard = sha256 == INCEPTION_SHA256
        self.name = INCEPTION_NAME if standard else f"inception-v3 pool3 (2048), weights sha256 {sha256[:12]}"
        self.fd_label = "FID" if standard else "FD"

    def __call__(self, images: ArrayLike) -> torch.Tensor:
        x = inception_input(images).to(self.device)
        with torch.inference_mode():
            (features,) = self.network(x)
        return features.to("cpu", torch.float32)

    def __repr__(self) -> str:
        return f"InceptionFeatures({self.name!r}, device={self.device})"


def load_inception(
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    sha256: str = INCEPTION_SHA256,
) -> InceptionFeatures:
    """The FID Inception network, from a local weights file; nothing is downloaded.

    In order, each failing with a one-line :class:`FeatureNetworkError` before the next is tried:
    find the file (:func:`find_inception_weights`), check its SHA-256, import torch-fidelity, load
    the file with ``weights_only=True``, build torch-fidelity's module with those weights.

    Args:
        weights: the weights file or its folder; None: torch hub's cache.
        device: where the network runs (default: CUDA if available, else the CPU).
        sha256: the expected SHA-256; change it only for weights you converted yourself, whose numbers
            are then labelled "FD", not "FID".

    Returns:
        :class:`InceptionFeatures`, ready for :func:`~ddpmlab.metrics.extract_features`.
    """
    path = find_inception_weights(weights)
    state_dict = _read_state_dict(path, sha256)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return InceptionFeatures(_build_network(state_dict), device, sha256.lower())
