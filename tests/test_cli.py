"""Smoke tests of every command on tiny configs, and of the one-line errors (exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddpmlab.cli import main

TINY = [
    "model.hidden=16",
    "model.num_blocks=1",
    "model.time_dim=16",
    "train.steps=20",
    "train.batch_size=64",
    "train.log_every=5",
    "train.progress=false",
    "train.tensorboard=false",
    "train.warmup_steps=2",
    "diffusion.timesteps=100",
    "sample.num=400",
    "sample.steps=10",
    "sample.batch_size=200",
]


def _train(tmp_path, name="mog1d", extra=()):
    run = tmp_path / name
    code = main(["train", "--config", f"configs/{name}.yaml", "--run", str(run), *TINY, *extra])
    assert code == 0
    return run


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_schedules_command_prints_the_table_and_writes_the_plot(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_schedules.py").write_text(
        "import math\ndef slow(tau):\n    return math.cos(tau * math.pi / 2) ** 4 + 1e-4\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "s.png"
    assert main(["schedules", "--schedules", "linear,cosine,my_schedules:slow", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000
    linear_row = next(line for line in text.splitlines() if line.startswith("linear"))
    assert linear_row.split()[1:4] == ["259", "475", "673"]  # alpha_bar crossings of the linear schedule
    assert "my_schedules:slow" in text


def test_train_writes_a_complete_toy_run(tmp_path):
    run = _train(tmp_path)
    for name in (
        "config.yaml",
        "checkpoints/last.pt",
        "metrics.jsonl",
        "eval.json",
        "plots/density.png",
        "plots/forward.png",
        "plots/trajectories.png",
        "plots/loss.png",
    ):
        assert (run / name).exists(), name
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["num"] == 400 and evaluation["w1"] > 0 and evaluation["w1_floor"] > 0


def test_train_2d_writes_snapshots_and_a_gif(tmp_path):
    run = _train(tmp_path, "moons")
    for name in ("plots/samples.png", "plots/forward.png", "plots/reverse.png", "plots/reverse.gif"):
        assert (run / name).stat().st_size > 1000, name
    assert json.loads((run / "eval.json").read_text())["sliced_w1"] > 0


def test_sample_writes_npz_and_is_reproducible(tmp_path):
    run = _train(tmp_path)
    outs = []
    for index, sampler in enumerate(["ddpm", "ddim", "ddim"]):
        out = tmp_path / f"s{index}.npz"
        assert (
            main(
                [
                    "sample",
                    "--run",
                    str(run),
                    "--num",
                    "300",
                    "--sampler",
                    sampler,
                    "--steps",
                    "8",
                    "--seed",
                    "3",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        outs.append(np.load(out)["samples"])
    assert outs[0].shape == (300, 1) and np.isfinite(outs[0]).all()
    np.testing.assert_array_equal(outs[1], outs[2])


def test_conditional_run_samples_requested_labels(tmp_path):
    run = _train(tmp_path, extra=["data.conditional=true"])
    out = tmp_path / "c.npz"
    assert (
        main(
            [
                "sample",
                "--run",
                str(run),
                "--num",
                "10",
                "--labels",
                "0,2",
                "--guidance",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = np.load(out)
    assert data["labels"].tolist() == [0, 2] * 5 and data["samples"].shape == (10, 1)


def test_existing_run_is_never_overwritten_and_resume_continues(tmp_path, capsys):
    run = _train(tmp_path)
    checkpoint = (run / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--config", "configs/mog1d.yaml", "--run", str(run), *TINY]) == 2
    assert "already holds a trained run" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").read_bytes() == checkpoint
    assert (
        main(
            [
                "train",
                "--config",
                "configs/mog1d.yaml",
                "--run",
                str(run),
                "--resume",
                *TINY,
                "train.steps=30",
            ]
        )
        == 0
    )
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 30


def test_dry_run_prints_config_and_parameter_count(tmp_path, capsys):
    assert main(["train", "--config", "configs/mog1d.yaml", "--dry-run", "model.hidden=32"]) == 0
    out = capsys.readouterr().out
    assert "hidden: 32" in out and "parameters" in out
    assert not (tmp_path / "runs").exists()


def test_demo_runs_and_replaces_only_its_own_directory(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--config", "mog1d", "--run", str(run), *TINY]) == 0
    assert (run / "plots" / "density.png").exists()
    assert main(["demo", "--config", "mog1d", "--run", str(run), *TINY]) == 0  # an earlier demo is replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert main(["demo", "--config", "mog1d", "--run", str(other), *TINY]) == 2
    assert (other / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--config", "configs/mog1d.yaml", "train.stpes=3"], "unknown key(s) stpes in train"),
        (["train", "--config", "nope.yaml"], "config file not found"),
        (["train", "--config", "configs/mog1d.yaml", "data.name=nonsense", "--dry-run"], "nonsense"),
        (["train", "--config", "configs/mog1d.yaml", "data.bogus=1", "--dry-run"], "bogus"),
        (["train", "--config", "configs/mog1d.yaml", "model.depth=1", "--dry-run"], "depth"),
        (["sample", "--run", "no/such/run", "--out", "x.npz"], "is not a trained run"),
        (["schedules", "--schedules", "linear,wobbly"], "unknown schedule 'wobbly'"),
        (["schedules", "--timesteps", "10"], "too small"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpmlab: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_sample_refuses_labels_for_an_unconditional_run(tmp_path, capsys):
    run = _train(tmp_path)
    assert main(["sample", "--run", str(run), "--labels", "1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "unconditional" in capsys.readouterr().err
