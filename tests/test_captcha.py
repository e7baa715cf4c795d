"""Captchas and text conditioning (ddpmlab.data.captcha): rendered items fixed by (seed, index), the
folder of images named by their text, a tiny text-conditional run trained and sampled through the CLI
(--text), refusals of bad strings, and the null string classifier-free guidance uses."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.cli import main
from ddpmlab.config import ConfigError
from ddpmlab.data.base import DataError
from ddpmlab.data.batches import LoaderBatches
from ddpmlab.data.captcha import (
    DEFAULT_CHARSET,
    CaptchaDataset,
    captcha_text,
    check_texts,
    random_texts,
    render_captcha,
)
from ddpmlab.data.sources import build_image_dataset

TINY_TEXT_RUN = [
    "data.charset=abcd", "data.length=2", "data.num_items=16", "data.height=16", "data.width=32",
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "model.text_token_dim=8", "train.steps=2", "train.batch_size=8", "train.log_every=1",
    "train.warmup_steps=1", "train.progress=false", "train.tensorboard=false", "train.sample_every=2",
    "train.minutes=null", "train.checkpoint_every=2", "diffusion.timesteps=50", "sample.steps=3",
    "sample.batch_size=16",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


# --------------------------------------------------------------------------------------------------
# The rendered dataset.
# --------------------------------------------------------------------------------------------------


def test_items_are_fixed_by_index_and_seed_whatever_the_order_or_global_rng():
    first = build_image_dataset("captcha", num_items=12, seed=3)
    random.seed(1)
    forward = [first[i] for i in range(12)]
    second = CaptchaDataset(num_items=12, seed=3, cache=False)  # rendered afresh, never cached
    random.seed(2)
    torch.manual_seed(2)
    backward = {i: second[i] for i in reversed(range(12))}
    for index, (image, text) in enumerate(forward):
        assert text == backward[index][1]
        torch.testing.assert_close(image, backward[index][0], rtol=0, atol=0)
    # A render neither reads nor moves Python's global RNG, and leaves the captcha package as it was.
    import captcha.image

    state = random.getstate()
    secrets_module = vars(captcha.image).get("secrets")
    CaptchaDataset(num_items=2, seed=3, cache=False)[1]
    assert random.getstate() == state and vars(captcha.image).get("secrets") is secrets_module


def test_different_indices_and_seeds_differ():
    dataset = build_image_dataset("captcha", num_items=10, seed=0)
    images = [dataset[i][0] for i in range(10)]
    for i in range(10):
        for j in range(i):
            assert not torch.equal(images[i], images[j]), (i, j)
    texts = dataset.texts
    assert len(set(texts)) == 10 and all(len(t) == 5 and set(t) <= set(DEFAULT_CHARSET) for t in texts)
    assert texts != build_image_dataset("captcha", num_items=10, seed=1).texts
    # The same string drawn twice still looks different: the distortions depend on the index too.
    rng_a, rng_b = random.Random(0), random.Random(1)
    a = np.asarray(render_captcha("fngff", rng_a))
    b = np.asarray(render_captcha("fngff", rng_b))
    assert a.shape == (32, 96, 3) and not np.array_equal(a, b)


def test_shape_range_channels_and_string_labels():
    gray = build_image_dataset("captcha", num_items=4)
    image, text = gray[0]
    assert gray.shape == (1, 32, 96) and image.shape == (1, 32, 96) and image.dtype == torch.float32
    assert -1.0 <= image.min() < image.max() <= 1.0
    assert image.max() > 0.8 and image.min() < 0.6  # near-white background, darker text
    assert isinstance(text, str) and text == gray.texts[0] and gray.text_length == 5
    assert gray.text_charset == DEFAULT_CHARSET and gray.num_classes == 0
    rgb = build_image_dataset("captcha", num_items=4, channels=3, height=16, width=40, length=3, charset="yz")
    image, text = rgb[2]
    assert image.shape == (3, 16, 40) and len(text) == 3 and set(text) <= set("yz")
    tall = build_image_dataset("captcha", num_items=1, height=64, width=128)  # rendered larger, not upscaled
    assert tall[0][0].shape == (1, 64, 128)


def test_batches_keep_the_strings_in_and_out_of_worker_processes():
    dataset = build_image_dataset("captcha", num_items=8, seed=5, height=16, width=32)
    here = next(iter(LoaderBatches(dataset, 4, seed=0)))
    fresh = CaptchaDataset(8, seed=5, height=16, width=32)
    workers = next(iter(LoaderBatches(fresh, 4, seed=0, num_workers=1)))
    images, texts = here
    assert images.shape == (4, 1, 16, 32) and all(isinstance(t, str) for t in texts)
    assert list(texts) == list(workers[1])
    torch.testing.assert_close(images, workers[0], rtol=0, atol=0)
    for image, text in zip(images, texts):  # each image comes with its own string
        index = dataset.texts.index(text)
        torch.testing.assert_close(image, dataset[index][0], rtol=0, atol=0)


def test_bad_captcha_options_are_refused():
    with pytest.raises(ConfigError, match="wide images: set data.height and data.width"):
        build_image_dataset("captcha", image_size=32)
    with pytest.raises(ConfigError, match="hflip would mirror the text"):
        build_image_dataset("captcha", hflip=True)
    with pytest.raises(ConfigError, match="unknown data option.*labels"):
        build_image_dataset("captcha", labels="auto")
    with pytest.raises(DataError, match="repeats the characters 'a'"):
        build_image_dataset("captcha", charset="aba")
    with pytest.raises(DataError, match="num_items must be a positive integer"):
        build_image_dataset("captcha", num_items=0)
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        build_image_dataset("captcha", channels=2)


def test_repeat_prob_doubles_characters_as_asked_and_zero_is_the_uniform_draw():
    def repeats(texts: list[str]) -> float:
        pairs = [(a, b) for text in texts for a, b in zip(text, text[1:])]
        return sum(a == b for a, b in pairs) / len(pairs)

    uniform = [captcha_text(0, index) for index in range(2000)]
    assert uniform[:4] == ["gm3cw", "6y4c5", "344f7", "byx6f"]  # the strings before repeat_prob existed
    assert uniform == [captcha_text(0, index, repeat_prob=0.0) for index in range(2000)]
    assert repeats(uniform) == pytest.approx(1 / len(DEFAULT_CHARSET), abs=0.012)
    doubled = [captcha_text(0, index, repeat_prob=0.5) for index in range(2000)]
    # P(equal neighbours) = p + (1 - p) / |charset|
    assert repeats(doubled) == pytest.approx(0.5 + 0.5 / len(DEFAULT_CHARSET), abs=0.02)
    assert all(len(text) == 5 and set(text) <= set(DEFAULT_CHARSET) for text in doubled)
    data = build_image_dataset("captcha", num_items=6, repeat_prob=0.5, cache=False)
    assert data.texts == doubled[:6]
    again = build_image_dataset("captcha", num_items=6, repeat_prob=0.5, cache=False)
    assert torch.equal(again[5][0], data[5][0])  # rendering replays the string's draws, in any order
    assert not torch.equal(data[5][0], data[4][0])


@pytest.mark.parametrize("value", [1.0, -0.1, True, "0.2"])
def test_bad_repeat_prob_is_refused(value):
    with pytest.raises(DataError, match="repeat_prob must be a number in"):
        build_image_dataset("captcha", repeat_prob=value)


def test_check_texts_and_random_texts():
    assert check_texts(["fngff", "gn"], DEFAULT_CHARSET, 5) == ["fngff", "gn"]
    with pytest.raises(ValueError, match="'fngfa' has characters 'a' outside the charset"):
        check_texts(["fngff", "fngfa"], DEFAULT_CHARSET, 5)
    with pytest.raises(ValueError, match="longer than 5 characters"):
        check_texts(["fngffg"], DEFAULT_CHARSET, 5)
    with pytest.raises(ValueError, match="empty string"):
        check_texts([""], DEFAULT_CHARSET, 5)
    texts = random_texts(6, "abc", 4, seed=7)
    assert texts == random_texts(6, "abc", 4, seed=7) and texts[:3] == random_texts(3, "abc", 4, seed=7)
    assert texts != random_texts(6, "abc", 4, seed=8)
    assert all(len(t) == 4 and set(t) <= set("abc") for t in texts)


# --------------------------------------------------------------------------------------------------
# A folder of images named by their text.
# --------------------------------------------------------------------------------------------------


def _write_captcha(path: Path, text: str, seed: int) -> None:
    """A real-looking captcha file: 200x50 RGBA, as in the common captcha image set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_captcha(text, random.Random(seed), height=50, width=200).convert("RGBA").save(path)


def test_folder_of_images_named_by_their_text(tmp_path: Path, capsys):
    for seed, text in enumerate(["fngff", "gnfcd", "2b827"]):
        _write_captcha(tmp_path / "samples" / f"{text}.png", text, seed)
    (tmp_path / "samples" / "notes.txt").write_text("not an image")
    dataset = build_image_dataset("captcha_folder", root=tmp_path / "samples")
    assert sorted(dataset.texts) == ["2b827", "fngff", "gnfcd"] and len(dataset) == 3
    assert dataset.text_charset == "278bcdfgn" and dataset.text_length == 5
    image, text = dataset[dataset.texts.index("gnfcd")]
    assert text == "gnfcd" and image.shape == (1, 32, 96) and image.dtype == torch.float32
    expected = Image.open(tmp_path / "samples" / "gnfcd.png").convert("L").resize((96, 32), Image.BICUBIC)
    pixels = ((image[0] + 1) * 127.5).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(pixels, np.asarray(expected))
    wide = build_image_dataset("captcha_folder", root=tmp_path / "samples", width=128, channels=3)
    assert wide[0][0].shape == (3, 32, 128)
    with pytest.raises(DataError, match=r"gnfcd\.png: 'gnfcd' has characters 'd' outside the charset"):
        build_image_dataset("captcha_folder", root=tmp_path / "samples", charset="278bcfgn")
    with pytest.raises(DataError, match="longer than 4 characters"):
        build_image_dataset("captcha_folder", root=tmp_path / "samples", length=4)
    with pytest.raises(ConfigError, match="needs data.root"):
        build_image_dataset("captcha_folder")
    # The shipped config switches to real captchas with three overrides: a folder has no layouts, and
    # says so in one line when the config's data.layout is left on.
    folder = ["train", "--config", "configs/captcha.yaml", "--dry-run", "data.name=captcha_folder",
              f"data.root={tmp_path / 'samples'}", "train.batch_size=2"]
    assert main([*folder, "data.layout=false"]) == 0
    assert main(folder) == 2
    assert "captcha_folder has no layouts" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no captcha images"):
        build_image_dataset("captcha_folder", root=tmp_path / "empty")
    (tmp_path / "samples" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"unreadable image: .*bad\.png"):
        build_image_dataset("captcha_folder", root=tmp_path / "samples")


# --------------------------------------------------------------------------------------------------
# Text-conditional training and sampling end to end.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    import os

    run = tmp_path_factory.mktemp("runs") / "captcha"
    cwd = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(__file__)))
    try:
        assert main(["train", "--config", "configs/captcha.yaml", "--run", str(run), *TINY_TEXT_RUN]) == 0
    finally:
        os.chdir(cwd)
    return run


def test_shipped_config_builds_a_text_conditional_unet(capsys):
    from ddpmlab.config import load_config
    from ddpmlab.data import build_data
    from ddpmlab.runs import build_model_for

    config = load_config("configs/captcha.yaml")
    _, info = build_data(config.data, config.train.batch_size, config.train.seed)
    model = build_model_for(config, info)
    assert info.shape == (1, 32, 96) and (info.text_charset, info.text_length) == (DEFAULT_CHARSET, 5)
    assert model.condition_encoder.charset == DEFAULT_CHARSET and model.condition_encoder.length == 5
    assert model.downsampling_factor == 8 and 96 % 8 == 0 and 32 % 8 == 0
    assert main(["train", "--config", "configs/captcha.yaml", "--dry-run"]) == 0
    assert "UNet with 1,382,244 parameters" in capsys.readouterr().out  # with the glyph input channel


def test_text_run_trains_a_text_conditional_unet(text_run):
    from ddpmlab.models import TextEmbedding
    from ddpmlab.runs import open_run

    run = open_run(text_run, "cpu")
    encoder = run.model.condition_encoder
    assert isinstance(encoder, TextEmbedding) and run.text_encoder is encoder
    assert (encoder.charset, encoder.length, encoder.null_condition) == ("abcd", 2, "")
    assert run.info.shape == (1, 16, 32) and run.step == 2
    grid = Image.open(text_run / "samples" / "step_0000002.png")  # 8 rows (strings) of 8 samples
    assert grid.size == (8 * (32 + 2) + 2, 8 * (16 + 2) + 2)


def test_sample_with_text_to_npz_grid_and_zip(text_run, tmp_path):
    out = tmp_path / "x.npz"
    assert main(["sample", "--run", str(text_run), "--text", "ab,cd", "--num", "6", "--guidance", "3",
                 "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (6, 16, 32, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == ["ab"] * 3 + ["cd"] * 3  # each string in turn, in blocks
    default = tmp_path / "default.npz"  # without --num: 8 per string
    assert main(["sample", "--run", str(text_run), "--text", "ab,cd", "--out", str(default)]) == 0
    assert np.load(default)["labels"].tolist() == ["ab"] * 8 + ["cd"] * 8
    grid = tmp_path / "grid.png"
    command = ["sample", "--run", str(text_run), "--text", "ab,cd,d", "--num", "7", "--out", str(grid)]
    assert main(command) == 0
    # Blocks of 3, 3, 1: three rows (one per string) of three columns, enlarged 2x.
    assert Image.open(grid).size == (2 * (3 * (32 + 2) + 2), 2 * (3 * (16 + 2) + 2))
    archive = tmp_path / "HW_captcha.zip"
    assert main(["export", "--run", str(text_run), "--text", "ba", "--num", "2", "--zip", str(archive)]) == 0
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["000_ba.png", "001_ba.png"]
    default_zip = tmp_path / "default.zip"  # --text without --num: 8 per string here too, not export's 64
    assert main(["export", "--run", str(text_run), "--text", "ba", "--zip", str(default_zip)]) == 0
    with zipfile.ZipFile(default_zip) as z:
        assert sorted(z.namelist()) == [f"{i:03d}_ba.png" for i in range(8)]


def test_sample_without_text_draws_random_strings_from_the_seed(text_run, tmp_path):
    labels = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / f"{name}.npz"
        assert main(["sample", "--run", str(text_run), "--num", "5", "--seed", seed, "--out", str(out)]) == 0
        labels.append(np.load(out)["labels"].tolist())
    assert labels[0] == labels[1] == random_texts(5, "abcd", 2, seed=0)
    assert labels[2] == random_texts(5, "abcd", 2, seed=1) and labels[2] != labels[0]


def test_bad_text_is_refused_before_any_sampling(text_run, tmp_path, capsys, monkeypatch):
    import ddpmlab.runs

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(ddpmlab.runs, "sample_run", no_sampling)
    out = tmp_path / "x.npz"
    bad = [["--text", "ab,ze"], ["--text", "abc"], ["--text", ","], ["--labels", "1"]]
    for option in bad:
        assert main(["sample", "--run", str(text_run), *option, "--out", str(out)]) == 2
    assert main(["export", "--run", str(text_run), "--text", "ab,ze", "--zip", str(tmp_path / "x.zip")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("ddpmlab: error:") for line in errors)
    assert "'ze' has characters 'ez' outside the charset 'abcd'" in errors[0]
    assert "'abc' is longer than 2 characters" in errors[1]
    assert "this run is conditioned on text" in errors[3]
    assert not out.exists() and not (tmp_path / "x.zip").exists()


def test_text_on_a_run_without_text_conditioning_is_refused(tmp_path, capsys):
    run = tmp_path / "plain"
    assert main(["train", "--config", "configs/captcha.yaml", "--run", str(run), *TINY_TEXT_RUN,
                 "data.conditional=false", "train.steps=1", "train.sample_every=null"]) == 0
    assert main(["sample", "--run", str(run), "--text", "ab", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--text: this run is not conditioned on text" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The null condition of classifier-free guidance.
# --------------------------------------------------------------------------------------------------


def test_empty_string_is_the_null_condition_guidance_and_dropout_use():
    from ddpmlab.guidance import ClassifierFreeGuidance
    from ddpmlab.models import UNet

    torch.manual_seed(0)
    model = UNet(1, base_channels=8, channel_mults=(1, 2), attention_levels=[1], num_heads=2, num_groups=4,
                 image_size=32, condition="text", text_charset="abcd", text_length=2, text_token_dim=8).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the zero-initialised layers would make every output 0
            parameter.add_(0.05 * torch.randn_like(parameter))
    encoder = model.condition_encoder
    assert encoder.null_condition == ""
    x, t, texts = torch.randn(2, 1, 16, 32), torch.tensor([3, 40]), ["ab", "dc"]
    with torch.no_grad():
        conditional = model(x, t, texts)
        null = model(x, t, ["", ""])
        torch.testing.assert_close(model(x, t, None), null, rtol=0, atol=0)  # cond=None means the null string
        assert (conditional - null).abs().max() > 1e-3  # the text changes the prediction
        assert (model(x, t, ["ab", "cd"]) - conditional)[1].abs().max() > 1e-4  # and each string its own
        guided = ClassifierFreeGuidance(model, 3.0, encoder.null_condition)(x, t, texts)
        torch.testing.assert_close(guided, null + 3.0 * (conditional - null), rtol=1e-5, atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    assert encoder.drop(texts, 1.0, generator) == ["", ""] and encoder.drop(texts, 0.0, generator) == texts
    dropped = encoder.drop(["ab"] * 400, 0.25, generator)
    assert set(dropped) == {"ab", ""} and 60 < dropped.count("") < 140
