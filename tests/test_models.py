"""Tests of ddpmlab.models: embeddings, condition encoders, the MLP denoiser and the UNet."""

from __future__ import annotations

import math

import pytest
import torch

from ddpmlab.guidance import ClassifierFreeGuidance
from ddpmlab.models import (
    ClassEmbedding,
    MLPDenoiser,
    TextEmbedding,
    TimestepEmbedding,
    UNet,
    build_condition_encoder,
    build_model,
    count_parameters,
    sinusoidal_embedding,
)
from ddpmlab.models.unet import COORDINATE_FREQUENCIES, CrossAttention, coordinate_features

CHARSET = "0123456789abcdef"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread (and far faster than on two threads of a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(**overrides) -> UNet:
    """A UNet small enough for CPU tests: width 16, 8 groups, one res block per level."""
    options = dict(
        in_channels=3,
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        num_groups=8,
        num_heads=2,
        dropout=0.0,
        image_size=16,
    )
    options.update(overrides)
    return UNet(**options)


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so that zero-initialised layers stop hiding the inputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def timesteps(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------------
# Timestep embedding.
# -------------------------------------------------------------------------------------------------


def test_sinusoidal_embedding_at_zero_is_sin_zero_cos_one():
    embedding = sinusoidal_embedding(torch.tensor([0]), 8)
    assert embedding.dtype == torch.float32
    torch.testing.assert_close(embedding[0, :4], torch.zeros(4))
    torch.testing.assert_close(embedding[0, 4:], torch.ones(4))


def test_sinusoidal_embedding_known_values():
    # dim 4: half = 2, frequencies 10000 ** (-0 / 2) = 1 and 10000 ** (-1 / 2) = 0.01.
    embedding = sinusoidal_embedding(torch.tensor([3]), 4)
    expected = torch.tensor([[math.sin(3.0), math.sin(0.03), math.cos(3.0), math.cos(0.03)]])
    torch.testing.assert_close(embedding, expected)


def test_sinusoidal_embedding_distinct_timesteps_distinct_rows():
    embedding = sinusoidal_embedding(torch.arange(1000), 64)
    distances = torch.cdist(embedding, embedding) + torch.eye(1000) * 1e3
    assert distances.min() > 1e-3


@pytest.mark.parametrize("dim", [1, 5, 128])
def test_sinusoidal_embedding_shape_odd_dims(dim):
    embedding = sinusoidal_embedding(torch.arange(3), dim)
    assert embedding.shape == (3, dim)
    if dim % 2:
        assert torch.all(embedding[:, -1] == 0)


def test_timestep_embedding_shape():
    assert TimestepEmbedding(32, 128)(torch.arange(5)).shape == (5, 128)


# -------------------------------------------------------------------------------------------------
# Condition encoders.
# -------------------------------------------------------------------------------------------------


def test_class_embedding_null_index():
    encoder = ClassEmbedding(10, 16)
    assert encoder.null_condition == 10
    assert encoder.embedding.num_embeddings == 11
    assert encoder(torch.tensor([0, 9, 10])).shape == (3, 16)


@pytest.mark.parametrize("labels", [[-1, 0], [0, 11]])
def test_class_embedding_rejects_out_of_range(labels):
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.9"):
        ClassEmbedding(10, 16)(torch.tensor(labels))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_class_dropout_rate(p):
    encoder = ClassEmbedding(10, 4)
    labels = torch.arange(20000) % 10
    dropped = encoder.drop(labels, p, torch.Generator().manual_seed(1))
    rate = (dropped == encoder.null_condition).float().mean().item()
    assert abs(rate - p) < 0.02  # ~5 standard deviations
    kept = dropped != encoder.null_condition
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(labels, torch.arange(20000) % 10)  # the input is left alone


def test_class_dropout_edges_and_reproducibility():
    encoder = ClassEmbedding(10, 4)
    labels = torch.arange(100) % 10
    assert torch.equal(encoder.drop(labels, 0.0), labels)
    assert torch.all(encoder.drop(labels, 1.0) == 10)
    first = encoder.drop(labels, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(first, encoder.drop(labels, 0.5, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="probability"):
        encoder.drop(labels, 1.5)


def test_text_embedding_shapes_null_and_order():
    torch.manual_seed(0)
    encoder = TextEmbedding(CHARSET, 4, 32)
    assert encoder.null_condition == ""
    assert torch.equal(encoder.tokenize(["", "ab"]), torch.tensor([[0, 0, 0, 0], [11, 12, 0, 0]]))
    out = encoder(["ab12", "ba12", "", "f"])
    assert out.shape == (4, 32)
    assert not torch.allclose(out[0], out[1])  # position matters


@pytest.mark.parametrize("pooling", ["flatten", "mean"])
def test_text_embedding_pooling_keeps_order(pooling):
    torch.manual_seed(0)
    out = TextEmbedding(CHARSET, 3, 16, pooling=pooling)(["abc", "cba"])
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(
    ("texts", "message"),
    [(["aBc"], "outside the charset"), (["abcde"], "longer than the maximum length 4"), ("abc", "sequence")],
)
def test_text_embedding_rejects_bad_text(texts, message):
    with pytest.raises(ValueError, match=message):
        TextEmbedding(CHARSET, 4, 8)(texts)


def test_text_dropout_rate_and_edges():
    encoder = TextEmbedding(CHARSET, 4, 8)
    texts = ["ab12"] * 4000
    dropped = encoder.drop(texts, 0.25, torch.Generator().manual_seed(0))
    assert abs(dropped.count("") / len(texts) - 0.25) < 0.035
    assert set(dropped) == {"", "ab12"}
    assert encoder.drop(texts[:10], 0.0) == texts[:10]
    assert encoder.drop(texts[:10], 1.0) == [""] * 10


def test_build_condition_encoder():
    assert build_condition_encoder(None, 8) is None
    assert isinstance(build_condition_encoder("class", 8, num_classes=3), ClassEmbedding)
    assert isinstance(build_condition_encoder("text", 8, text_charset="ab", text_length=2), TextEmbedding)
    with pytest.raises(ValueError, match="needs num_classes"):
        build_condition_encoder("class", 8)
    with pytest.raises(ValueError, match="choose one of None, 'class', 'text'"):
        build_condition_encoder("image", 8)


# -------------------------------------------------------------------------------------------------
# MLP denoiser.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_dim", [1, 2])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_mlp_shapes(data_dim, num_classes):
    model = MLPDenoiser(data_dim, hidden=32, num_blocks=2, time_dim=16, num_classes=num_classes)
    x = torch.randn(7, data_dim)
    cond = torch.arange(7) % 3 if num_classes else None
    assert model(x, timesteps(7), cond).shape == (7, data_dim)
    assert (model.condition_encoder is None) == (num_classes is None)


def test_mlp_rejects_bad_shape_and_unexpected_condition():
    model = MLPDenoiser(1, hidden=16, num_blocks=1, time_dim=8)
    with pytest.raises(ValueError, match=r"shape \[B, 1\]"):
        model(torch.randn(5), timesteps(5))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(5, 1), timesteps(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="shape \\[5\\]"):
        model(torch.randn(5, 1), timesteps(4))


def test_mlp_timestep_and_class_matter():
    model = perturb(MLPDenoiser(2, hidden=32, num_blocks=2, time_dim=16, num_classes=3))
    x = torch.randn(1, 2).repeat(3, 1)
    with torch.no_grad():
        out = model(x, torch.tensor([1, 500, 1]), torch.tensor([0, 0, 1]))
    assert not torch.allclose(out[0], out[1])  # timestep
    assert not torch.allclose(out[0], out[2])  # class


def test_mlp_none_condition_is_the_null_class():
    model = perturb(MLPDenoiser(2, hidden=16, num_blocks=1, time_dim=8, num_classes=3))
    x, t = torch.randn(4, 2), timesteps(4)
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((4,), 3)))


def test_mlp_overfits_a_fixed_target():
    torch.manual_seed(0)
    model = MLPDenoiser(2, hidden=64, num_blocks=2, time_dim=32)
    x, t = torch.randn(64, 2), timesteps(64)
    target = torch.sin(3 * x) + (t[:, None] / 1000.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = (model(x, t) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


# -------------------------------------------------------------------------------------------------
# UNet.
# -------------------------------------------------------------------------------------------------

UNET_CASES = {
    "gray28": dict(in_channels=1, image_size=28, channel_mults=(1, 2)),
    "rgb32": dict(in_channels=3, image_size=32, channel_mults=(1, 2, 2)),
    "rgb64": dict(in_channels=3, image_size=64, channel_mults=(1, 1, 2, 2), attention_resolutions=[16]),
}
CONDITIONS = {
    None: {},
    "class": dict(condition="class", num_classes=10),
    "text": dict(condition="text", text_charset=CHARSET, text_length=4),
}


def condition_batch(condition: str | None, batch: int):
    if condition == "class":
        return torch.arange(batch) % 10
    if condition == "text":
        return ["ab12", "f", "", "0000"][:batch]
    return None


@pytest.mark.parametrize("case", list(UNET_CASES))
@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_unet_output_shape(case, condition):
    options = UNET_CASES[case]
    model = tiny_unet(**options, **CONDITIONS[condition])
    size = options["image_size"]
    x = torch.randn(2, options["in_channels"], size, size)
    with torch.no_grad():
        out = model(x, timesteps(2), condition_batch(condition, 2))
    assert out.shape == x.shape


@pytest.mark.parametrize("scale_shift", [False, True])
def test_unet_out_channels_and_non_square(scale_shift):
    model = tiny_unet(out_channels=6, scale_shift=scale_shift)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 24), timesteps(1)).shape == (1, 6, 16, 24)


def test_unet_is_zero_at_init_and_timestep_matters_after_perturbation():
    model = tiny_unet()
    x = torch.randn(1, 3, 16, 16).repeat(2, 1, 1, 1)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.all(model(x, t) == 0)
        out = perturb(model)(x, t)
    assert not torch.allclose(out[0], out[1], atol=1e-4)


@pytest.mark.parametrize("condition", ["class", "text"])
def test_unet_condition_matters_and_none_is_null(condition):
    model = perturb(tiny_unet(**CONDITIONS[condition]))
    x, t = torch.randn(1, 3, 16, 16).repeat(2, 1, 1, 1), torch.tensor([10, 10])
    cond = condition_batch(condition, 2)
    null = model.condition_encoder.null_condition
    with torch.no_grad():
        out = model(x, t, cond)
        torch.testing.assert_close(model(x, t), model(x, t, model.condition_encoder.drop(cond, 1.0)))
        guided = ClassifierFreeGuidance(model, 1.0, null)(x, t, cond)
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    torch.testing.assert_close(guided, out)


def test_unet_cfg_wrapper_batches_conditions():
    model = perturb(tiny_unet(**CONDITIONS["text"]))
    x, t = torch.randn(2, 3, 16, 16), timesteps(2)
    with torch.no_grad():
        guided = ClassifierFreeGuidance(model, 3.0, "")(x, t, ["ab", "cd"])
        conditional, unconditional = model(x, t, ["ab", "cd"]), model(x, t)
    torch.testing.assert_close(
        guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-5, rtol=1e-4
    )


def test_unet_cifar10_configuration_has_35_7m_parameters():
    model = UNet(
        in_channels=3,
        base_channels=128,
        channel_mults=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=[16],
        dropout=0.1,
        image_size=32,
        scale_shift=False,
    )
    count = count_parameters(model)
    assert abs(count - 35.7e6) / 35.7e6 < 0.01, count
    assert count == 35_746_307  # Ho et al.'s TensorFlow model, counted the same way
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32), torch.tensor([500])).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(image_size=30, channel_mults=(1, 2, 2)), "image_size must be divisible by 4"),
        (dict(attention_levels=(2,)), r"attention levels \[2\] are not among this UNet's levels \[0, 1\]"),
        (dict(attention_resolutions=[5]), r"attention resolutions \[5\] are not among .* \[16, 8\]"),
        (dict(attention_levels=(1,), attention_resolutions=[8]), "not both"),
        (dict(num_groups=32), "num_groups=32 must divide"),
        (dict(num_heads=3), "num_heads=3 must divide"),
        (dict(condition="audio"), "choose one of None, 'class', 'text'"),
        (dict(condition="class"), "needs num_classes"),
    ],
)
def test_unet_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_unet(**options)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 17, 16), r"divisible by 2, got 17x16"),
        ((1, 1, 16, 16), r"shape \[B, 3, H, W\]"),
        ((3, 16, 16), "shape"),
    ],
)
def test_unet_rejects_bad_input(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_unet()(torch.randn(shape), timesteps(shape[0]))


def test_unet_attention_resolutions_match_levels():
    by_resolution = tiny_unet(image_size=32, channel_mults=(1, 2, 2), attention_resolutions=[16, 8])
    by_level = tiny_unet(image_size=32, channel_mults=(1, 2, 2), attention_levels=(1, 2))
    assert count_parameters(by_resolution) == count_parameters(by_level)
    assert count_parameters(by_level) > count_parameters(tiny_unet(image_size=32, channel_mults=(1, 2, 2)))


def test_unet_head_dim_option():
    model = tiny_unet(head_dim=8)
    attention = model.down_levels[1].stages[0].attention
    assert attention.num_heads == 4  # 32 channels / 8


def test_unet_channels_last_input_gives_the_same_output():
    model = perturb(tiny_unet(image_size=32, channel_mults=(1, 2, 2)))
    x, t = torch.randn(2, 3, 32, 32), timesteps(2)
    with torch.no_grad():
        expected = model(x, t)
        out = model(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_patch_size_is_an_inner_unet_between_pixel_unshuffle_and_pixel_shuffle():
    """patch_size=p: the UNet runs on [B, C p^2, H/p, W/p] (each p x p patch as channels, as in the
    "simple diffusion" stem of Hoogeboom et al. 2023) and folds its output back to [B, C, H, W]."""
    patched = perturb(tiny_unet(patch_size=2, image_size=32, in_channels=3))
    inner = tiny_unet(in_channels=12, image_size=16)  # the same network on the rearranged pixels
    inner.load_state_dict(patched.state_dict())
    x, t = torch.randn(2, 3, 16, 24), timesteps(2)
    with torch.no_grad():
        out = patched(x, t)
        expected = torch.nn.functional.pixel_shuffle(inner(torch.nn.functional.pixel_unshuffle(x, 2), t), 2)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert patched.downsampling_factor == 4
    with pytest.raises(ValueError, match=r"divisible by 4, got 18x24"):
        patched(torch.randn(1, 3, 18, 24), timesteps(1))


def test_patch_size_shifts_the_attention_resolutions_and_is_validated():
    by_resolution = tiny_unet(patch_size=2, image_size=32, attention_resolutions=[8])
    assert [level.stages[0].attention is not None for level in by_resolution.down_levels] == [False, True]
    with pytest.raises(ValueError, match=r"image_size must be divisible by 8 .*patch_size 4"):
        tiny_unet(patch_size=4, image_size=36)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="patch_size must be a positive integer"):
            tiny_unet(patch_size=bad)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = perturb(tiny_unet(dropout=0.1, condition="class", num_classes=3)).train()
    x, t, labels = torch.randn(2, 3, 16, 16), timesteps(2), torch.tensor([0, 2])

    def gradients(checkpointing: bool) -> list[torch.Tensor]:
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        model(x, t, labels).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    for plain, checkpointed in zip(gradients(False), gradients(True), strict=True):
        torch.testing.assert_close(checkpointed, plain)


# -------------------------------------------------------------------------------------------------
# build_model.
# -------------------------------------------------------------------------------------------------


def test_build_model():
    assert isinstance(build_model({"type": "mlp", "data_dim": 2, "hidden": 16}), MLPDenoiser)
    unet = build_model({"type": "unet", "base_channels": 16, "channel_mults": [1, 2], "num_groups": 8})
    assert isinstance(unet, UNet)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "transformer"}, "unknown model type 'transformer'; choose one of unet, mlp"),
        ({"data_dim": 2}, "unknown model type None"),
        ({"type": "mlp", "data_dim": 2, "width": 3}, r"unknown option\(s\) \['width'\] .* allowed: data_dim"),
    ],
)
def test_build_model_rejects_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        build_model(config)


# -------------------------------------------------------------------------------------------------
# Cross-attention to text tokens.
# -------------------------------------------------------------------------------------------------

CROSS = dict(CONDITIONS["text"], text_cross_attention=True, text_token_dim=8)


def test_cross_attention_matches_an_explicit_softmax():
    """x + W_o softmax(q k^T / sqrt(d)) v per head, q from the normalised pixels, k and v from tokens."""
    torch.manual_seed(0)
    block = perturb(CrossAttention(channels=8, context_dim=6, num_heads=2, num_groups=4)).double()
    x, context = torch.randn(2, 8, 3, 5, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    pixels = block.norm(x).flatten(2).transpose(1, 2)  # [B, 15, 8]
    coordinates = coordinate_features(3, 5, COORDINATE_FREQUENCIES).double()  # row-major [15, 24]
    pixels = pixels + coordinates @ block.position.weight.T + block.position.bias
    q = pixels @ block.query.weight.T + block.query.bias
    k, v = (context @ block.key_value.weight.T + block.key_value.bias).split(8, dim=-1)
    heads = []
    for head in range(2):
        part = slice(4 * head, 4 * head + 4)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / 2.0, dim=-1)  # sqrt(4) = 2
        heads.append(weights @ v[..., part])
    out = torch.cat(heads, dim=-1) @ block.projection.weight.T + block.projection.bias
    expected = x + out.transpose(1, 2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(block(x, context), expected, atol=1e-12, rtol=0)


def test_coordinate_features_are_relative_positions():
    small, large = coordinate_features(2, 3, 4), coordinate_features(4, 6, 4)
    assert small.shape == (6, 16) and large.shape == (24, 16)
    # pixel (row 0, column 1) of 2x3: u = 1.5 / 3 = 0.5, v = 0.25; first frequency pi
    torch.testing.assert_close(small[1, [0, 4, 8, 12]], torch.tensor([1.0, 0.0, 2**-0.5, 2**-0.5]))
    assert torch.unique(small, dim=0).shape[0] == 6  # every pixel distinct
    # the same relative position gives the same features at any size: the centre of a 3x3 and of a 1x1
    torch.testing.assert_close(coordinate_features(3, 3, 4)[4], coordinate_features(1, 1, 4)[0])


def test_cross_attention_starts_as_the_identity():
    block = CrossAttention(channels=8, context_dim=6, num_heads=2, num_groups=4)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(block(x, torch.randn(2, 3, 6)), x)


def test_text_cross_attention_unet_sees_character_positions_and_null():
    model = perturb(tiny_unet(**CROSS))
    blocks = [module for module in model.modules() if isinstance(module, CrossAttention)]
    assert len(blocks) == 4  # level 1 (the default): 1 down and 2 up stages; the middle one
    x, t = torch.randn(1, 3, 16, 16).repeat(3, 1, 1, 1), torch.tensor([10, 10, 10])
    with torch.no_grad():
        out = model(x, t, ["ab12", "ba12", ""])
        torch.testing.assert_close(model(x[:1], t[:1]), out[2:])  # cond=None is the null string
        assert not torch.allclose(out[0], out[1], atol=1e-4)  # same characters, other order
        # the tokens alone change the output: with the pooled embedding's head zeroed, still different
        model.condition_encoder.head[-1].weight.zero_()
        model.condition_encoder.head[-1].bias.zero_()
        out = model(x, t, ["ab12", "ba12", ""])
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_text_cross_attention_with_checkpointing_and_cfg():
    model = perturb(tiny_unet(**CROSS)).train()
    x, t, texts = torch.randn(2, 3, 16, 16), timesteps(2), ["ab", "cd"]

    def gradients(checkpointing: bool) -> list[torch.Tensor]:
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        model(x, t, texts).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    for plain, checkpointed in zip(gradients(False), gradients(True), strict=True):
        torch.testing.assert_close(checkpointed, plain)
    model.eval()
    with torch.no_grad():
        guided = ClassifierFreeGuidance(model, 3.0, "")(x, t, texts)
        conditional, unconditional = model(x, t, texts), model(x, t)
    torch.testing.assert_close(
        guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-5, rtol=1e-4
    )


def test_text_cross_attention_needs_text_and_default_models_keep_their_keys():
    with pytest.raises(ValueError, match="text_cross_attention needs condition='text'"):
        tiny_unet(condition="class", num_classes=3, text_cross_attention=True)
    assert not any("cross" in key for key in tiny_unet(**CONDITIONS["text"]).state_dict())
