"""The captcha reader: greedy CTC decoding, the CTC loss wiring, a tiny CRNN that learns a few renders,
``train-reader`` with its held-out renders, ``reader:RUN`` as evaluate's feature network, and the
evaluation of a tiny text-conditional run by reading its samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.cli import main
from ddpmlab.data.base import to_uint8
from ddpmlab.data.captcha import CaptchaDataset
from ddpmlab.metrics import FeatureNetwork, edit_distance, extract_features, reading_accuracy
from ddpmlab.models.reader import CaptchaReader, best_path, encode_texts, paths_to_texts
from ddpmlab.training.reader_objective import ReaderObjective, augment_renders

SMALL_TEXT = ["data.charset=abcdefgh", "data.length=3", "data.height=16", "data.width=32"]
TINY_READER = [
    *SMALL_TEXT, "data.num_items=48", "model.width_channels=4", "model.hidden=16", "model.rnn_hidden=8",
    "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=3",
]
TINY_TEXT_RUN = [
    *SMALL_TEXT, "data.num_items=16", "model.base_channels=8", "model.channel_mults=[1,2]",
    "model.attention_levels=[1]", "model.num_groups=4", "model.num_heads=2", "model.text_token_dim=8",
    "model.patch_size=1", "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.sample_every=null", "train.minutes=null",
    "train.checkpoint_every=2", "diffusion.timesteps=50", "sample.steps=2", "sample.batch_size=16",
]
TINY_JUDGE = [
    "model.width=4", "model.feature_dim=8", "train.steps=1", "train.batch_size=8", "train.warmup_steps=1",
    "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=1",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def _one_hot(classes: list[list[int]], k: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(classes), k).float() * 10.0  # [B, T, K] logits


# --------------------------------------------------------------------------------------------------
# Decoding, the loss, the model.
# --------------------------------------------------------------------------------------------------


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    # charset "abc": blank 0, a 1, b 2, c 3
    logits = _one_hot(
        [
            [1, 1, 0, 1, 2, 2, 0, 0, 3],  # a a - a b b - - c -> "aabc" (a blank separates the two a's)
            [0, 0, 0, 0, 0, 0, 0, 0, 0],  # only blanks -> ""
            [2, 0, 2, 2, 2, 0, 0, 0, 0],  # b - b b b -> "bb"
            [3, 2, 1, 3, 2, 1, 3, 2, 1],  # no repeats, no blanks -> all nine
        ],
        4,
    )
    classes, lengths = best_path(logits)
    assert lengths.tolist() == [4, 0, 2, 9]
    assert classes[0].tolist() == [1, 1, 2, 3, -1, -1, -1, -1, -1]
    assert paths_to_texts(classes, lengths, "abc") == ["aabc", "", "bb", "cbacbacba"]
    assert paths_to_texts(*best_path(logits.log_softmax(-1)), "abc")[0] == "aabc"  # scores of any kind


def test_encoding_targets_and_refusing_characters_outside_the_charset():
    targets, lengths = encode_texts(["ba", "c"], "abc", 4)
    assert targets.tolist() == [[2, 1, -1, -1], [3, -1, -1, -1]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="outside the charset"):
        encode_texts(["az"], "abc", 4)
    with pytest.raises(ValueError, match="1 to 4 characters"):
        encode_texts(["abcab"], "abc", 4)


class _FixedLogits(nn.Module):
    """A stand-in model: the same logits whatever the images, and the charset the objective reads."""

    def __init__(self, logits: torch.Tensor, charset: str) -> None:
        super().__init__()
        self.logits, self.charset = logits, charset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_ctc_loss_is_torch_ctc_on_log_softmax_with_blank_zero():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 4, requires_grad=True)  # B 3 != T 7: a missing transpose would fail
    texts = ["ab", "c", "cca"]
    loss, metrics = ReaderObjective()(_FixedLogits(logits, "abc"), torch.zeros(3, 1, 8, 28), texts, None)
    flat = torch.tensor([1, 2, 3, 3, 3, 1])  # the three strings' classes, concatenated
    expected = F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), flat, torch.tensor([7, 7, 7]), torch.tensor([2, 1, 3]),
        blank=0, reduction="mean",
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and float(metrics["accuracy"]) == 0.0  # random logits read nothing
    # Logits whose best path spells each string read exactly, with a small loss.
    spelled = _one_hot([[1, 0, 2, 0, 0, 0, 0], [0, 3, 3, 0, 0, 0, 0], [3, 0, 3, 1, 0, 0, 0]], 4)
    loss, metrics = ReaderObjective()(_FixedLogits(spelled, "abc"), torch.zeros(3, 1, 8, 28), texts, None)
    assert float(metrics["accuracy"]) == 1.0 and float(loss) < 0.01
    wrong = ["ba", "c", "ca"]  # the paths read "ab" and "cca": only "c" is read exactly
    _, metrics = ReaderObjective()(_FixedLogits(spelled, "abc"), torch.zeros(3, 1, 8, 28), wrong, None)
    assert float(metrics["accuracy"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs the text of every image"):
        classes = torch.tensor([0, 1, 2])
        ReaderObjective()(_FixedLogits(spelled, "abc"), torch.zeros(3, 1, 8, 28), classes, None)


def test_augmentation_moves_and_noises_within_range_fixed_by_the_generator():
    data = CaptchaDataset(num_items=4, charset="abcdefgh", length=3, height=16, width=32, seed=2)
    x = torch.stack([data[i][0] for i in range(4)])
    a = augment_renders(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment_renders(x, torch.Generator().manual_seed(1))) and a.shape == x.shape
    assert a.min() >= -1.0 and a.max() <= 1.0 and not torch.equal(a, x)
    assert (a - x).abs().mean() < 0.3  # a small change: the text stays where it was, roughly


def test_reader_shapes_and_refusals():
    reader = CaptchaReader("abc", 3, in_channels=1, height=16, width=32, width_channels=4, rnn_hidden=5)
    x = torch.rand(2, 1, 16, 32) * 2 - 1
    assert reader(x).shape == (2, 8, 4) and reader.features(x).shape == (2, 10)
    assert len(reader.read(x)) == 2
    with pytest.raises(ValueError, match="at least 8 pixels high and 28 wide"):
        CaptchaReader("abc", 3, height=16, width=24)  # 6 columns cannot hold "aaa" (a-a-a)
    with pytest.raises(ValueError, match="distinct characters"):
        CaptchaReader("abca", 3)


def test_a_tiny_reader_learns_a_few_renders_exactly():
    data = CaptchaDataset(num_items=6, charset="abcdefgh", length=3, height=16, width=32, seed=5)
    x = torch.stack([data[i][0] for i in range(len(data))])
    texts = list(data.texts)
    torch.manual_seed(0)
    reader = CaptchaReader("abcdefgh", 3, height=16, width=32, width_channels=8, hidden=32, rnn_hidden=16)
    objective, optimizer = ReaderObjective(augment=False), torch.optim.Adam(reader.parameters(), lr=1e-2)
    for _ in range(300):
        loss, metrics = objective(reader, x, texts, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reader.eval()
    assert reader.read(x) == texts, (reader.read(x), texts, float(loss))


def test_reading_accuracy_counts_edits_per_character():
    assert edit_distance("fngff", "fngff") == 0 and edit_distance("fngf", "fngff") == 1
    assert edit_distance("bcdea", "abcde") == 2  # a shift costs two edits, not five substitutions
    scores = reading_accuracy(["abcde", "abxde", "abde"], ["abcde", "abcde", "abcde"])
    assert scores["exact"] == pytest.approx(1 / 3) and scores["chars"] == pytest.approx(13 / 15)
    assert reading_accuracy(["", "zzzzzzzzzz"], ["ab", "ab"])["chars"] == 0.0  # never below 0
    with pytest.raises(ValueError, match="2 readings for 1 target"):
        reading_accuracy(["a", "b"], ["a"])


# --------------------------------------------------------------------------------------------------
# Runs: train-reader, reader:RUN, evaluate on a text run.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    import os

    import ddpmlab.runs.reader_network as reader_module

    root = tmp_path_factory.mktemp("reader")
    cwd = os.getcwd()
    os.chdir(request.config.rootpath)
    saved = reader_module.HELDOUT_NUM
    reader_module.HELDOUT_NUM = 12
    try:
        assert main(["train-reader", "--config", "configs/captcha_reader.yaml", "--run", str(root / "reader"),
                     *TINY_READER]) == 0
        assert main(["train", "--config", "configs/captcha.yaml", "--run", str(root / "text"),
                     *TINY_TEXT_RUN]) == 0
        assert main(["train", "--config", "configs/captcha.yaml", "--run", str(root / "wide"),
                     *TINY_TEXT_RUN, "data.width=48"]) == 0
        assert main(["train-judge", "--config", "configs/mnist5k_judge.yaml", "--run", str(root / "judge"),
                     *TINY_JUDGE]) == 0
    finally:
        reader_module.HELDOUT_NUM = saved
        os.chdir(cwd)
    return root


def test_train_reader_records_its_options_and_heldout_accuracy(runs):
    from ddpmlab.config import load_config
    from ddpmlab.runs.reader import HELDOUT_SEED, heldout_renders, read_heldout

    config = load_config(runs / "reader" / "config.yaml")
    assert config.model.options["charset"] == "abcdefgh" and config.model.options["max_length"] == 3
    assert (config.model.options["height"], config.model.options["width"]) == (16, 32)
    records = [json.loads(line) for line in (runs / "reader" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "accuracy"} <= set(records[-1])
    heldout = read_heldout(runs / "reader")
    assert heldout["n"] == 12 and heldout["seed"] == HELDOUT_SEED and 0 <= heldout["chars"] <= 1
    images, texts = heldout_renders(config, 12)
    training = set(CaptchaDataset(num_items=48, charset="abcdefgh", length=3, seed=1, cache=False).texts)
    assert images.shape == (12, 16, 32, 1) and not set(texts) & training  # unseen strings only


def test_train_reader_refuses_other_models_data_and_the_heldout_seed(capsys):
    assert main(["train-reader", "--config", "configs/mnist5k_judge.yaml", "--dry-run"]) == 2
    assert "train-reader trains model.type reader" in capsys.readouterr().err
    assert main(["train-reader", "--config", "configs/captcha_reader.yaml", "--dry-run",
                 "data.conditional=false"]) == 2
    assert "a reader trains on renders of the captcha source" in capsys.readouterr().err
    assert main(["train-reader", "--config", "configs/captcha_reader.yaml", "--dry-run",
                 "data.seed=1000003"]) == 2
    assert "held-out renders" in capsys.readouterr().err
    assert main(["train-reader", "--config", "configs/captcha_reader.yaml", "--dry-run"]) == 0
    assert "CaptchaReader with" in capsys.readouterr().out


def test_reader_spec_opens_a_feature_network_that_reads(runs):
    from ddpmlab.runs.evaluate import load_feature_network

    reader = load_feature_network(f"reader:{runs / 'reader'}", "cpu")
    assert isinstance(reader, FeatureNetwork) and reader.name == f"reader:{runs / 'reader'}"
    assert reader.fd_label == "FD_reader" and reader.kid_label == "KID_reader"
    data = CaptchaDataset(num_items=5, charset="abcdefgh", length=3, height=16, width=32, seed=9)
    images = to_uint8(torch.stack([data[i][0] for i in range(5)]))
    assert extract_features(images, reader).shape == (5, 16)
    readings = reader.read(images)
    assert len(readings) == 5 and all(set(text) <= set("abcdefgh") for text in readings)
    with pytest.raises(ValueError, match=r"takes uint8 images \[N, 16, 32, 1\]"):
        reader.read(images.float())


@pytest.mark.parametrize(
    "spec, message",
    [
        ("reader:{root}/missing", "{root}/missing is not a trained reader run"),
        ("reader:{root}/judge", "{root}/judge is not a reader run (its model.type is judge)"),
        ("judge:{root}/reader", "{root}/reader is not a judge run (its model.type is reader)"),
        ("reader:", "--features must be judge:RUN or inception[:WEIGHTS] (or reader:RUN)"),
    ],
)
def test_bad_reader_specs_are_one_line_errors(runs, capsys, spec, message):
    spec, message = spec.format(root=runs), message.format(root=runs)
    assert main(["evaluate", "--run", str(runs / "text"), "--features", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ddpmlab: error: ") and message in err, err


def test_a_reader_refuses_runs_it_cannot_read_and_is_not_a_denoiser(runs, capsys):
    command = ["evaluate", "--run", str(runs / "wide"), "--features", f"reader:{runs / 'reader'}"]
    assert main(command) == 2
    assert f"reads 1x16x32 text images; {runs / 'wide'} has 1x16x48 image data" in capsys.readouterr().err
    assert main(["sample", "--run", str(runs / "reader"), "--out", "x.npz"]) == 2
    assert "is a captcha reader, not a denoiser" in capsys.readouterr().err


def test_evaluate_reads_samples_of_unseen_strings_of_a_text_run(runs, tmp_path, capsys):
    out = tmp_path / "e.json"
    code = main(["evaluate", "--run", str(runs / "text"), "--features", f"reader:{runs / 'reader'}",
                 "--num", "10", "--real-num", "40", "--guidance", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "FD_reader" in printed and "KID_reader" in printed and "read exactly" in printed
    result = json.loads(out.read_text())
    assert result["fd_label"] == "FD_reader" and result["n"] == 10 and result["read_floor_n"] == 10
    assert result["guidance"] == 2.0 and "classifier" not in result  # the w the samples used, recorded
    for key in ("read_exact", "read_chars", "read_exact_floor", "read_chars_floor", "fd", "kid"):
        assert 0 <= result[key] < float("inf"), key
    assert result["reader_heldout"]["n"] == 12
    training = set(CaptchaDataset(num_items=16, charset="abcdefgh", length=3, seed=0, cache=False).texts)
    asked = [pair[0] for pair in result["misread"]]
    assert asked and not set(asked) & training  # strings the model did not train on


def test_evaluate_reads_stored_text_samples_and_real_renders_read_like_the_floor(runs, tmp_path, capsys):
    samples = tmp_path / "s.npz"
    assert main(["sample", "--run", str(runs / "text"), "--text", "abc,hgf", "--num", "6", "--out",
                 str(samples)]) == 0
    out = tmp_path / "e.json"
    assert main(["evaluate", "--run", str(runs / "text"), "--samples", str(samples), "--features",
                 f"reader:{runs / 'reader'}", "--real-num", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 6 and "read_exact" in result
    assert "guidance" not in result  # stored samples: what steered them is not known here
    assert {pair[0] for pair in result["misread"]} <= {"abc", "hgf"}
    # The run's own real renders as samples: read exactly as well as the floor's first N of them.
    from ddpmlab.runs import open_run
    from ddpmlab.runs.evaluate import real_data

    real = real_data(open_run(runs / "text", "cpu"), limit=40)
    copies = tmp_path / "real.npz"
    np.savez(copies, images=real.images[:8].numpy(), labels=np.asarray(real.labels[:8]))
    assert main(["evaluate", "--run", str(runs / "text"), "--samples", str(copies), "--features",
                 f"reader:{runs / 'reader'}", "--real-num", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["read_exact"] == result["read_exact_floor"]
    assert result["read_chars"] == result["read_chars_floor"]


def test_training_with_a_reader_logs_reading_accuracy_every_evaluation(runs, tmp_path):
    run = tmp_path / "evaluated"
    assert main(["train", "--config", "configs/captcha.yaml", "--run", str(run), *TINY_TEXT_RUN,
                 "train.eval_every=1", "train.eval_num=4", "train.eval_real_num=20",
                 f"train.eval_features=reader:{runs / 'reader'}"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval/read_exact" in r]
    assert [r["step"] for r in evaluations] == [1, 2]
    for record in evaluations:
        for key in ("read_exact", "read_chars", "read_exact_floor", "read_chars_floor"):
            assert 0 <= record[f"eval/{key}"] <= 1, key
        assert "eval/class_accuracy" not in record  # a reader predicts no classes


def test_compare_reads_text_entries_back_on_the_same_unseen_strings(runs, tmp_path, capsys):
    """Text runs in `ddpmlab compare` ask what `ddpmlab evaluate` asks (random strings the run did not
    train on, the same for every entry) and get the reader's numbers, equal to evaluate's."""
    out, single = tmp_path / "report", tmp_path / "e.json"
    code = main(["compare", str(runs / "text"), f"{runs / 'text'},guidance=3", "--features",
                 f"reader:{runs / 'reader'}", "--num", "10", "--real-num", "40", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    found = json.loads((out / "report.json").read_text())
    first, guided = found["entries"]
    assert "read exact" in printed and f"{guided['result']['read_exact']:.3f}" in printed
    stored = [np.load(out / entry["samples"])["labels"].tolist() for entry in found["entries"]]
    training = set(CaptchaDataset(num_items=16, charset="abcdefgh", length=3, seed=0, cache=False).texts)
    assert stored[0] == stored[1] and len(stored[0]) == 10 and not set(stored[0]) & training
    assert first["labels"] == "random strings the run did not train on"
    assert "read exactly" in (out / "report.md").read_text()
    # the guided entry's numbers are those of `ddpmlab evaluate` with the same seed, strings and w
    assert main(["evaluate", "--run", str(runs / "text"), "--features", f"reader:{runs / 'reader'}", "--num",
                 "10", "--real-num", "40", "--guidance", "3", "--out", str(single)]) == 0
    expected = json.loads(single.read_text())
    for key in ("read_exact", "read_chars", "read_exact_floor", "read_chars_floor", "fd", "fd_floor"):
        assert guided["result"][key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_compare_refuses_a_reader_that_cannot_read_an_entry_before_sampling(
    runs, tmp_path, capsys, monkeypatch
):
    import ddpmlab.runs.compare as compare_module

    monkeypatch.setattr(compare_module, "sample_run", lambda *a, **k: pytest.fail("sampling started"))
    out = tmp_path / "report"
    code = main(["compare", str(runs / "text"), str(runs / "wide"), "--features", f"reader:{runs / 'reader'}",
                 "--num", "4", "--real-num", "40", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ddpmlab: error:") and "16x48" in err and len(err.splitlines()) == 1
    assert not out.exists()
