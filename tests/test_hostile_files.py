"""Hostile files never run code: planted payloads in checkpoints (at every command that loads one), in
CIFAR-10's pickled batches (also inside a run folder), in torchvision's legacy MNIST files and in YAML;
schedules given as ``module:function`` are stored as numbers, so opening a run imports nothing.

Each payload writes a marker file when it runs; every test first shows that the planted file *would*
run it if loaded unsafely (a negative control), then that ddpmlab refuses it in one line and the
marker never appears."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bad_inputs import MARKER, TOY, UNET, Payload, write_cifar_payload
from ddpmlab.cli import main
from ddpmlab.config import ConfigError, load_config
from ddpmlab.data.base import DataError
from ddpmlab.data.sources import build_image_dataset
from ddpmlab.plain import PlainDataError, load_plain_pickle, one_line, read_plain_yaml
from ddpmlab.training.checkpoint import DIGEST_KEY, CheckpointError, content_digest, load_checkpoint

CLASSIFIER = [o for o in UNET if not o.startswith("sample.")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny runs to plant payloads in: toy, image (unconditional) and a classifier with its diffusion."""
    root = tmp_path_factory.mktemp("hostile")
    configs = Path(__file__).resolve().parent.parent / "configs"
    assert main(["train", "--config", str(configs / "mog1d.yaml"), "--run", str(root / "toy"), *TOY]) == 0
    assert main(["train", "--config", str(configs / "mnist5k_uncond.yaml"), "--run", str(root / "img"),
                 "data.image_size=16", *UNET]) == 0
    assert main(["train-classifier", "--config", str(configs / "mnist5k_classifier.yaml"), "--run",
                 str(root / "clf"), "data.image_size=16", *CLASSIFIER]) == 0
    return root


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in an empty folder: a payload that ran would write MARKER here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _resave(state: dict, path: Path) -> None:
    """Write an edited checkpoint state with a matching sha256 (the edit, not damage, is under test)."""
    state.pop(DIGEST_KEY, None)
    state[DIGEST_KEY] = content_digest(state)
    torch.save(state, path)


def _copy(trained: Path, name: str, here: Path) -> Path:
    return Path(shutil.copytree(trained / name, here / name))


def _refused(argv: list[str], capsys, *parts: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ddpmlab: error: "), err
    for part in parts:
        assert part in err, err
    assert not Path(MARKER).exists()
    return err


def _plant_checkpoint(path: Path, as_zip: bool) -> None:
    """A checkpoint whose unpickling would call exec (torch's zip format, or a bare pickle)."""
    state = {"kind": "ddpmlab-checkpoint", "format_version": 1, "step": 1, "config": Payload()}
    if as_zip:
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))


def test_the_planted_payloads_are_live(here):
    """Negative control: loaded unsafely, each planted file runs its code."""
    for as_zip in (True, False):
        _plant_checkpoint(here / "c.pt", as_zip)
        with contextlib.suppress(RuntimeError):  # a bare pickle runs, then fails torch's magic-number check
            torch.load(here / "c.pt", weights_only=False)
        assert Path(MARKER).exists()
        Path(MARKER).unlink()
    write_cifar_payload(here / "cifar")
    with open(here / "cifar" / "cifar-10-batches-py" / "data_batch_1", "rb") as file:
        pickle.load(file)
    assert Path(MARKER).exists()


@pytest.mark.parametrize("as_zip", [True, False], ids=["torch-zip", "bare-pickle"])
@pytest.mark.parametrize("command", ["sample", "export", "train --resume", "sample --classifier"])
def test_a_checkpoint_payload_never_runs(command, as_zip, trained, here, capsys):
    img, clf = _copy(trained, "img", here), _copy(trained, "clf", here)
    victim = clf if command == "sample --classifier" else img
    _plant_checkpoint(victim / "checkpoints" / "last.pt", as_zip)
    argv = {
        "sample": ["sample", "--run", "img", "--out", "g.png"],
        "export": ["export", "--run", "img", "--zip", "x.zip"],
        "train --resume": ["train", "--run", "img", "--resume", "train.steps=4"],
        "sample --classifier": ["sample", "--run", "img", "--classifier", "clf", "--labels", "1",
                                "--out", "g.png"],
    }[command]
    _refused(argv, capsys, "cannot read checkpoint", str(Path(victim.name) / "checkpoints" / "last.pt"))
    with pytest.raises(CheckpointError):
        load_checkpoint(victim / "checkpoints" / "last.pt")
    assert not Path(MARKER).exists()


JUDGE = ["model.width=8", "model.feature_dim=8", "train.steps=2", "train.batch_size=8",
         "train.warmup_steps=1", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
         "train.checkpoint_every=2"]


@pytest.mark.parametrize("command", ["evaluate --features judge:RUN", "train-judge --resume"])
def test_a_judge_checkpoint_payload_never_runs(command, trained, here, capsys):
    config = str(Path(__file__).resolve().parent.parent / "configs" / "mnist5k_judge.yaml")
    assert main(["train-judge", "--config", config, "--run", "judge", "data.image_size=16", *JUDGE]) == 0
    _plant_checkpoint(here / "judge" / "checkpoints" / "last.pt", as_zip=True)
    _copy(trained, "img", here)
    argv = {
        "evaluate --features judge:RUN": ["evaluate", "--run", "img", "--features", "judge:judge"],
        "train-judge --resume": ["train-judge", "--config", config, "--run", "judge", "--resume"],
    }[command]
    _refused(argv, capsys, "cannot read checkpoint", str(Path("judge") / "checkpoints" / "last.pt"))


def test_an_imported_diffusers_folder_with_a_pickled_payload_never_runs(trained, here, capsys):
    """diffusers' legacy unet/diffusion_pytorch_model.bin is a pickle: read with weights_only."""
    assert main(["export", "--run", str(trained / "img"), "--diffusers", "pipe"]) == 0
    (here / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"conv_in.weight": Payload()}, here / "pipe" / "unet" / "diffusion_pytorch_model.bin")
    _refused(["import-diffusers", "pipe", "--run", "imported"], capsys, "refused a file that holds pickled")
    assert not (here / "imported").exists()


def test_the_mnist_judge_refuses_a_payload(here):
    from benchmarks.mnist_judge import load_judge

    _plant_checkpoint(here / "judge.pt", as_zip=True)
    with pytest.raises(pickle.UnpicklingError):
        load_judge(here / "judge.pt")
    assert not Path(MARKER).exists()


# --------------------------------------------------------------------------------------------------
# Dataset files.
# --------------------------------------------------------------------------------------------------


CIFAR_COMMANDS = {
    "forward": ["forward", "--data", "cifar10", "--root", "cifar", "--out", "f.png"],
    "train": ["train", "--config", "CONFIG", "--run", "r", "data.root=cifar", *UNET],
    "train --dry-run": ["train", "--config", "CONFIG", "--dry-run", "data.root=cifar"],
}


@pytest.mark.parametrize("command", list(CIFAR_COMMANDS))
def test_a_cifar10_payload_never_runs(command, here, capsys):
    write_cifar_payload(here / "cifar")
    config = str(Path(__file__).resolve().parent.parent / "configs" / "cifar10.yaml")
    argv = [config if token == "CONFIG" else token for token in CIFAR_COMMANDS[command]]
    if command == "train --dry-run":  # CIFAR-10's shape and classes come from the config: no file is read
        assert main(argv) == 0 and not Path(MARKER).exists()
        return
    _refused(argv, capsys, "it holds a pickled builtins.exec, which could run code")


@pytest.mark.parametrize("command", ["sample", "export"])
def test_a_run_folder_with_cifar10_payload_files_never_runs_them(command, trained, here, capsys):
    """A run directory alone: a config naming cifar10 (no data.info, so its data must be rebuilt) with
    the payload files inside the run folder."""
    run = _copy(trained, "img", here)
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["data"].update(name="cifar10", root=str(run / "data"), info=None)
    _resave(state, path)
    write_cifar_payload(run / "data")
    out = ["--out", "g.png"] if command == "sample" else ["--zip", "x.zip"]
    _refused([command, "--run", "img", *out], capsys, "it holds a pickled builtins.exec")


def test_legacy_mnist_files_are_loaded_without_code(here):
    """torchvision's MNIST reads processed/training.pt when present (weights_only=True)."""
    processed = here / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        torch.save({"x": Payload()}, processed / name)
    with pytest.raises(DataError, match="could not read MNIST"):
        build_image_dataset("mnist", root=here)
    assert not Path(MARKER).exists()


def test_the_plain_unpickler_reads_cifar_batches_and_refuses_the_rest():
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    batch = {"data": data, "labels": [1, 2], "name": b"x", "n": np.int64(3)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        content = load_plain_pickle(io.BytesIO(pickle.dumps(batch, protocol=protocol)))
        assert np.array_equal(content["data"], batch["data"]) and content["labels"] == [1, 2]
        assert content["n"] == 3 and content["name"] == b"x"
        with pytest.raises(PlainDataError, match=r"pickled (__builtin__|builtins)\.exec"):
            load_plain_pickle(io.BytesIO(pickle.dumps([Payload()], protocol=protocol)))
    with pytest.raises(PlainDataError, match="array of Python objects"):
        load_plain_pickle(io.BytesIO(pickle.dumps(np.array([1, "a"], dtype=object))))
    with pytest.raises(PlainDataError, match="pickled collections.OrderedDict"):
        load_plain_pickle(io.BytesIO(pickle.dumps(__import__("collections").OrderedDict(a=1))))


# --------------------------------------------------------------------------------------------------
# YAML.
# --------------------------------------------------------------------------------------------------


def test_yaml_with_a_python_tag_is_an_error_in_files_and_overrides(here):
    evil = f"!!python/object/apply:os.system ['touch {MARKER}']"
    with pytest.raises(yaml.constructor.ConstructorError):  # control: PyYAML's unsafe loader would run it
        yaml.safe_load(f"name: {evil}")
    (here / "c.yaml").write_text(f"name: {evil}\n")
    with pytest.raises(ConfigError, match="the tag !!python/object/apply:os.system is not allowed"):
        load_config(here / "c.yaml")
    with pytest.raises(ConfigError, match="is not allowed"):
        load_config(None, [f"data.root={evil}"])
    for text in (f"a: {evil}", "a: !custom 1", "a: &x 1\nb: *x", "a: 1\na: 2"):
        with pytest.raises(PlainDataError) as error:
            read_plain_yaml(text)
        assert error.value.refused and "line" in str(error.value)
    assert not Path(MARKER).exists()


def test_a_billion_laughs_document_is_refused_before_it_expands():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    with pytest.raises(PlainDataError, match="aliases"):
        read_plain_yaml("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# Schedules given as code.
# --------------------------------------------------------------------------------------------------


SCHEDULE = "import math\n\ndef alpha_bar(tau):\n    return math.cos(tau * math.pi / 2) ** 2 + 1e-4\n"


def test_a_run_stores_its_module_schedule_as_numbers_and_opening_it_imports_nothing(here, monkeypatch):
    from ddpmlab.runs import open_run

    (here / "my_schedule.py").write_text(SCHEDULE)
    monkeypatch.syspath_prepend(str(here))
    assert main(["train", "--config", str(Path(__file__).resolve().parent.parent / "configs" / "mog1d.yaml"),
                 "--run", "run", *TOY, "diffusion.schedule=my_schedule:alpha_bar"]) == 0
    recorded = yaml.safe_load((here / "run" / "config.yaml").read_text())["diffusion"]
    assert isinstance(recorded["schedule"], list) and len(recorded["schedule"]) == 100  # the betas
    expected = open_run("run").diffusion.schedule.betas
    # the module is now a payload, and not cached: importing it again would run it
    (here / "my_schedule.py").write_text(f"open({MARKER!r}, 'w').write('imported')\n" + SCHEDULE)
    monkeypatch.delitem(sys.modules, "my_schedule")
    run = open_run("run")
    assert torch.equal(run.diffusion.schedule.betas, expected)
    assert run.diffusion.schedule.betas.tolist() == recorded["schedule"]
    assert main(["sample", "--run", "run", "--num", "8", "--out", "s.npz"]) == 0
    assert main(["train", "--run", "run", "--resume", "train.steps=6"]) == 0
    assert not Path(MARKER).exists() and "my_schedule" not in sys.modules


def test_an_old_run_naming_module_code_gets_one_line_and_no_import(trained, here, capsys, monkeypatch):
    run = _copy(trained, "toy", here)
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["diffusion"]["schedule"] = "planted:alpha_bar"
    _resave(state, path)
    (here / "planted.py").write_text(f"open({MARKER!r}, 'w').write('imported')\n" + SCHEDULE)
    monkeypatch.syspath_prepend(str(here))
    _refused(["sample", "--run", "toy", "--out", "s.npz"], capsys, "'planted:alpha_bar' names code")
    assert "planted" not in sys.modules


def test_runs_with_a_named_schedule_still_open(trained):
    from ddpmlab.runs import open_run

    state = torch.load(trained / "toy" / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["diffusion"]["schedule"] == "linear"  # rebuilt from its name
    assert open_run(trained / "toy").diffusion.schedule.name == "linear"


# --------------------------------------------------------------------------------------------------
# Messages.
# --------------------------------------------------------------------------------------------------


def test_messages_carry_no_terminal_escapes_or_control_characters(here, capsys):
    assert one_line(ValueError("\x1b[1mbold\x1b[0m and a\tbell\x07")) == "bold and a\\tbell\\x07"
    folder = here / "pics"
    folder.mkdir()
    (folder / "\x1b[2Jcleared.png").write_text("not a picture")
    err = _refused(["forward", "--data", "folder", "--root", "pics", "--out", "f.png"], capsys, "cleared.png")
    assert "\x1b" not in err
    if os.name == "posix":
        (folder / "\x1b[2Jcleared.png").unlink()
        (folder / "two\nlines.png").write_text("not a picture")
        forward = ["forward", "--data", "folder", "--root", "pics", "--out", "f.png"]
        _refused(forward, capsys, "two\\nlines.png")
