"""ddpmlab evaluate: samples against the run's real data in a judge's features, every number beside its
real-vs-real floor; real images score like real images, copies are caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddpmlab.cli import main

TINY_UNET = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.minutes=null", "train.checkpoint_every=2",
    "diffusion.timesteps=50", "sample.steps=3", "sample.batch_size=32",
]
TINY_JUDGE = [
    "model.width=8", "model.feature_dim=16", "model.dropout=0.0", "train.steps=100", "train.batch_size=32",
    "train.warmup_steps=5", "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=100",
    "train.ema_decay=0.9",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    import os

    root = tmp_path_factory.mktemp("evaluate")
    cwd = os.getcwd()
    os.chdir(request.config.rootpath)
    try:
        command = ["train", "--config", "configs/mnist5k.yaml", "--run", str(root / "model"), *TINY_UNET]
        assert main(command) == 0
        assert main(["train-judge", "--config", "configs/mnist5k_judge.yaml", "--run", str(root / "judge"),
                     *TINY_JUDGE]) == 0
    finally:
        os.chdir(cwd)
    return root


def _unused_real(run, count, limit):
    """``count`` real digits that ``real_data(run, limit)`` (a seeded choice of ``limit`` of the 5,000)
    does not hold: fresh real images for that reference."""
    from ddpmlab.runs import open_run
    from ddpmlab.runs.evaluate import real_data

    real = real_data(open_run(run), limit=5000)  # all of them, in order
    unused = torch.from_numpy(np.random.default_rng(0).permutation(5000)[limit : limit + count])
    return real.images[unused], real.labels[unused]


def test_evaluate_samples_a_run_and_writes_every_number(runs, tmp_path, capsys):
    out, pairs = tmp_path / "eval.json", tmp_path / "pairs.png"
    code = main(["evaluate", "--run", str(runs / "model"), "--num", "16", "--labels", "all", "--sampler",
                 "ddim", "--steps", "2", "--features", f"judge:{runs / 'judge'}", "--real-num", "300",
                 "--out", str(out), "--pairs", str(pairs)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "FD_judge" in printed and "class accuracy" in printed and pairs.exists()
    result = json.loads(out.read_text())
    assert result["n"] == 16 and result["n_reference"] == 284 and result["fd_label"] == "FD_judge"
    for key in ("fd", "fd_floor", "kid", "kid_floor", "precision", "recall", "class_accuracy"):
        assert np.isfinite(result[key]), key
    assert set(result["memorisation"]) == {"features", "pixels"}
    assert result["guidance"] == 3.0  # no --guidance: the w of configs/mnist5k.yaml's sample section


def test_real_digits_score_like_real_digits_and_copies_are_caught(runs, tmp_path, capsys):
    """Real images given as samples: FD near its floor (noise decides which is lower), the judge's
    accuracy equal to its floor; exact copies of the training set: every one flagged in pixels."""
    images, labels = _unused_real(runs / "model", 200, limit=3000)
    fresh = tmp_path / "fresh.npz"
    np.savez(fresh, images=images.numpy(), labels=labels.numpy())
    out = tmp_path / "fresh.json"
    assert main(["evaluate", "--run", str(runs / "model"), "--samples", str(fresh), "--features",
                 f"judge:{runs / 'judge'}", "--real-num", "3000", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["fd"] < 3 * result["fd_floor"] + 1e-3, (result["fd"], result["fd_floor"])
    assert result["precision"] > 0.6 and result["recall"] > 0.6
    assert result["memorisation"]["pixels"]["fraction_flagged"] < 0.3  # ~5% expected for fresh digits
    from ddpmlab.runs import open_run
    from ddpmlab.runs.evaluate import real_data

    copies = real_data(open_run(runs / "model"), limit=3000).images  # the very images evaluate reads
    copied = tmp_path / "copies.npz"
    np.savez(copied, images=copies[torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:100]])
    out = tmp_path / "copies.json"
    assert main(["evaluate", "--run", str(runs / "model"), "--samples", str(copied), "--features",
                 f"judge:{runs / 'judge'}", "--real-num", "3000", "--out", str(out)]) == 0
    found = json.loads(out.read_text())["memorisation"]["pixels"]
    assert found["min_distance"] == 0.0 and found["fraction_flagged"] > 0.8  # 90% of copies can be seen


def test_evaluate_refuses_bad_features_before_sampling(runs, capsys):
    assert main(["evaluate", "--run", str(runs / "model"), "--features", "resnet"]) == 2
    assert "--features must be judge:RUN or inception" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(runs / "model"), "--features", f"judge:{runs / 'model'}"]) == 2
    assert "is not a judge run" in capsys.readouterr().err


def test_sweep_writes_a_row_per_setting_with_network_evaluations(runs, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--run", str(runs / "model"), "--features", f"judge:{runs / 'judge'}", "--sampler",
                 "ddim,ddpm", "--steps", "2,5", "--guidance", "0,1,3", "--num", "16", "--labels", "all",
                 "--real-num", "300", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "sweep.json").read_text())
    rows = result["rows"]
    assert len(rows) == 12 and {(r["sampler"], r["steps"], r["guidance"]) for r in rows} == {
        (s, k, w) for s in ("ddim", "ddpm") for k in (2, 5) for w in (0.0, 1.0, 3.0)
    }
    for row in rows:  # guided steps evaluate the network twice; w = 0 and w = 1 once (one model alone)
        assert row["nfe"] == row["steps"] * (2 if row["guidance"] == 3.0 else 1)
        assert row["seconds_per_image"] > 0 and np.isfinite(row["fd"])
    assert (out / "sweep.png").exists() and (out / "sweep.csv").read_text().count("\n") == 13
    assert main(["sweep", "--run", str(runs / "model"), "--features", f"judge:{runs / 'judge'}", "--sampler",
                 "euler", "--out", str(out)]) == 2
    assert "--sampler: unknown euler" in capsys.readouterr().err
