"""Glyph conditioning (``model.text_glyph``, ddpmlab.models.glyphs): the glyph image of a string is its
characters' tiles side by side, "" is blank, the bank travels in the state dict, the image enters the UNet
as one more input channel before the patch folding, text_glyph false changes nothing, and a tiny captcha
run with glyphs trains, samples through classifier-free guidance and is refused by the diffusers export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpmlab.cli import main
from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.models import UNet
from ddpmlab.models.diffusers_format import unet2d_config
from ddpmlab.models.glyphs import GLYPH_PAPER, GlyphBank, render_glyph_tiles

CHARSET = "2345678bcdefgmnpwxy"
TINY = dict(base_channels=8, channel_mults=(1, 2), attention_levels=[1], num_heads=2, num_groups=4,
            dropout=0.0, condition="text", text_charset="abcd", text_length=2, text_token_dim=8)
TINY_GLYPH_RUN = [
    "data.charset=abcd", "data.length=2", "data.num_items=16", "data.height=16", "data.width=32",
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "model.text_token_dim=8", "train.steps=3", "train.batch_size=8", "train.log_every=1",
    "train.warmup_steps=1", "train.progress=false", "train.tensorboard=false", "train.sample_every=null",
    "train.minutes=null", "train.checkpoint_every=3", "diffusion.timesteps=50", "sample.steps=3",
    "sample.batch_size=16",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def perturbed(model: UNet, seed: int = 0) -> UNet:
    """``model`` with every parameter nudged (its zero-initialised output conv would make outputs 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def tiny(**overrides) -> UNet:
    torch.manual_seed(0)
    return UNet(1, **{**TINY, "image_size": 16, **overrides})


# --------------------------------------------------------------------------------------------------
# The bank.
# --------------------------------------------------------------------------------------------------


def test_glyph_image_is_the_tiles_of_its_characters_side_by_side():
    bank = GlyphBank(CHARSET, 5, 32, 96)
    tiles = bank.tiles
    assert tiles.shape == (len(CHARSET) + 1, 32, 19) and tiles.dtype == torch.float32
    assert tiles.min() == -1 and tiles.max() == 1
    ids = torch.tensor([[CHARSET.index(c) + 1 for c in "fngff"], [CHARSET.index(c) + 1 for c in "gnfcd"]])
    image = bank(ids)
    assert image.shape == (2, 1, 32, 96)
    # 96 = 5 x 19 + 1: the row of tiles is centred, the odd column of paper on the right
    assert (image[..., 95] == GLYPH_PAPER).all()
    for row in range(2):
        for position in range(5):
            tile = image[row, 0, :, position * 19 : (position + 1) * 19]
            assert torch.equal(tile, tiles[ids[row, position]])


def test_null_and_padding_tokens_are_blank_and_distinct_characters_distinct():
    tiles = render_glyph_tiles(CHARSET, 32, 19)
    assert (tiles[0] == GLYPH_PAPER).all()  # token 0: padding, and all of the null string ""
    inked = tiles[1:] < GLYPH_PAPER
    assert inked.flatten(1).any(1).all()  # every character has ink
    for i in range(1, len(tiles)):
        for j in range(1, i):
            assert not torch.equal(tiles[i], tiles[j]), (CHARSET[i - 1], CHARSET[j - 1])
    # centred: the middle of each character's inked columns within a pixel of the tile's middle
    for tile in tiles[1:]:
        columns = (tile < GLYPH_PAPER).any(0).nonzero().flatten()
        assert abs((columns[0] + columns[-1]) / 2 - 9) <= 1.0
    # the string "" and a short string's padding: blank tiles in the model's glyph image
    model = tiny(text_glyph=True, text_glyph_size=[16, 32])
    image = model.glyph_image(["", "a"], 2, (16, 32))
    assert (image[0] == GLYPH_PAPER).all() and (image[1, ..., 16:] == GLYPH_PAPER).all()
    assert (image[1, ..., :16] < GLYPH_PAPER).any()
    torch.testing.assert_close(model.glyph_image(None, 2, (16, 32)), image[:1].expand(2, -1, -1, -1))


def test_widths_that_do_not_divide_and_any_charset():
    bank = GlyphBank("AbZ", 3, 8, 20)  # tiles 6 wide, one column of paper on each side
    image = bank(torch.tensor([[1, 2, 3]]))
    assert (image[..., 0] == GLYPH_PAPER).all() and (image[..., 19] == GLYPH_PAPER).all()
    for position in range(3):
        assert torch.equal(image[0, 0, :, 1 + 6 * position : 7 + 6 * position], bank.tiles[position + 1])
    with pytest.raises(ValueError, match="no room for 5 characters"):
        GlyphBank("ab", 5, 8, 4)
    with pytest.raises(ValueError, match="takes 3 tokens"):
        bank(torch.tensor([[1, 2]]))


def test_bank_is_a_buffer_saved_and_loaded_with_the_weights():
    model = tiny(text_glyph=True, text_glyph_size=[16, 32])
    state = model.state_dict()
    assert "glyph_bank.tiles" in state and "glyph_bank.tiles" not in dict(model.named_parameters())
    marked = {name: tensor.clone() for name, tensor in state.items()}
    marked["glyph_bank.tiles"][1].fill_(0.25)  # a checkpoint's glyphs win over the installed font's
    other = tiny(text_glyph=True, text_glyph_size=[16, 32])
    other.load_state_dict(marked)
    assert (other.glyph_bank.tiles[1] == 0.25).all()
    assert (other.glyph_image(["ab"], 1, (16, 32))[0, 0, :, :16] == 0.25).all()
    with pytest.raises(RuntimeError, match="glyph_bank.tiles"):
        tiny().load_state_dict(state)  # a model without glyphs does not take them silently


# --------------------------------------------------------------------------------------------------
# The UNet.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [1, 2])
def test_glyph_image_is_one_more_input_channel_before_the_patch_folding(patch_size):
    model = perturbed(tiny(text_glyph=True, text_glyph_size=[16, 32], patch_size=patch_size))
    assert model.input_conv.in_channels == 2 * patch_size**2 and model.out_channels == 1
    seen = []
    model.input_conv.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x, t, texts = torch.randn(3, 1, 16, 32), torch.tensor([1, 20, 40]), ["ab", "dc", ""]
    with torch.no_grad():
        out = model(x, t, texts)
    assert out.shape == x.shape
    expected = torch.cat([x, model.glyph_image(texts, 3, (16, 32))], dim=1)
    if patch_size > 1:
        expected = F.pixel_unshuffle(expected, patch_size)
    assert torch.equal(seen[0], expected)
    # the glyph channel reaches the output: other glyphs, other prediction (text embedding unchanged)
    with torch.no_grad():
        model.glyph_bank.tiles[1:].neg_()
        assert (model(x, t, texts) - out)[:2].abs().max() > 1e-4
        torch.testing.assert_close(model(x, t, texts)[2], out[2], rtol=0, atol=0)  # "" has no glyphs
    # other input sizes get the glyph image resized to theirs
    assert model(torch.randn(1, 1, 32, 32), t[:1], ["ab"]).shape == (1, 1, 32, 32)


def test_text_glyph_false_is_the_model_without_the_key_bit_for_bit():
    for options in ({}, dict(text_cross_attention=True, patch_size=2)):
        plain, explicit = tiny(**options), tiny(text_glyph=False, **options)
        assert explicit.glyph_bank is None and plain.state_dict().keys() == explicit.state_dict().keys()
        for key, value in plain.state_dict().items():
            assert torch.equal(value, explicit.state_dict()[key]), key
        plain, explicit = perturbed(plain), perturbed(explicit)
        x, t = torch.randn(2, 1, 16, 32), torch.tensor([3, 30])
        with torch.no_grad():
            assert torch.equal(plain(x, t, ["ab", "c"]), explicit(x, t, ["ab", "c"]))


def test_text_glyph_needs_text_and_checks_its_size():
    with pytest.raises(ValueError, match="text_glyph needs condition='text'"):
        UNet(1, base_channels=8, channel_mults=(1, 2), num_groups=4, image_size=16, text_glyph=True)
    with pytest.raises(ValueError, match="text_glyph must be true or false"):
        tiny(text_glyph="yes")
    with pytest.raises(ValueError, match=r"text_glyph_size must be \[height, width\]"):
        tiny(text_glyph=True, text_glyph_size=[16])
    assert tiny(text_glyph=True).glyph_bank.tiles.shape == (5, 16, 8)  # default: image_size squared


def test_guidance_with_glyphs_is_one_batched_forward_of_cond_and_blank():
    model = perturbed(tiny(text_glyph=True, text_glyph_size=[16, 32]))
    x, t, texts = torch.randn(2, 1, 16, 32), torch.tensor([5, 45]), ["ab", "dc"]
    with torch.no_grad():
        conditional, null = model(x, t, texts), model(x, t, None)
        guided = ClassifierFreeGuidance(model, 3.0, model.condition_encoder.null_condition)(x, t, texts)
    torch.testing.assert_close(guided, null + 3.0 * (conditional - null), rtol=1e-5, atol=1e-5)


def test_diffusers_export_refuses_a_glyph_model_in_one_line():
    model = tiny(text_glyph=True, text_glyph_size=[16, 32])
    with pytest.raises(ValueError, match="text conditioning cannot be expressed") as error:
        unet2d_config(model, (16, 32))
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------------
# A run through the CLI.
# --------------------------------------------------------------------------------------------------


def test_shipped_captcha_config_is_the_plain_one_plus_glyphs(capsys):
    from ddpmlab.config import load_config
    from ddpmlab.data import build_data
    from ddpmlab.runs import build_model_for

    plain, glyph = load_config("configs/captcha_plain.yaml"), load_config("configs/captcha.yaml")
    assert glyph.model.options == {**plain.model.options, "text_glyph": True}
    # the same data less the glyphs' layout, the same diffusion and budget (a fair comparison), the same
    # sampler at another guidance scale (captcha_plain keeps the w = 5 it was measured with)
    assert glyph.data.options == {**plain.data.options, "layout": True}
    assert dataclasses.replace(glyph.data, options=plain.data.options) == plain.data
    assert glyph.diffusion == plain.diffusion and glyph.train == plain.train
    assert (glyph.sample.guidance, plain.sample.guidance) == (1.5, 5.0)
    assert dataclasses.replace(glyph.sample, guidance=plain.sample.guidance) == plain.sample
    _, info = build_data(glyph.data, glyph.train.batch_size, glyph.train.seed)
    model = build_model_for(glyph, info)
    assert model.glyph_bank.tiles.shape == (len(CHARSET) + 1, 32, 19)
    assert model.input_conv.in_channels == 2 * 4  # (image + glyphs) x 2x2 patches
    assert main(["train", "--config", "configs/captcha.yaml", "--dry-run"]) == 0
    assert "UNet with 1,382,244 parameters" in capsys.readouterr().out  # captcha_plain.yaml + 4 x 32 x 3 x 3


def test_glyph_run_trains_samples_with_guidance_and_refuses_diffusers(tmp_path: Path, capsys):
    from ddpmlab.runs import open_run

    run = tmp_path / "glyph"
    assert main(["train", "--config", "configs/captcha.yaml", "--run", str(run), *TINY_GLYPH_RUN]) == 0
    opened = open_run(run, "cpu")
    assert opened.model.glyph_bank is not None and opened.step == 3
    assert opened.model.glyph_bank.tiles.shape == (5, 16, 16)
    out = tmp_path / "x.npz"
    assert main(["sample", "--run", str(run), "--text", "ab,cd", "--num", "4", "--guidance", "3",
                 "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (4, 16, 32, 1) and data["labels"].tolist() == ["ab", "ab", "cd", "cd"]
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--diffusers", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpmlab: error:") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
    # the data without its text labels: the glyph option means nothing and is dropped, like cross-attention
    plain = tmp_path / "unconditional"
    assert main(["train", "--config", "configs/captcha.yaml", "--run", str(plain), *TINY_GLYPH_RUN,
                 "data.conditional=false", "train.steps=1", "train.checkpoint_every=1"]) == 0
    assert open_run(plain, "cpu").model.glyph_bank is None
