"""Glyph layouts (``data.layout`` of the captcha source; ddpmlab.models.glyphs.PlacedText): the layout pass
finds where the captcha package drew each character without changing what it draws, a placed string draws
its glyph tiles at its centres (and at the slots' own centres it is the plain glyph image), training batches
carry the centres to the model, and a layout run samples with strings the renderer placed."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.data.base import DataError
from ddpmlab.data.captcha import DEFAULT_CHARSET, CaptchaDataset, place_texts, render_captcha
from ddpmlab.data.captcha_render import captcha_module, character_centres, image_captcha
from ddpmlab.models import UNet
from ddpmlab.models.glyphs import GLYPH_PAPER, GlyphBank, PlacedText, glyph_centres

TINY = dict(base_channels=8, channel_mults=(1, 2), attention_levels=[1], num_heads=2, num_groups=4,
            dropout=0.0, condition="text", text_charset="abcd", text_length=2, text_token_dim=8)
TINY_LAYOUT_RUN = [
    "data.charset=abcd", "data.length=2", "data.num_items=16", "data.height=16", "data.width=32",
    "data.layout=true", "model.base_channels=8", "model.channel_mults=[1,2]",
    "model.attention_levels=[1]", "model.num_groups=4", "model.num_heads=2", "model.text_token_dim=8",
    "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.sample_every=null", "train.minutes=null",
    "train.checkpoint_every=2", "diffusion.timesteps=50", "sample.steps=2", "sample.batch_size=16",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def ids(text: str, charset: str = DEFAULT_CHARSET) -> list[int]:
    return [charset.index(c) + 1 for c in text]


def inked_columns(image: torch.Tensor) -> torch.Tensor:
    """Indices of the columns of a [H, W] image in [-1, 1] with any ink (darker than mid-grey)."""
    return (image < 0).any(0).nonzero().flatten().float()


def ink_centre(columns: torch.Tensor) -> float:
    """The middle of inked column indices, in the continuous coordinate where column j spans [j, j + 1)."""
    return float(columns.min() + columns.max() + 1) / 2


# --------------------------------------------------------------------------------------------------
# PlacedText and the glyph bank.
# --------------------------------------------------------------------------------------------------


def test_placed_text_is_its_string_everywhere_and_checks_its_centres():
    placed = PlacedText("fngff", [0.1, 0.3, 0.5, 0.7, 0.9])
    assert placed == "fngff" and hash(placed) == hash("fngff") and f"{placed}" == "fngff"
    assert {placed: 1}["fngff"] == 1
    again = pickle.loads(pickle.dumps(placed))  # DataLoader workers send labels through pickle
    assert isinstance(again, PlacedText) and again.centres == placed.centres and again == "fngff"
    with pytest.raises(ValueError, match="one finite centre per character"):
        PlacedText("ab", [0.5])
    with pytest.raises(ValueError, match="one finite centre per character"):
        PlacedText("ab", [0.5, float("nan")])


def test_glyph_centres_are_nan_where_a_condition_is_not_placed():
    assert glyph_centres(["ab", ""], 3) is None
    centres = glyph_centres([PlacedText("ab", [0.2, 0.6]), "", "abc"], 3)
    assert centres.shape == (3, 3)
    assert torch.allclose(centres[0, :2], torch.tensor([0.2, 0.6])) and centres[0, 2].isnan()
    assert centres[1:].isnan().all()


def test_tiles_at_the_slot_centres_are_the_plain_glyph_image_and_nan_means_the_slot():
    bank = GlyphBank(DEFAULT_CHARSET, 5, 32, 96)  # slots 19 wide from column 0 (one spare column)
    tokens = torch.tensor([ids("fngff"), ids("gnfcd")])
    slots = torch.tensor([[(19 * k + 9.5) / 96 for k in range(5)]] * 2)
    plain = bank(tokens)
    assert torch.equal(bank(tokens, slots), plain)
    assert torch.equal(bank(tokens, torch.full((2, 5), float("nan"))), plain)


def test_each_tile_is_drawn_centred_at_its_centre_and_overlaps_keep_the_darker_pixel():
    bank = GlyphBank(DEFAULT_CHARSET, 5, 32, 96)
    tokens = torch.tensor([ids("m") + [0] * 4])
    for centre in (0.2, 0.47, 0.81):
        image = bank(tokens, torch.tensor([[centre] + [float("nan")] * 4]))[0, 0]
        columns = inked_columns(image)
        assert abs(ink_centre(columns) - centre * 96) <= 1.5, centre
    # two characters at one centre: their union of ink, pixel by pixel the darker one
    both = bank(torch.tensor([ids("bd") + [0] * 3]), torch.tensor([[0.5, 0.5] + [float("nan")] * 3]))[0, 0]
    b = bank(torch.tensor([ids("b") + [0] * 4]), torch.tensor([[0.5] + [float("nan")] * 4]))[0, 0]
    d = bank(torch.tensor([ids("d") + [0] * 4]), torch.tensor([[0.5] + [float("nan")] * 4]))[0, 0]
    assert torch.equal(both, torch.minimum(b, d))
    # a tile half outside the image is cut, not wrapped around
    edge = bank(tokens, torch.tensor([[0.0] + [float("nan")] * 4]))[0, 0]
    assert (edge[:, 48:] == GLYPH_PAPER).all() and (edge[:, :10] < GLYPH_PAPER).any()


def test_the_unet_draws_placed_glyphs_and_a_placed_string_at_the_slots_is_the_plain_string():
    torch.manual_seed(0)
    model = UNet(1, **{**TINY, "image_size": 16, "text_glyph": True, "text_glyph_size": [16, 32]}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x, t = torch.randn(2, 1, 16, 32), torch.tensor([10, 40])
    slots = [(16 * k + 8) / 32 for k in range(2)]  # two slots of 16 columns: centres 8 and 24 of 32
    with torch.no_grad():
        plain = model(x, t, ["ab", "ba"])
        at_slots = model(x, t, [PlacedText("ab", slots), PlacedText("ba", slots)])
        moved = model(x, t, [PlacedText("ab", [0.1, 0.3]), "ba"])
    torch.testing.assert_close(at_slots, plain)
    assert not torch.allclose(moved[0], plain[0]) and torch.allclose(moved[1], plain[1])
    glyphs = model.glyph_image([PlacedText("ab", [0.1, 0.3])], 1, (16, 32))[0, 0]
    assert inked_columns(glyphs).max() < 16  # both characters in the left half


# --------------------------------------------------------------------------------------------------
# The layout pass.
# --------------------------------------------------------------------------------------------------


def test_layout_pass_finds_each_character_where_the_renderer_drew_it(monkeypatch):
    """Oracle: with the noise (drawn after the characters) switched off, a one-character captcha's ink
    is that character: its centre must sit within a pixel or two of the layout's centre, for every
    character of the charset (one-character rows are never squeezed: the test above has those)."""
    module = captcha_module()
    monkeypatch.setattr(module.ImageCaptcha, "create_noise_dots", staticmethod(lambda image, *a, **k: image))
    monkeypatch.setattr(module.ImageCaptcha, "create_noise_curve", staticmethod(lambda image, *a, **k: image))
    generator = image_captcha(module, 32, canvas=3)
    errors = []
    for index, character in enumerate(DEFAULT_CHARSET * 2):
        rng = random.Random(index)
        (centre,) = character_centres(character, rng, 32, generator)
        image = render_captcha(character, rng, 32, 96).convert("L")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
        ink = (pixels < pixels.median() - 25).any(0).nonzero().flatten().float()
        errors.append(abs(ink_centre(ink) - centre * 96))
    assert max(errors) <= 2.5, errors


@pytest.mark.parametrize("length, height, width", [(5, 32, 96), (7, 32, 96), (5, 50, 200)])
def test_layout_is_where_the_real_render_pasted_each_character(monkeypatch, length, height, width):
    """Oracle from the real render itself: record every paste ImageCaptcha makes while the dataset renders
    an item (each character's image, its mask and its offset on the row, then squeezed to the render
    width) and compute each character's ink centre from those; the dataset's layout (another pass,
    another route to the random state) must agree within a tenth of a pixel, over rows with word spaces,
    overlaps and squeezes."""
    from PIL import Image

    pastes: list[tuple[int, int, Image.Image]] = []
    paste = Image.Image.paste

    def recording(self, image, box=None, mask=None):
        if mask is not None:
            pastes.append((self.size[0], box[0], mask.copy()))
        return paste(self, image, box, mask)

    data = CaptchaDataset(num_items=40, length=length, height=height, width=width, layout=True, cache=False)
    squeezed = 0
    for index in range(len(data)):
        pastes.clear()
        monkeypatch.setattr(Image.Image, "paste", recording)
        data.render(index)
        monkeypatch.setattr(Image.Image, "paste", paste)
        expected = []
        for row_width, offset, mask in pastes:
            peak = mask.getextrema()[1]
            if not peak:
                continue  # a word space
            box = mask.point(lambda v, peak=peak: 255 if v >= 0.5 * peak else 0).getbbox()
            expected.append((offset + (box[0] + box[2]) / 2) / row_width)
        squeezed += pastes[0][0] > 160 * max(1, height // 60)
        got = data.placed_text(index).centres
        assert len(got) == len(expected) == length
        assert max(abs(a - b) for a, b in zip(got, expected)) * width < 0.1, (index, got, expected)
    assert squeezed > 0  # some rows were too wide and squeezed: the squeeze is exercised


def test_layout_leaves_the_render_unchanged_and_is_fixed_by_the_item():
    plain = CaptchaDataset(num_items=6)
    placed = CaptchaDataset(num_items=6, layout=True)
    uncached = CaptchaDataset(num_items=6, layout=True, cache=False)
    for index in range(6):
        image, text = placed[index]
        assert torch.equal(image, plain[index][0]) and torch.equal(image, uncached[index][0])
        assert isinstance(text, PlacedText) and text == plain.texts[index]
        assert text.centres == uncached[index][1].centres
        assert list(text.centres) == sorted(text.centres) and 0 < min(text.centres) and max(text.centres) < 1
    assert not isinstance(plain[0][1], PlacedText)


def test_place_texts_draws_layouts_by_seed_and_index_and_keeps_the_empty_string():
    first = place_texts(["fngff", "fngff", ""], seed=0)
    assert first == ["fngff", "fngff", ""] and first[2] == "" and not isinstance(first[2], PlacedText)
    assert first[0].centres != first[1].centres  # each sample its own layout
    again = place_texts(["fngff", "fngff"], seed=0)
    assert [text.centres for text in again] == [text.centres for text in first[:2]]
    assert place_texts(["fngff"], seed=1)[0].centres != first[0].centres


def test_a_canvas_too_small_for_the_row_is_an_error_not_a_squeezed_layout():
    module = captcha_module()
    with pytest.raises(DataError, match="does not fit the layout canvas"):
        character_centres("mwmwmwmwmwmw", random.Random(0), 32, image_captcha(module, 32, canvas=2))


def test_bad_layout_option_is_refused():
    with pytest.raises(DataError, match="data.layout must be true or false"):
        CaptchaDataset(num_items=2, layout="yes")


# --------------------------------------------------------------------------------------------------
# Training and sampling a layout run.
# --------------------------------------------------------------------------------------------------


def test_a_layout_run_trains_on_placed_strings_and_samples_with_placed_strings(tmp_path, monkeypatch):
    seen: list[list] = []
    glyph_image = UNet.glyph_image

    def spy(self, cond, batch, size):
        seen.append(list(cond) if cond is not None else None)
        return glyph_image(self, cond, batch, size)

    monkeypatch.setattr(UNet, "glyph_image", spy)
    run = tmp_path / "run"
    args = ["train", "--config", "configs/captcha.yaml", "--run", str(run), *TINY_LAYOUT_RUN]
    assert main([*args, "train.sample_every=2"]) == 0  # a sample grid at the last step
    trained = [cond for cond in seen if cond and len(cond) == 8]  # training batches of 8
    assert trained and all(isinstance(text, PlacedText) or text == "" for cond in trained for text in cond)
    grid = [cond for cond in seen if cond and len(cond) > 8]  # the grid's 8 x 8 strings (+ the null ones)
    assert grid and all(isinstance(text, PlacedText) for cond in grid for text in cond if text)
    assert (run / "samples" / "step_0000002.png").exists()
    from ddpmlab.runs import open_run
    from ddpmlab.runs.conditions import sample_labels

    labels = sample_labels(open_run(run), 4, ["ab", "ba"], seed=3)
    assert labels == ["ab", "ba", "ab", "ba"] and all(isinstance(text, PlacedText) for text in labels)
    assert [text.centres for text in labels] == [t.centres for t in place_texts(labels, seed=3, height=16)]
    # the real images evaluation reads are the same images without layouts (only their strings are kept)
    from ddpmlab.runs.evaluate import real_data

    monkeypatch.setattr(CaptchaDataset, "placed_text", lambda self, index: pytest.fail("layout computed"))
    real = real_data(open_run(run), limit=8)
    assert len(real.images) == 8 and not any(isinstance(text, PlacedText) for text in real.labels)
    # so `compare` reads them once for a layout run and a slots run of the same data
    from ddpmlab.runs.compare import dataset_key

    slots = open_run(run)
    slots.config.data.options["layout"] = False
    assert dataset_key(slots) == dataset_key(open_run(run))
    slots.config.data.options["length"] = 3
    assert dataset_key(slots) != dataset_key(open_run(run))
    seen.clear()
    out = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run), "--text", "ab,ba", "--num", "4", "--out", str(out)]) == 0
    assert out.exists() and any(isinstance(text, PlacedText) for cond in seen if cond for text in cond)
