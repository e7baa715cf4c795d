"""diffusers interop, offline: ``ddpmlab import-diffusers`` and ``ddpmlab export --diffusers``.

Tiny random diffusers models are written with ``save_pretrained`` into temporary folders and imported;
tiny ddpmlab runs are trained two steps and exported, then loaded with ``DDPMPipeline`` /
``DDIMPipeline.from_pretrained(..., local_files_only=True)``. Both sides sample from the same noise:
DDIM (eta 0) is deterministic given x_T, and DDPM draws x_T and every step's noise from one generator
in the same order on both sides, so the images must agree to float32 rounding. Run with ``pytest -s``
to see every measured difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    UNet2DModel,
)

from ddpmlab.cli import main  # noqa: E402
from ddpmlab.config import Config  # noqa: E402
from ddpmlab.models import UNet, build_model  # noqa: E402
from ddpmlab.models.diffusers_format import (  # noqa: E402
    state_dict_from_diffusers,
    unet2d_config,
    unet_options,
)
from ddpmlab.runs import make_run_sampler, open_run, sample_run  # noqa: E402
from ddpmlab.runs.diffusers_scheduler import import_schedule, scheduler_config  # noqa: E402
from ddpmlab.schedules import make_schedule  # noqa: E402
from ddpmlab.training.checkpoint import load_checkpoint  # noqa: E402

MNIST5K = str(Path(__file__).resolve().parents[1] / "configs" / "mnist5k.yaml")
TINY_RUN = [
    "data.name=folder", "data.image_size=16", "model.base_channels=8", "model.channel_mults=[1,2]",
    "model.attention_levels=[1]", "model.num_groups=4", "model.head_dim=4", "train.steps=2",
    "train.batch_size=4", "train.warmup_steps=1", "train.progress=false", "train.tensorboard=false",
    "train.minutes=null", "train.log_every=1", "diffusion.timesteps=50", "sample.steps=3",
    "sample.batch_size=8",
]
TOL = 1e-5  # images in [-1, 1], float32 networks and schedules


def report(label: str, error: float) -> float:
    print(f"\ninterop {label}: max abs difference {error:.3e}")
    return error


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


def _pipeline_images(images: np.ndarray) -> torch.Tensor:
    """A pipeline's ``output_type="np"`` images [B, H, W, C] in [0, 1] -> [B, C, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


def _as_uint8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("data") / "images")


def _train_tiny(run: Path, folder: Path, conditional: bool, *extra: str) -> Path:
    """A tiny mnist5k-shaped UNet trained two steps on the image folder (classes ant, bee)."""
    assert main(["train", "--config", MNIST5K, "--run", str(run), f"data.root={folder}",
                 f"data.conditional={str(conditional).lower()}", *TINY_RUN, *extra]) == 0
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, folder) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("runs") / "uncond", folder, False)


@pytest.fixture(scope="module")
def trained_conditional(tmp_path_factory, folder) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("runs") / "cond", folder, True)


# --------------------------------------------------------------------------------------------------
# Import.
# --------------------------------------------------------------------------------------------------


def _save_pipeline(path: Path, unet: UNet2DModel, scheduler: DDPMScheduler) -> Path:
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return path


def test_an_imported_pipeline_samples_the_same_images_in_ddpmlab_and_diffusers(tmp_path, capsys):
    torch.manual_seed(0)
    unet = _randomize(UNET_DEFAULT_LAYOUT(), 1)  # diffusers' defaults: flip_sin_to_cos, freq_shift 0
    scheduler = DDPMScheduler(num_train_timesteps=60, beta_schedule="scaled_linear", beta_start=0.001,
                              beta_end=0.04, timestep_spacing="trailing")
    source = _save_pipeline(tmp_path / "pipeline", unet, scheduler)
    run = tmp_path / "run"
    assert main(["import-diffusers", str(source), "--run", str(run)]) == 0
    assert "imported" in capsys.readouterr().out
    # DDIM, eta 0, through the CLI: ddpmlab's first seed block of 8 samples draws x_T from
    # torch.Generator().manual_seed(seed * 1_000_003), here seed 0, as the pipeline's generator does
    out = tmp_path / "ddim.npz"
    assert main(["sample", "--run", str(run), "--sampler", "ddim", "--steps", "4", "--eta", "0", "--num", "8",
                 "--seed", "0", "--out", str(out)]) == 0
    pipeline = DDIMPipeline.from_pretrained(source, local_files_only=True)
    theirs = pipeline(batch_size=8, generator=torch.Generator().manual_seed(0), eta=0.0,
                      num_inference_steps=4, use_clipped_model_output=True, output_type="np").images
    assert np.abs(np.load(out)["images"].astype(int) - _as_uint8(theirs).astype(int)).max() <= 1
    # the same in float, and DDPM (x_T and every step's noise from one generator on both sides)
    opened = open_run(run, device="cpu")
    ddim_options = {"eta": 0.0, "use_clipped_model_output": True}
    for name, pipeline_class, options in (("ddim", DDIMPipeline, ddim_options), ("ddpm", DDPMPipeline, {})):
        sampler = make_run_sampler(opened, name, steps=4, eta=0.0)
        ours, _ = sample_run(opened, 8, sampler, seed=0)
        pipeline = pipeline_class.from_pretrained(source, local_files_only=True)
        theirs = pipeline(batch_size=8, generator=torch.Generator().manual_seed(0), num_inference_steps=4,
                          output_type="np", **options).images
        error = report(f"import, {name.upper()} 4 steps, ddpmlab vs {pipeline_class.__name__}",
                       (ours.clamp(-1, 1) - _pipeline_images(theirs)).abs().max().item())
        assert error <= TOL


def UNET_DEFAULT_LAYOUT() -> UNet2DModel:
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    )


def _google_layout(sample_size: int = 16) -> UNet2DModel:
    """google/ddpm-cifar10-32's block structure and options at small widths (16, 32, 32, 32)."""
    return UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
        attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1,
        downsample_padding=0, time_embedding_type="positional", center_input_sample=False,
    )


def _legacy_weights(folder: Path) -> None:
    """Rewrite the folder's UNet weights as old diffusers files hold them: a .bin with the attention
    weights named query, key, value and proj_attn."""
    from safetensors.torch import load_file

    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for name, tensor in load_file(str(path)).items():
        for new, legacy in old.items():
            name = name.replace(f".{new}.", f".{legacy}.")
        state[name] = tensor
    assert any(".query." in name for name in state)
    torch.save(state, path.with_suffix(".bin"))
    path.unlink()


def test_the_published_ddpm_cifar10_layout_imports_exactly(tmp_path):
    unet = _randomize(_google_layout(), 2)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)  # linear
    source = _save_pipeline(tmp_path / "ddpm-cifar10-like", unet, scheduler)
    _legacy_weights(source)
    run = tmp_path / "run"
    assert main(["import-diffusers", str(source), "--run", str(run)]) == 0
    config = Config.from_dict(load_checkpoint(run / "checkpoints" / "last.pt")["config"])
    assert (config.diffusion.schedule, config.diffusion.timesteps, config.diffusion.schedule_options) == (
        "linear", 1000, {})
    options = config.model.options
    assert options["norm_eps"] == 1e-6 and options["time_frequency_shift"] == 1.0
    assert options["downsample_padding"] == 0
    assert options["num_heads"] == 1 and options["channel_mults"] == [1, 2, 2, 2]
    opened = open_run(run, device="cpu")
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        theirs = unet.eval()(x, t).sample
        error = report("google/ddpm-cifar10-32 layout (tiny widths, legacy .bin), network output",
                       (opened.model(x, t) - theirs).abs().max().item())
    assert error <= TOL * theirs.abs().max().item()


def test_import_refuses_what_ddpmlab_cannot_express_in_one_line(tmp_path, capsys):
    unet = UNET_DEFAULT_LAYOUT()
    cases = {
        "resnet_time_scale_shift": dict(resnet_time_scale_shift="scale_shift"),  # no middle GroupNorm
        "center_input_sample": dict(center_input_sample=True),
        "out_channels": dict(out_channels=6),
        "have no counterpart": dict(down_block_types=("DownBlock2D", "ResnetDownsampleBlock2D")),
    }
    for expected, change in cases.items():
        with pytest.raises(ValueError, match=expected):
            unet_options({**unet.config, **change})
    with pytest.raises(ValueError, match="variance_type"):
        import_schedule({**DDPMScheduler(variance_type="learned_range").config})
    source = _save_pipeline(tmp_path / "pipeline", unet, DDPMScheduler(thresholding=True))
    assert main(["import-diffusers", str(source), "--run", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpmlab: error: ") and "thresholding" in error and error.count("\n") == 1
    index = json.loads((source / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    (source / "model_index.json").write_text(json.dumps(index))
    assert main(["import-diffusers", str(source), "--run", str(tmp_path / "run")]) == 2
    assert "not a UNet2DModel" in capsys.readouterr().err


def test_an_imported_run_fine_tunes_with_train_resume(tmp_path, folder, capsys):
    unet = _randomize(UNET_DEFAULT_LAYOUT(), 4, scale=0.05)
    source = _save_pipeline(tmp_path / "pipeline", unet, DDPMScheduler(num_train_timesteps=50))
    run = tmp_path / "run"
    quiet = ["train.progress=false", "train.tensorboard=false", "train.batch_size=4", "train.warmup_steps=1"]
    assert main(["import-diffusers", str(source), "--run", str(run), "data.name=folder",
                 f"data.root={folder}", *quiet]) == 0
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    assert before["step"] == 0 and "optimizer" not in before
    assert main(["train", "--run", str(run), "--resume", "train.steps=2"]) == 0
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["step"] == 2 and "optimizer" in after
    changed = [key for key in before["model"] if not torch.equal(before["model"][key], after["model"][key])]
    assert changed  # the imported weights were trained further
    # without data at import, fine-tuning says what is missing
    bare = tmp_path / "bare"
    assert main(["import-diffusers", str(source), "--run", str(bare)]) == 0
    capsys.readouterr()
    assert main(["train", "--run", str(bare), "--resume", "train.steps=2"]) == 2
    assert "data.root" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------------------------------


def test_an_exported_run_samples_the_same_images_in_diffusers_pipelines(trained, tmp_path):
    exported = tmp_path / "exported"
    assert main(["export", "--run", str(trained), "--diffusers", str(exported)]) == 0
    files = sorted(str(path.relative_to(exported)) for path in exported.rglob("*") if path.is_file())
    assert files == ["README.md", "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                     "unet/diffusion_pytorch_model.safetensors"]
    from safetensors import safe_open

    with safe_open(str(exported / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        assert "conv_in.weight" in weights.keys()
    # 5 steps: diffusers' DDIM steps from t to t - T // K, the next trailing step only when K divides T
    for name, pipeline_class, options in (("ddim", DDIMPipeline, ["--eta", "0"]), ("ddpm", DDPMPipeline, [])):
        out = tmp_path / f"{name}.npz"
        assert main(["sample", "--run", str(trained), "--sampler", name, "--steps", "5", "--num", "8",
                     "--seed", "0", "--out", str(out), *options]) == 0
        pipeline = pipeline_class.from_pretrained(exported, local_files_only=True)
        extra = {"eta": 0.0, "use_clipped_model_output": True} if name == "ddim" else {}
        theirs = pipeline(batch_size=8, generator=torch.Generator().manual_seed(0), num_inference_steps=5,
                          output_type="np", **extra).images
        ours = np.load(out)["images"].astype(int)
        assert np.abs(ours - _as_uint8(theirs).astype(int)).max() <= 1
        opened = open_run(trained, device="cpu")
        samples, _ = sample_run(opened, 8, make_run_sampler(opened, name, steps=5, eta=0.0), seed=0)
        error = report(f"export, {name.upper()} 5 steps, ddpmlab vs {pipeline_class.__name__}",
                       (samples.clamp(-1, 1) - _pipeline_images(theirs)).abs().max().item())
        assert error <= TOL
    assert main(["export", "--run", str(trained), "--diffusers", str(exported)]) == 2  # not over a folder


def test_the_readme_guidance_loop_on_a_class_conditional_export_matches_ddpmlab(
    trained_conditional, tmp_path
):
    exported = tmp_path / "exported"
    assert main(["export", "--run", str(trained_conditional), "--diffusers", str(exported)]) == 0
    config = json.loads((exported / "unet" / "config.json").read_text())
    assert config["num_class_embeds"] == 3 and config["_ddpmlab"]["class_names"] == ["ant", "bee"]
    # the loop of README.md, section "diffusers"
    unet = UNet2DModel.from_pretrained(exported, subfolder="unet", local_files_only=True).eval()
    scheduler = DDIMScheduler.from_pretrained(exported, subfolder="scheduler", local_files_only=True)
    scheduler.set_timesteps(5)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    null = torch.full_like(labels, unet.config.num_class_embeds - 1)  # ddpmlab's "no class" row
    w = 3.0
    generator = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn((len(labels), unet.config.in_channels, size, size), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond, uncond = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.chunk(2)
            eps = uncond + w * (cond - uncond)
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    opened = open_run(trained_conditional, device="cpu")
    ours, _ = sample_run(opened, 8, make_run_sampler(opened, "ddim", steps=5, eta=0.0), guidance=w,
                         labels=labels, seed=0)
    error = report("class-conditional export, README guidance loop (w 3, DDIM 5) vs ddpmlab",
                   (ours - x).abs().max().item())
    assert error <= TOL


def test_export_refuses_what_diffusers_cannot_express_in_one_line(tmp_path, folder, capsys):
    run = _train_tiny(tmp_path / "patched", folder, False, "model.patch_size=2")
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--diffusers", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddpmlab: error: patch_size 2") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
    text = UNet(in_channels=3, base_channels=8, channel_mults=(1, 2), num_groups=4, image_size=8,
                condition="text", text_charset="ab", text_length=2)
    with pytest.raises(ValueError, match="text conditioning"):
        unet2d_config(text, 8)
    heads = UNet(in_channels=3, base_channels=8, channel_mults=(1, 2), num_groups=4, num_heads=2,
                 attention_levels=[0, 1], image_size=8)  # heads of 4 and 8 channels
    with pytest.raises(ValueError, match="head width"):
        unet2d_config(heads, 8)
    # --zip and --diffusers exclude each other (one line, status 2)
    assert main(["export", "--run", str(run), "--zip", "a.zip", "--diffusers", str(tmp_path / "out")]) == 2


# --------------------------------------------------------------------------------------------------
# The mappings themselves.
# --------------------------------------------------------------------------------------------------


HO_OPTIONS = {"norm_eps": 1e-6, "time_frequency_shift": 1.0, "downsample_padding": 0}


@pytest.mark.parametrize("shift_options", [{}, HO_OPTIONS])
@pytest.mark.parametrize("scale_shift", [True, False])
def test_our_unet_round_trips_through_diffusers_format(shift_options, scale_shift):
    ours = _randomize(UNet(in_channels=3, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                           attention_levels=[1], head_dim=8, num_groups=8, image_size=8, dropout=0.0,
                           condition="class", num_classes=3, scale_shift=scale_shift, **shift_options),
                      5).eval()
    config = unet2d_config(ours, 8)
    theirs = UNet2DModel(**{key: value for key, value in config.items() if not key.startswith("_")}).eval()
    from ddpmlab.models.diffusers_format import state_dict_to_diffusers

    theirs.load_state_dict(state_dict_to_diffusers(ours), strict=True)
    back = build_model({"type": "unet", **unet_options(config)}).eval()
    assert back.condition_encoder.num_classes == 3  # the null class row came back as ours
    back.load_state_dict(state_dict_from_diffusers(theirs.state_dict(), back, config["flip_sin_to_cos"]))
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), back.state_dict().values()))
    x, t, labels = torch.randn(2, 3, 8, 8), torch.tensor([1, 900]), torch.tensor([2, 3])
    with torch.no_grad():
        error = report(f"our UNet vs UNet2DModel, scale_shift={scale_shift} {shift_options}",
                       (ours(x, t, labels) - theirs(x, t, class_labels=labels).sample).abs().max().item())
    assert error <= TOL


@pytest.mark.parametrize(
    "schedule, timesteps, theirs",
    [("linear", 1000, "linear"), ("linear", 50, "linear"), ("cosine", 100, "squaredcos_cap_v2"),
     ("quadratic", 200, "scaled_linear"), ("sigmoid", 100, None)],
)
def test_schedules_round_trip_through_scheduler_configs(schedule, timesteps, theirs):
    config = Config.from_dict({"diffusion": {"schedule": schedule, "timesteps": timesteps}})
    ours = make_schedule(schedule, timesteps)
    written = scheduler_config(ours, config)
    assert written["beta_schedule"] == (theirs or "linear")
    assert (written["trained_betas"] is None) == (theirs is not None)
    diffusers_betas = DDPMScheduler(**{k: v for k, v in written.items() if not k.startswith("_")}).betas
    assert ((diffusers_betas.double() - ours.betas).abs() / ours.betas).max() <= 1e-6  # float32 rounding
    diffusion, _ = import_schedule(written)
    assert diffusion["schedule"] == schedule and diffusion["timesteps"] == timesteps
    back = make_schedule(diffusion["schedule"], timesteps, **diffusion["schedule_options"])
    assert ((back.betas - ours.betas).abs() / ours.betas).max() <= 1e-12


def test_a_schedule_no_name_gives_travels_as_its_betas():
    betas = torch.linspace(1e-3, 0.05, 40, dtype=torch.float64) ** 1.5
    config = Config.from_dict({"diffusion": {"schedule": betas.tolist(), "timesteps": 40}})
    written = scheduler_config(make_schedule(config.diffusion.schedule), config)
    assert written["trained_betas"] == betas.tolist()
    diffusion, _ = import_schedule(written)
    assert diffusion["schedule"] == betas.tolist() and diffusion["timesteps"] == 40
    assert Config.from_dict({"diffusion": diffusion}).diffusion.schedule == betas.tolist()


def test_a_class_conditional_unet2dmodel_from_elsewhere_keeps_all_its_classes():
    """Without ddpmlab's note, all num_class_embeds rows are classes; the null class is added as zeros."""
    theirs = _randomize(UNet2DModel(**{**UNET_DEFAULT_LAYOUT().config, "num_class_embeds": 4}), 6).eval()
    options = unet_options(dict(theirs.config))
    assert options["num_classes"] == 4
    ours = build_model({"type": "unet", **options}).eval()
    ours.load_state_dict(state_dict_from_diffusers(theirs.state_dict(), ours))
    assert torch.equal(ours.condition_encoder.embedding.weight[4], torch.zeros(64))
    x, t, labels = torch.randn(4, 3, 8, 8), torch.tensor([3, 30, 300, 999]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        error = report("class-conditional UNet2DModel (flip_sin_to_cos, 4 classes) imported, network output",
                       (ours(x, t, labels) - theirs(x, t, class_labels=labels).sample).abs().max().item())
    assert error <= TOL
