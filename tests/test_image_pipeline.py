"""The image pipeline end to end on tiny settings: train, sample grids during training, sample to
npz / grid / folder, export a zip, the demo, exact resume of a UNet run."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.cli import main

TINY_UNET = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "train.steps=4", "train.batch_size=8", "train.log_every=2", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.sample_every=2", "train.minutes=null",
    "train.checkpoint_every=2", "diffusion.timesteps=50", "sample.steps=5", "sample.batch_size=32",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("runs")
    cwd = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(__file__)))
    try:
        command = ["train", "--config", "configs/mnist5k.yaml", "--run", str(root / "mnist"), *TINY_UNET]
        assert main(command) == 0
    finally:
        os.chdir(cwd)
    return root / "mnist"


def test_training_writes_checkpoint_metrics_and_sample_grids(mnist_run):
    assert (mnist_run / "checkpoints" / "last.pt").exists()
    grids = sorted((mnist_run / "samples").glob("step_*.png"))
    assert [g.name for g in grids][:2] == ["step_0000002.png", "step_0000004.png"]
    assert Image.open(grids[0]).size[0] > 8 * 28  # 8 columns of 28-pixel digits


def test_sample_to_npz_grid_and_folder(mnist_run, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(mnist_run), "--num", "20", "--labels", "all", "--guidance", "3",
                 "--sampler", "ddim", "--steps", "4", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (20, 28, 28, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [i // 2 for i in range(20)]  # 'all': classes in turn, in blocks
    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(mnist_run), "--num", "20", "--labels", "all", "--steps", "4",
                 "--out", str(grid)]) == 0
    assert Image.open(grid).size[1] > Image.open(grid).size[0]  # 10 rows (one per digit) of 2
    folder = tmp_path / "pngs"
    assert main(["sample", "--run", str(mnist_run), "--num", "3", "--labels", "7", "--steps", "3",
                 "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["000_7.png", "001_7.png", "002_7.png"]


def test_samples_do_not_depend_on_batch_size(mnist_run, tmp_path):
    arrays = []
    for batch in ("8", "24"):
        out = tmp_path / f"b{batch}.npz"
        assert main(["sample", "--run", str(mnist_run), "--num", "24", "--steps", "3", "--batch-size", batch,
                     "--seed", "5", "--out", str(out)]) == 0
        arrays.append(np.load(out)["images"])
    np.testing.assert_array_equal(arrays[0], arrays[1])


def test_export_writes_a_zip_of_separate_images(mnist_run, tmp_path):
    archive = tmp_path / "HW2_123456789.zip"
    assert main(["export", "--run", str(mnist_run), "--num", "64", "--format", "jpg", "--steps", "3",
                 "--zip", str(archive)]) == 0
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert len(names) == 64 and all(name.endswith(".jpg") for name in names)


def test_resume_of_an_image_run_is_exact(tmp_path):
    from ddpmlab.config import load_config
    from ddpmlab.runs import train_run

    overrides = [o for o in TINY_UNET if not o.startswith("train.sample_every")]
    overrides += ["train.sample_every=null", "train.lr_schedule=constant"]
    straight = train_run(load_config("configs/mnist5k.yaml", overrides), tmp_path / "a")
    split = load_config("configs/mnist5k.yaml", [*overrides, "train.steps=2"])
    train_run(split, tmp_path / "b")
    resumed = train_run(load_config("configs/mnist5k.yaml", overrides), tmp_path / "b", resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_image_commands_refuse_bad_requests(mnist_run, tmp_path, capsys):
    assert main(["export", "--run", str(mnist_run), "--zip", str(tmp_path / "x.tar")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--labels", "12", "--out", str(tmp_path / "x.npz")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--out", str(tmp_path / "x.tiff")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--frames", "1", "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--num", "300", "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["sample", "--run", str(mnist_run), "--fps", "60", "--out", str(tmp_path / "x.gif")]) == 2
    gif = str(tmp_path / "x.gif")
    assert main(["sample", "--run", str(mnist_run), "--batch-size", "4", "--out", gif]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 7 and all(line.startswith("ddpmlab: error:") for line in errors)
    assert not (tmp_path / "x.gif").exists()


def test_sample_gif_is_a_denoising_animation(mnist_run, tmp_path):
    out = tmp_path / "denoising.gif"
    assert main(["sample", "--run", str(mnist_run), "--num", "10", "--labels", "all", "--guidance", "3",
                 "--sampler", "ddim", "--steps", "6", "--frames", "4", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4  # steps 0, 2, 4 of 6, then the final sample
        width, height = gif.size
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    # x_t and x0 side by side: two grids of 10 rows (one per digit) of one 28-pixel digit, enlarged 2x.
    assert width > 2 * 2 * 28 and height > 10 * 2 * 28
    assert durations[:-1] == [100] * 3 and durations[-1] == 2000  # 10 fps, the final sample held 2 s
    # Without --num: two samples per class with --labels all (20 here; the run's sample.num is 1000).
    assert main(["sample", "--run", str(mnist_run), "--labels", "all", "--sampler", "ddim", "--steps", "2",
                 "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 3 and gif.size[1] > 10 * 2 * 28  # steps 0, 1 and the samples; 10 rows


def test_trajectory_starts_at_the_noise_and_ends_at_the_samples(mnist_run):
    from ddpmlab.data.images import to_uint8
    from ddpmlab.diffusion import randn
    from ddpmlab.runs import make_run_sampler, open_run, sample_images, sample_trajectory, seed_generators

    run = open_run(mnist_run, "cpu")
    sampler = make_run_sampler(run, "ddim", 5, None)
    trajectory = sample_trajectory(run, 12, sampler, frames=3, guidance=2.0, seed=4)
    assert trajectory.x_t.shape == trajectory.x0.shape == (3, 12, 28, 28, 1)
    assert trajectory.timesteps[0] == 49 and trajectory.timesteps[-1] == -1  # T = 50: noisiest first
    assert trajectory.timesteps == sorted(trajectory.timesteps, reverse=True)
    assert trajectory.steps == [0, 2, 5] and trajectory.num_steps == 5  # snapshot_steps(5, 3) = 0, 2, 5
    noise = randn((16, 1, 28, 28), seed_generators(4, 0, 16, 8, torch.device("cpu")), None, torch.float32)
    torch.testing.assert_close(trajectory.x_t[0], to_uint8(noise[:12]), rtol=0, atol=0)
    images, labels = sample_images(run, 12, sampler, guidance=2.0, seed=4)
    torch.testing.assert_close(trajectory.x_t[-1], images, rtol=0, atol=0)
    assert trajectory.labels.tolist() == labels.tolist() == [i % 10 for i in range(12)]


@pytest.mark.parametrize(
    "num_steps, frames, expected",
    [(6, 4, [0, 2, 4, 6]), (3, 40, [0, 1, 2, 3]), (1000, 2, [0, 1000]), (50, 40, None)],
)
def test_snapshot_steps_are_evenly_spaced_with_both_ends(num_steps, frames, expected):
    from ddpmlab.runs import snapshot_steps

    steps = snapshot_steps(num_steps, frames)
    if expected is not None:
        assert steps == expected
    assert steps[0] == 0 and steps[-1] == num_steps and len(steps) == min(frames, num_steps + 1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        snapshot_steps(num_steps, 1)


def test_image_demo_writes_grid_zip_and_animation(tmp_path, capsys, monkeypatch):
    import ddpmlab.runs.demo

    make_sampler = ddpmlab.runs.demo.make_run_sampler  # the demo's sampler, cut to 5 steps for speed
    monkeypatch.setattr(
        ddpmlab.runs.demo, "make_run_sampler", lambda run, kind, steps: make_sampler(run, kind, 5)
    )
    run = tmp_path / "demo"
    assert main(["demo", "--config", "mnist5k", "--run", str(run), *TINY_UNET]) == 0
    printed = capsys.readouterr().out
    for name in ("demo_grid.png", "demo_samples.zip", "demo_denoising.gif"):
        assert (run / name).exists() and str(run / name) in printed
    assert Image.open(run / "demo_grid.png").size == (2 * (10 * 30 + 2),) * 2  # 10x10 digits, enlarged 2x
    with zipfile.ZipFile(run / "demo_samples.zip") as z:
        assert len(z.namelist()) == 64
    with Image.open(run / "demo_denoising.gif") as gif:
        assert gif.n_frames == 6  # 26 frames asked, but 5 steps: x_t before each step and the samples


def test_the_demo_samples_with_the_runs_own_sampler_and_steps(monkeypatch):
    from types import SimpleNamespace

    import ddpmlab.runs.demo

    calls = []
    monkeypatch.setattr(
        ddpmlab.runs.demo, "make_run_sampler", lambda run, kind, steps: calls.append((kind, steps))
    )
    run = SimpleNamespace(config=SimpleNamespace(sample=SimpleNamespace(steps=20)),
                          diffusion=SimpleNamespace(num_timesteps=1000))
    ddpmlab.runs.demo.demo_sampler(run)  # the config's sampler (None: the run's own) and steps
    run.config.sample.steps = None
    ddpmlab.runs.demo.demo_sampler(run)  # no steps given: DDIM 50, not all T
    run.config.sample.steps, run.diffusion.num_timesteps = 20, 10
    ddpmlab.runs.demo.demo_sampler(run)  # never more steps than timesteps
    assert calls == [(None, 20), ("ddim", 50), (None, 10)]
