"""`ddpmlab forward`: the forward process q(x_t | x_0) on real images, one strip per schedule."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import ddpmlab.plots
from ddpmlab.cli import main
from ddpmlab.data.sources import build_image_dataset
from ddpmlab.plots import forward_strips, forward_timesteps, plot_forward_images
from ddpmlab.schedules import make_schedule

SCHEDULES = ["linear", "cosine", "quadratic", "sigmoid"]


def test_timesteps_are_evenly_spaced_from_0_to_T_minus_1():
    assert forward_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert forward_timesteps(50, 1) == [0]
    assert forward_timesteps(5, 5) == [0, 1, 2, 3, 4]
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match="steps must be"):
            forward_timesteps(5, bad)


def _strips(x0: torch.Tensor, t_values: list[int], seed: int = 0):
    schedules = [make_schedule(name, 1000) for name in SCHEDULES]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return schedules, noise, forward_strips(x0, schedules, t_values, noise)


def test_strips_are_q_sample_with_one_noise_for_every_schedule_and_t():
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t_values = forward_timesteps(1000, 6)
    schedules, noise, strips = _strips(x0, t_values)
    assert len(strips) == 4 and all(strip.shape == (6, 3, 1, 8, 8) for strip in strips)
    for schedule, strip in zip(schedules, strips):
        # t = 0 is the clean image up to the first step's tiny noise (alpha_bar_0 = 1 - beta_0).
        assert (strip[0] - x0).abs().max() < 0.05
        for k, t in enumerate(t_values):
            alpha_bar = float(schedule.alphas_cumprod[t])
            expected = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * noise
            torch.testing.assert_close(strip[k], expected, rtol=1e-5, atol=1e-5)
    # The strips differ only through the schedule: at the same alpha_bar they would be equal.
    assert not torch.equal(strips[0][3], strips[1][3])


def test_noise_level_matches_alpha_bar_in_pixel_statistics():
    """x0 = +-1 pixels: x_t has mean sqrt(alpha_bar) x0 and variance 1 - alpha_bar per pixel."""
    signs = torch.randint(0, 2, (64, 1, 16, 16), generator=torch.Generator().manual_seed(2)) * 2.0 - 1.0
    t_values = [0, 250, 500, 750, 999]
    schedules, _, strips = _strips(signs, t_values, seed=3)
    for schedule, strip in zip(schedules, strips):
        for k, t in enumerate(t_values):
            alpha_bar = float(schedule.alphas_cumprod[t])
            signal = (strip[k] * signs).mean().item()  # estimates sqrt(alpha_bar)
            residual = strip[k] - signal * signs
            assert signal == pytest.approx(math.sqrt(alpha_bar), abs=0.02), (schedule.name, t)
            noise_level = residual.std().item()
            assert noise_level == pytest.approx(math.sqrt(1 - alpha_bar), abs=0.02), (schedule.name, t)


def test_forward_command_writes_a_png_of_the_same_images_for_every_schedule(tmp_path, monkeypatch, capsys):
    captured = {}
    original = ddpmlab.plots.plot_forward_images

    def spy(strips, schedules, t_values, path, title=None):
        captured.update(strips=strips, schedules=schedules, t_values=t_values)
        return original(strips, schedules, t_values, path, title)

    monkeypatch.setattr(ddpmlab.plots, "plot_forward_images", spy)
    out = tmp_path / "forward.png"
    assert main(["forward", "--data", "digits", "--schedules", ",".join(SCHEDULES), "--steps", "5",
                 "--num", "3", "--seed", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    width, height = Image.open(out).size
    assert height > width  # four blocks of three rows, five columns
    assert captured["t_values"] == [0, 250, 500, 749, 999]
    indices = [int(i) for i in printed.split("[")[1].split("]")[0].split(",")]
    dataset = build_image_dataset("digits")
    x0 = torch.stack([dataset[i][0] for i in indices])
    noises = []
    for schedule, strip in zip(captured["schedules"], captured["strips"]):
        assert strip.shape == (5, 3, 1, 8, 8)
        assert (strip[0] - x0).abs().max() < 0.05  # t = 0: the clean images
        alpha_bar = float(schedule.alphas_cumprod[500])
        noises.append((strip[2] - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar))
    for noise in noises[1:]:
        torch.testing.assert_close(noise, noises[0], rtol=1e-4, atol=1e-4)  # the same noise everywhere


def test_forward_command_is_deterministic_given_the_seed(tmp_path, capsys):
    def images(seed: int) -> str:
        assert main(["forward", "--data", "digits", "--steps", "2", "--num", "4", "--seed", str(seed),
                     "--timesteps", "100", "--out", str(tmp_path / f"{seed}.png")]) == 0
        return capsys.readouterr().out.splitlines()[0]

    assert images(7) == images(7) != images(8)


def test_forward_command_takes_custom_schedules_and_image_folders(tmp_path, monkeypatch):
    (tmp_path / "fwd_custom_schedule.py").write_text("def alpha_bar(tau):\n    return 1 - tau ** 2 + 1e-4\n")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 14), (40 * i, 200, 90)).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["forward", "--data", "folder", "--root", str(folder), "--image-size", "12",
                 "--schedules", "linear,fwd_custom_schedule:alpha_bar", "--steps", "3", "--num", "2",
                 "--out", "custom.pdf"]) == 0
    assert (tmp_path / "custom.pdf").stat().st_size > 0


def test_plot_checks_its_inputs(tmp_path):
    schedules, _, strips = _strips(torch.zeros(1, 3, 4, 4), [0, 999])
    with pytest.raises(ValueError, match="strips for"):
        plot_forward_images(strips[:2], schedules, [0, 999], tmp_path / "x.png")


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "101", "--timesteps", "100"], "--steps"),
        (["--num", "0"], "--num"),
        (["--num", "5000"], "more than the 1797 images"),
        (["--timesteps", "0"], "--timesteps"),
        (["--schedules", "linear,cosin"], "unknown schedule 'cosin'"),
        (["--schedules", " , "], "--schedules is empty"),
        (["--data", "nonsense"], "unknown dataset 'nonsense'"),
        (["--data", "folder"], "data.root"),
        (["--out", "forward.txt"], "--out must end in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arguments, expected):
    command = ["forward", "--data", "digits", "--out", str(tmp_path / "f.png"), *arguments]
    if "--out" in arguments:
        command = ["forward", "--data", "digits", *arguments]
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("ddpmlab: error:") and expected in error[0], error
    assert not (tmp_path / "f.png").exists()
