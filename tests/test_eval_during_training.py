"""Evaluation during training (``train.eval_every``): ``ddpmlab evaluate``'s numbers in metrics.jsonl and
TensorBoard at the right steps, training left bit for bit as it is without evaluation (also across a
resume), failures that warn and let training continue, and plans that cannot work refused before step
1 with one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddpmlab import GaussianDiffusion, make_schedule
from ddpmlab.cli import main
from ddpmlab.config import TrainConfig
from ddpmlab.data.batches import SampledBatches
from ddpmlab.data.toy import GaussianMixture
from ddpmlab.models import MLPDenoiser
from ddpmlab.runs import read_metrics
from ddpmlab.training.checkpoint import load_checkpoint
from ddpmlab.training.trainer import Trainer

TINY_UNET = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "model.dropout=0.1", "train.steps=6", "train.batch_size=8", "train.log_every=1",
    "train.warmup_steps=1", "train.progress=false", "train.tensorboard=false", "train.minutes=null",
    "train.checkpoint_every=2", "train.sample_every=null", "diffusion.timesteps=50", "sample.steps=3",
    "sample.batch_size=32",
]
TINY_JUDGE = [
    "model.width=8", "model.feature_dim=16", "model.dropout=0.0", "train.steps=20", "train.batch_size=32",
    "train.warmup_steps=5", "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=20",
    "train.ema_decay=0.9",
]
EVAL_KEYS = (
    "fd", "fd_floor", "kid", "kid_std", "kid_floor", "precision", "precision_floor", "recall", "recall_floor",
    "class_accuracy", "class_accuracy_floor",
)


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def judge(tmp_path_factory, request):
    """A judge of 20 steps: a poor one, but a feature network that predicts classes all the same."""
    import os

    run = tmp_path_factory.mktemp("eval_during_training") / "judge"
    cwd = os.getcwd()
    os.chdir(request.config.rootpath)
    try:
        command = ["train-judge", "--config", "configs/mnist5k_judge.yaml", "--run", str(run), *TINY_JUDGE]
        assert main(command) == 0
    finally:
        os.chdir(cwd)
    return run


def _evaluation(judge, every: int = 2) -> list[str]:
    return [f"train.eval_every={every}", "train.eval_num=32", f"train.eval_features=judge:{judge}",
            "train.eval_real_num=400"]


def _train(run, *extra: str) -> int:
    return main(["train", "--config", "configs/mnist5k.yaml", "--run", str(run), *TINY_UNET, *extra])


def _eval_records(run) -> list[dict]:
    return [r for r in read_metrics(run) if "eval/fd" in r]


def _same_weights(a, b) -> bool:
    a, b = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    parts = [(a["model"], b["model"]), (a["ema"]["model"], b["ema"]["model"])]
    return a["step"] == b["step"] and all(torch.equal(x[k], y[k]) for x, y in parts for k in x)


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("step", "eval/seconds")}


def test_eval_lines_at_the_right_steps_equal_ddpmlab_evaluate(judge, tmp_path, capsys):
    """eval_every=2 over 5 steps: lines at steps 2 and 4 and at the last step, 5; the last one holds
    the numbers ``ddpmlab evaluate`` gives for the finished run (same N, seed, sampler, real images)."""
    run = tmp_path / "model"
    assert _train(run, "train.steps=5", "train.tensorboard=true", *_evaluation(judge)) == 0
    records = _eval_records(run)
    assert [r["step"] for r in records] == [2, 4, 5]
    for record in records:
        assert set(record) == {"step", "eval/seconds", *(f"eval/{k}" for k in EVAL_KEYS)}
        assert all(math.isfinite(v) for v in record.values()) and record["eval/seconds"] > 0
    assert records[0]["eval/fd_floor"] == records[-1]["eval/fd_floor"]  # the same real split every time
    out = tmp_path / "evaluate.json"
    assert main(["evaluate", "--run", str(run), "--num", "32", "--features", f"judge:{judge}",
                 "--real-num", "400", "--out", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert {f"eval/{k}": measured[k] for k in EVAL_KEYS} == _numbers(records[-1])  # bit for bit
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/fd")] == [2, 4, 5]
    assert "train/loss" in events.Tags()["scalars"]


def test_evaluation_changes_no_weight_and_a_resume_stays_exact(judge, tmp_path, monkeypatch, capsys):
    """With dropout (the global RNG) in the model: weights with evaluation == without, bit for bit;
    interrupted after step 3 and resumed == uninterrupted, with the same eval lines, each step once; a
    resume of the finished run evaluates nothing again; a resume may switch evaluation on."""
    assert _train(tmp_path / "off") == 0
    assert _train(tmp_path / "on", *_evaluation(judge)) == 0
    assert _same_weights(tmp_path / "off", tmp_path / "on")
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, until_step=None: fit(self, until_step=3))
    assert _train(tmp_path / "split", *_evaluation(judge)) == 0  # as if interrupted after step 3
    assert [r["step"] for r in _eval_records(tmp_path / "split")] == [2]  # an interruption is no end
    monkeypatch.setattr(Trainer, "fit", fit)
    assert main(["train", "--run", str(tmp_path / "split"), "--resume"]) == 0
    assert _same_weights(tmp_path / "split", tmp_path / "on")
    on, split = _eval_records(tmp_path / "on"), _eval_records(tmp_path / "split")
    assert [r["step"] for r in split] == [2, 4, 6]
    assert [_numbers(r) for r in split] == [_numbers(r) for r in on]
    assert main(["train", "--run", str(tmp_path / "on"), "--resume"]) == 0  # already finished
    assert [r["step"] for r in _eval_records(tmp_path / "on")] == [2, 4, 6]
    capsys.readouterr()
    assert main(["train", "--run", str(tmp_path / "off"), "--resume", "train.steps=8",
                 *_evaluation(judge, every=4)]) == 0
    assert "train.eval_every=4 (was 0)" in capsys.readouterr().err
    assert [r["step"] for r in _eval_records(tmp_path / "off")] == [8]


MIXTURE = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.3, 0.5], [0.4, 0.6])


def _toy_trainer(run_dir, evaluator=None) -> Trainer:
    torch.manual_seed(0)
    model = MLPDenoiser(2, hidden=32, num_blocks=2, time_dim=16, dropout=0.2)  # draws from the global RNG
    config = TrainConfig(steps=6, batch_size=16, lr=1e-2, warmup_steps=2, log_every=1, checkpoint_every=None,
                         tensorboard=False, progress=False, ema_decay=0.9, eval_every=2, eval_features="x")
    batches = SampledBatches(lambda n, g, return_labels=True: MIXTURE.sample(n, g, return_labels=True), 16, 0)
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    return Trainer(model, diffusion, batches, config, run_dir=run_dir, run_config={}, evaluator=evaluator)


def test_a_failed_or_non_finite_evaluation_warns_and_training_goes_on(tmp_path, capsys):
    """The evaluator draws from the global RNG (it may, in its own fork) and sees the EMA model in eval
    mode; step 2 fails, step 4 gives a NaN: one warning line each, the finite numbers are kept, and
    the weights are those of training without an evaluator."""
    seen = []

    def evaluator(step, model):
        seen.append((step, model.training))
        torch.randn(100)  # the global generator, as a careless metric might
        if step == 2:
            raise RuntimeError("out of memory\nsecond line")
        return {"fd": float("nan") if step == 4 else 1.5, "kid": 0.25}

    plain = _toy_trainer(tmp_path / "plain")
    plain.fit()
    measured = _toy_trainer(tmp_path / "measured", evaluator)
    measured.fit()
    assert seen == [(2, False), (4, False), (6, False)]
    assert torch.equal(torch.cat([p.flatten() for p in plain.model.parameters()]),
                       torch.cat([p.flatten() for p in measured.model.parameters()]))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ddpmlab: warning")]
    assert len(warnings) == 2
    assert "evaluation at step 2 failed, training continues: out of memory" in warnings[0]
    assert "step 4 gave non-finite fd (left out of the log)" in warnings[1]
    records = [r for r in read_metrics(tmp_path / "measured") if "eval/seconds" in r]
    logged = [(r["step"], r.get("eval/fd"), r["eval/kid"]) for r in records]
    assert logged == [(4, None, 0.25), (6, 1.5, 0.25)]
    assert load_checkpoint(tmp_path / "measured" / "checkpoints" / "last.pt")["evaluated_step"] == 6


@pytest.mark.parametrize(
    "extra, message",
    [
        (["train.eval_every=2"], "train.eval_every=2 needs train.eval_features"),
        (["train.eval_every=2", "train.eval_features=resnet"], "train.eval_features=resnet: --features must"),
        (["train.eval_every=2", "train.eval_features=judge:{run}"], "is not a judge run"),
        (["train.eval_every=2", "train.eval_features=judge:{judge}", "train.eval_steps=99"],
         "the evaluation's sampler cannot work"),
        (["train.eval_every=2", "train.eval_features=judge:{judge}", "train.eval_real_num=30"],
         "train.eval_num=500 needs more than 503 real images"),
        (["train.eval_every=2", "train.eval_features=judge:{judge}", "data.image_size=16"],
         "takes uint8 images [N, 28, 28, 1]"),
    ],
    ids=["no-features", "bad-spec", "not-a-judge", "eval-steps", "too-few-real", "wrong-shape"],
)
def test_a_plan_that_cannot_work_is_one_line_before_step_1(judge, tmp_path, capsys, extra, message):
    """Exit 2, one line, and no run directory left behind (the real data's features are computed before
    anything is written)."""
    other = tmp_path / "other"
    assert _train(other, "train.steps=1") == 0
    capsys.readouterr()
    run = tmp_path / "new"
    assert _train(run, *(e.format(judge=judge, run=other) for e in extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddpmlab: error: ") and message in err[0], err
    assert not run.exists()


def test_dry_runs_show_and_check_the_plan(judge, capsys):
    dry = ["train", "--dry-run", "--config", "configs/mnist5k.yaml", *_evaluation(judge, every=100)]
    assert main(dry) == 0
    assert (f"# evaluation: every 100 steps and at the end: 32 EMA samples (dpm++2m, 20 steps, seed 0) "
            f"against up to 400 real images in the features of judge:{judge}") in capsys.readouterr().out
    assert main(["train", "--dry-run", "--config", "configs/mog1d.yaml", *_evaluation(judge)]) == 2
    assert "train.eval_every measures image runs; mog1d is toy data" in capsys.readouterr().err
    assert main(["train-classifier", "--dry-run", "--config", "configs/mnist5k_classifier.yaml",
                 *_evaluation(judge)]) == 2
    assert "it applies to train" in capsys.readouterr().err
