"""ddpmlab compare: entries (a run plus sampling settings) read and refused in one line; a report of tiny
runs side by side whose numbers are those of an independent evaluate_images call on the same samples,
whose pages show pictures that exist, and whose config table lists exactly the keys that differ."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.runs import RunError
from ddpmlab.runs.compare import EntrySpec, open_entries, parse_entry

TINY = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]", "model.num_groups=4",
    "model.num_heads=2", "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.minutes=null", "train.checkpoint_every=2",
    "train.sample_every=null", "diffusion.timesteps=50",
]
SAMPLE = ["sample.steps=3", "sample.batch_size=16"]
JUDGE = [
    "model.width=8", "model.feature_dim=16", "model.dropout=0.0", "train.steps=20", "train.batch_size=32",
    "train.warmup_steps=5", "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=20",
    "train.ema_decay=0.9",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """A class-conditional and an unconditional tiny mnist5k run (the second with another learning
    rate), a noise-aware classifier for the second, and a tiny judge."""
    import os

    root = tmp_path_factory.mktemp("compare")
    cwd = os.getcwd()
    os.chdir(request.config.rootpath)
    try:
        for argv in (
            ["train", "--config", "configs/mnist5k.yaml", "--run", str(root / "cond"), *TINY, *SAMPLE],
            ["train", "--config", "configs/mnist5k_uncond.yaml", "--run", str(root / "uncond"), *TINY,
             *SAMPLE, "train.lr=1.0e-3"],
            ["train-classifier", "--config", "configs/mnist5k_classifier.yaml", "--run", str(root / "clf"),
             *TINY],
            ["train-judge", "--config", "configs/mnist5k_judge.yaml", "--run", str(root / "judge"), *JUDGE],
        ):
            assert main(argv) == 0, argv
    finally:
        os.chdir(cwd)
    return root


# --------------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------------


def test_an_entry_is_a_run_then_settings():
    assert parse_entry("runs/mnist5k") == EntrySpec("runs/mnist5k", "runs/mnist5k")
    spec = parse_entry("runs/mnist5k, guidance=3,sampler=dpm++2m,steps=20,label=CFG w=3")
    assert (spec.run, spec.guidance, spec.sampler, spec.steps, spec.label) == (
        "runs/mnist5k", 3.0, "dpm++2m", 20, "CFG w=3"
    )
    assert spec.settings() == {"sampler": "dpm++2m", "steps": 20, "guidance": 3.0}
    spec = parse_entry("runs/u,classifier=runs/clf,classifier-scale=2.5,sampler=ddim,eta=0.5")
    assert (spec.classifier, spec.classifier_scale, spec.eta) == ("runs/clf", 2.5, 0.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("runs/a,guidanse=3", "unknown setting 'guidanse' (did you mean guidance?)"),
        ("runs/a,steps=2,steps=3", "steps is given twice"),
        ("runs/a,steps=", "steps has no value"),
        ("runs/a,ddim", "'ddim' is not key=value"),
        ("runs/a,steps=2.5", "steps must be an integer, got '2.5'"),
        ("runs/a,steps=0", "steps must be positive"),
        ("runs/a,guidance=nan", "guidance must be a finite number"),
        ("runs/a,guidance=high", "guidance must be a number"),
        ("runs/a,eta=-1", "eta must be >= 0"),
        ("runs/a,sampler=dpm2m", "unknown sampler 'dpm2m'"),
        ("runs/a,classifier_scale=3", "classifier_scale needs classifier=RUN"),
        (",guidance=3", "an entry starts with its run directory"),
        ("guidance=3,runs/a", "an entry starts with its run directory"),
    ],
)
def test_bad_entries_are_refused_in_one_line(text, message):
    with pytest.raises(RunError, match=re.escape(message)) as caught:
        parse_entry(text)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"compare: entry {text!r}")


def test_entries_are_checked_against_their_runs(runs):
    cond, uncond, clf = str(runs / "cond"), str(runs / "uncond"), str(runs / "clf")
    for text, message in (
        (f"{cond},classifier={clf}", "classifier= guides an unconditional run"),
        (f"{uncond},guidance=3", "guidance (classifier-free) needs a conditional run"),
        (f"{cond},sampler=ddpm,eta=0.5", "eta applies to the ddim sampler; this entry uses ddpm"),
        (f"{cond},steps=51", "steps must be at most the run's 50 timesteps"),
        (f"{uncond},classifier={cond}", "is not a classifier run"),
        (f"{runs / 'missing'}", "is not a trained run"),
    ):
        with pytest.raises(RunError, match=re.escape(message)):
            open_entries([parse_entry(text)], 10, "cpu")
    with pytest.raises(RunError, match="label=x names two entries"):
        open_entries([parse_entry(f"{cond},label=x"), parse_entry(f"{uncond},label=x")], 10, "cpu")
    specs = [parse_entry(cond), parse_entry(cond), parse_entry(f"{uncond},label=cond")]
    opened = open_entries(specs, 10, "cpu")
    assert [entry.label for entry in opened] == ["cond #2", "cond #3", "cond"]
    assert opened[0].labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and opened[2].labels is None


def test_class_coverage_counts_the_classes_seen():
    from ddpmlab.metrics import class_coverage

    even = class_coverage(torch.tensor([0, 1, 2, 3] * 5), 4)
    assert even["class_histogram"] == [5, 5, 5, 5] and even["classes_missing"] == 0
    assert even["effective_classes"] == pytest.approx(4.0)
    one = class_coverage(torch.zeros(7, dtype=torch.int64), 10)
    assert one["effective_classes"] == pytest.approx(1.0) and one["classes_missing"] == 9
    logits = torch.eye(3)[[0, 0, 1, 2]]  # logits [N, C]: their argmax
    assert class_coverage(logits, 3)["class_histogram"] == [2, 1, 1]
    with pytest.raises(ValueError, match="must lie in 0..2"):
        class_coverage(torch.tensor([3]), 3)


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    cond, uncond = str(runs / "cond"), str(runs / "uncond")
    argv = [
        "compare", cond, f"{cond},guidance=1,sampler=ddpm,steps=4",
        f"{uncond},classifier={runs / 'clf'},classifier_scale=2,label=classifier s=2", uncond,
        "--features", f"judge:{runs / 'judge'}", "--num", "20", "--real-num", "200", "--out", str(out),
        "--device", "cpu",
    ]
    assert main(argv) == 0
    return out, json.loads((out / "report.json").read_text())


def test_the_report_holds_every_file_and_entry(report):
    out, found = report
    for name in ("report.md", "index.html", "report.json", "training_curves.png"):
        assert (out / name).is_file(), name
    assert [entry["label"] for entry in found["entries"]] == [
        "cond", "cond guidance=1 sampler=ddpm steps=4", "classifier s=2", "uncond"
    ]
    assert found["command"].startswith("ddpmlab compare ") and "--num 20" in found["command"]
    assert "torch" in found["versions"] and found["context"]["fd_label"] == "FD_judge"
    assert len(found["context"]["real_sets"]) == 1  # one dataset: its real images are read once
    # the w each entry sampled with: the run's sample.guidance (3), as given (1), none when unconditional
    assert [e["sampling"].get("guidance") for e in found["entries"]] == [3.0, 1.0, None, None]
    nfe = [(e["nfe"], e["classifier_gradients"]) for e in found["entries"]]
    assert nfe == [(6, 0), (4, 0), (3, 3), (3, 0)]  # CFG w = 3 doubles; w = 1 does not
    for entry in found["entries"]:
        assert (out / entry["grid"]).is_file() and (out / entry["samples"]).is_file()
        assert entry["seconds_per_image"] > 0
        assert ("class_accuracy" in entry["result"]) == (entry["label"] != "uncond")
        assert sum(entry["result"]["class_coverage"]["class_histogram"]) == 20
    text = (out / "report.md").read_text()
    assert "FD_judge" in text and "class accuracy" in text and "classes covered" in text


def test_the_numbers_are_those_of_evaluate_images_on_the_same_samples(runs, report):
    """Each entry's samples are what sample_run draws with the seed and labels 0..9 in turn, and its
    numbers what an independent evaluate_images call gives on them."""
    from ddpmlab.metrics import class_coverage
    from ddpmlab.runs import make_run_sampler, open_classifier, open_run, sample_images
    from ddpmlab.runs.evaluate import evaluate_images, load_feature_network, real_data

    out, found = report
    judge = load_feature_network(f"judge:{runs / 'judge'}", "cpu")
    labels = torch.arange(20) % 10
    requests = [
        ("cond", {}, labels),
        ("cond", {"guidance": 1.0, "sampler": ("ddpm", 4)}, labels),
        ("uncond", {"classifier": open_classifier(runs / "clf", "cpu"), "classifier_scale": 2.0}, labels),
        ("uncond", {}, None),
    ]
    for entry, (name, options, asked) in zip(found["entries"], requests):
        run = open_run(runs / name, "cpu")
        sampler = make_run_sampler(run, *options.pop("sampler", (None, None)))
        images, used = sample_images(run, 20, sampler, labels=asked, seed=0, **options)
        with np.load(out / entry["samples"]) as stored:
            assert torch.equal(torch.from_numpy(stored["images"]), images)
            assert ("labels" in stored.files) == (asked is not None)
        expected = evaluate_images(images, used, real_data(run, 200, 0), judge, 0)
        result = entry["result"]
        for key in ("fd", "fd_floor", "kid", "kid_std", "kid_floor", "precision", "recall", "precision_floor",
                    "recall_floor", "class_accuracy", "class_accuracy_floor"):
            if expected.get(key) is None:  # class accuracy: not for unconditional samples
                assert key not in result and asked is None, (name, key)
            else:
                assert result[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (name, key)
        for space in ("features", "pixels"):
            assert result["memorisation"][space] == pytest.approx(expected["memorisation"][space]), name
        assert result["class_coverage"] == class_coverage(judge.predict(images), 10)


def test_the_pages_show_pictures_that_exist_and_no_script(report):
    out, _ = report
    page = (out / "index.html").read_text()
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert len(pictures) == 5 and "<script" not in page  # four grids and the training curves
    markdown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert sorted(markdown) == sorted(pictures)
    for name in pictures:
        assert "/" not in name and (out / name).is_file(), name


def test_the_config_table_lists_the_keys_that_differ(runs, report):
    _, found = report
    differences = {row["key"]: row["values"] for row in found["config_differences"]}
    # the shipped pair differ in the condition, the sampler (the demo's DPM-Solver++, DDIM), the sampling
    # guidance and the grids' cadence (here both null); the tiny unconditional run was also given another
    # learning rate
    assert differences == {
        "data.conditional": [True, False], "sample.guidance": [3.0, 1.0], "train.lr": [0.002, 0.001],
        "sample.sampler": ["dpm++2m", "ddim"],
    }
    from ddpmlab.runs import open_run

    assert [run["run"] for run in found["runs"]] == [str(runs / "cond"), str(runs / "uncond")]
    for summary in found["runs"]:
        model = open_run(summary["run"], "cpu").model
        assert summary["parameters"] == sum(p.numel() for p in model.parameters())
        assert (summary["steps"], summary["batch_size"], summary["images_seen"]) == (2, 8, 16)
    assert found["runs"][0]["parameters"] > found["runs"][1]["parameters"]  # the class embedding


def test_a_bad_entry_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["compare", str(runs / "cond"), f"{runs / 'cond'},classifier={runs / 'clf'}", "--features",
                 f"judge:{runs / 'judge'}", "--num", "10", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "classifier= guides an unconditional run" in err
    assert not out.exists()
    assert main(["compare", str(runs / "cond"), "--features", f"judge:{runs / 'judge'}", "--num", "4000",
                 "--real-num", "200", "--out", str(out)]) == 2
    assert "--num 4000 needs at least 4004 real images" in capsys.readouterr().err and not out.exists()
