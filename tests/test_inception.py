"""The FID Inception loader, offline: missing, wrong and unsafe weights files are refused with one line
before any network call; with a randomly initialised weights file (the real one cannot be downloaded
here) the whole path runs: hash check, weights-only load, torch-fidelity's module, the input recipe.
"""

from __future__ import annotations

import re
import socket
import urllib.request
from unittest import mock

import numpy as np
import pytest
import torch

import ddpmlab.metrics.inception as inception
from ddpmlab.metrics import (
    INCEPTION_FILE,
    INCEPTION_NAME,
    INCEPTION_URL,
    FeatureNetworkError,
    extract_features,
    find_inception_weights,
    inception_input,
    load_inception,
)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """torch hub's folder is an empty temporary one, and every way to the network raises."""

    def no_network(*args, **kwargs):
        raise AssertionError("a network call was attempted")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path


def test_missing_weights_say_which_file_from_where_into_which_folder(offline) -> None:
    with pytest.raises(FeatureNetworkError) as caught:
        load_inception()
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert INCEPTION_FILE in message and INCEPTION_URL in message
    assert str(offline / "hub" / "checkpoints") in message


def test_a_given_path_or_folder_is_used(offline) -> None:
    folder = offline / "weights"
    with pytest.raises(FeatureNetworkError, match=re.escape(f"into {folder}/ ")):
        load_inception(folder / "inception.pth")
    folder.mkdir()
    with pytest.raises(FeatureNetworkError, match=INCEPTION_FILE):
        find_inception_weights(folder)
    (folder / INCEPTION_FILE).write_bytes(b"x")
    assert find_inception_weights(folder) == folder / INCEPTION_FILE


def test_a_file_with_the_wrong_hash_is_refused(offline) -> None:
    path = offline / "hub" / "checkpoints" / INCEPTION_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    with pytest.raises(FeatureNetworkError, match="sha256 [0-9a-f]{64}, expected 6726825d0af5"):
        load_inception()


class Payload:
    """Unpickling this needs code (a class lookup): a weights-only load must refuse it."""


def test_pickled_objects_are_not_loaded(offline) -> None:
    path = offline / "unsafe.pth"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(FeatureNetworkError, match="cannot load .* as plain weights"):
        load_inception(path, sha256=inception.file_sha256(path))


def test_missing_torch_fidelity_says_how_to_install_it(offline, monkeypatch) -> None:
    path = offline / "tiny.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    monkeypatch.setitem(__import__("sys").modules, "torch_fidelity", None)  # makes the import fail
    with pytest.raises(FeatureNetworkError, match=r"pip install 'ddpmlab\[metrics\]'"):
        load_inception(path, sha256=inception.file_sha256(path), device="cpu")


def test_inception_input_repeats_grey_to_three_channels() -> None:
    grey = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7), dtype=np.uint8)
    x = inception_input(grey)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 5, 7)
    for channel in range(3):
        np.testing.assert_array_equal(x[:, channel].numpy(), grey)
    assert torch.equal(inception_input(grey[..., None]), x)
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    np.testing.assert_array_equal(inception_input(rgb)[:, 1].numpy(), grey // 2)
    with pytest.raises(ValueError, match="grey or RGB"):
        inception_input(np.zeros((1, 4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        inception_input(np.zeros((1, 4, 4, 3), dtype=np.float32))


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A weights file of torch-fidelity's Inception with random values (the real one is not available
    offline), and its torch-fidelity module."""
    module = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    cls = module.FeatureExtractorInceptionV3
    torch.manual_seed(0)
    with (
        mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(cls, "load_state_dict", lambda self, state, *a, **k: None),
    ):
        network = cls("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path, network


def test_random_weights_run_the_whole_recipe_offline(offline, random_weights, monkeypatch) -> None:
    path, reference = random_weights
    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    network = load_inception(path, device="cpu", sha256=inception.file_sha256(path))
    assert loads == [True]
    assert network.fd_label == "FD" and network.name != INCEPTION_NAME  # not the FID weights
    assert torch.equal(network.network.Conv2d_1a_3x3.conv.weight, reference.Conv2d_1a_3x3.conv.weight)

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    features = extract_features(grey, network, batch_size=2)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert bool(torch.isfinite(features).all()) and features.abs().sum() > 0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    torch.testing.assert_close(network(rgb), features, rtol=1e-4, atol=1e-5)
    # The same as torch-fidelity's own forward on [N, 3, H, W] uint8 (its TF1-style resize to 299).
    with torch.inference_mode():
        (expected,) = reference(torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous())
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)


def test_the_standard_hash_is_labelled_fid(offline, random_weights, monkeypatch) -> None:
    path, _ = random_weights
    digest = inception.file_sha256(path)
    monkeypatch.setattr(inception, "INCEPTION_SHA256", digest)  # pretend these are the real weights
    network = load_inception(path, device="cpu", sha256=digest)
    assert network.name == INCEPTION_NAME and network.fd_label == "FID"
