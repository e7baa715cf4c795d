"""What the one-line errors of ``tests/test_bad_inputs.py`` cannot show in a table: ``--help`` still
works, read-only destinations (as any user, and simulated where the tests run as root), writes that
fail after the checks, devices this machine lacks, and warnings of a failed command."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from bad_inputs import TOY, UNET
from ddpmlab import cli
from ddpmlab.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    assert main(["train", "--config", str(CONFIGS / "mog1d.yaml"), "--run", str(root / "toy"), *TOY]) == 0
    assert main(["train", "--config", str(CONFIGS / "mnist5k_uncond.yaml"), "--run", str(root / "img"),
                 "data.image_size=16", *UNET]) == 0
    return root


def _one_line(capsys, *parts: str) -> str:
    """The one error line (a progress bar that ran before it is erased by its carriage returns)."""
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert len(err.splitlines()) == 1 and err.startswith("ddpmlab: error: "), err
    for part in parts:
        assert part in err, err
    return err


@pytest.mark.parametrize("argv", [["--help"], ["sample", "--help"], ["export", "-h"]])
def test_help_still_works(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ddpmlab")


def test_argparse_errors_are_one_line_not_the_usage_block(capsys):
    assert main(["export", "--run", "r", "--zip", "x.zip", "--format", "gif"]) == 2
    err = _one_line(capsys, "export: argument --format: invalid choice: 'gif'", "see ddpmlab export --help")
    assert "usage" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folders_are_refused_before_sampling(runs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["sample", "--run", str(runs / "toy"), "--out", str(locked / "s.npz")]) == 2
        _one_line(capsys, "is read-only")
        assert main(["export", "--run", str(runs / "img"), "--zip", str(locked / "x.zip")]) == 2
        _one_line(capsys, "is read-only")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["sample", "export"])
def test_read_only_destinations_simulated(command, runs, tmp_path, capsys, monkeypatch):
    """As root, chmod does not stop writes: os.access is made to say what it says to other users."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode & os.W_OK else real(path, mode))
    out = ["--out", str(tmp_path / "s.npz")] if command == "sample" else ["--zip", str(tmp_path / "x.zip")]
    run = runs / ("toy" if command == "sample" else "img")
    assert main([command, "--run", str(run), *out]) == 2
    _one_line(capsys, f"{tmp_path} is read-only")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sample", "export", "train"])
def test_a_write_that_fails_after_the_checks_is_one_line(command, runs, tmp_path, capsys, monkeypatch):
    """A read-only file system or a race the checks cannot see: the OSError is one line, no traceback."""
    import ddpmlab.export

    monkeypatch.setattr(ddpmlab.export, "check_destination", lambda path, *args, **kwargs: Path(path))
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    argv = {
        "sample": ["sample", "--run", str(runs / "toy"), "--out", str(blocker / "s.npz")],
        "export": ["export", "--run", str(runs / "img"), "--zip", str(blocker / "x.zip")],
        "train": ["train", "--config", str(CONFIGS / "mog1d.yaml"), "--run", str(blocker / "run"), *TOY],
    }[command]
    assert main(argv) == 2
    _one_line(capsys, str(blocker))
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.parametrize(
    "device, cuda, message",
    [
        ("cuda", False, "--device cuda: no CUDA GPU is available here"),
        ("cuda:3", True, "--device cuda:3: this machine has 1 CUDA GPU(s)"),
        ("mps", False, "--device mps: no Apple GPU (MPS) is available here"),
        ("meta", False, "--device meta: ddpmlab runs on cpu, cuda or mps"),
        ("gpu", False, "unknown device 'gpu'"),
    ],
)
def test_devices_this_machine_lacks(device, cuda, message, runs, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = str(tmp_path / "s.npz")
    assert main(["sample", "--run", str(runs / "toy"), "--device", device, "--out", out]) == 2
    _one_line(capsys, message)


def test_warnings_of_a_failed_command_are_dropped_and_of_a_good_one_shown(capsys, monkeypatch):
    def failing(args):
        warnings.warn("something odd", UserWarning, stacklevel=1)
        raise cli.UsageError("the real problem")

    def working(args):
        warnings.warn("something odd", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "schedules", failing)
    assert main(["schedules"]) == 2
    _one_line(capsys, "the real problem")
    monkeypatch.setitem(cli.COMMANDS, "schedules", working)
    with pytest.warns(UserWarning, match="something odd"):
        assert main(["schedules"]) == 0
