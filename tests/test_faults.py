"""Training faults (issue 18): kills at any moment, non-finite losses, a full disk, two trainers in one
run directory, a resume that re-plans the run or takes overrides, checks that wait until after
training, and damaged or foreign checkpoints. Each fault ends in one line ``ddpmlab: error: ...``
(exit 2) or in a run that continues exactly, and never in a damaged run directory."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from benchmarks.kill_resume import kill_and_resume
from ddpmlab.cli import main
from ddpmlab.config import Config, TrainConfig, load_config
from ddpmlab.runs import train_run
from ddpmlab.runs.lock import RunLock
from ddpmlab.runs.rundir import truncate_metrics
from ddpmlab.training import checkpoint as checkpoint_module
from ddpmlab.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpmlab.training.guard import NonFiniteError, NonFiniteGuard

ROOT = Path(__file__).resolve().parents[1]
MOG1D = str(ROOT / "configs" / "mog1d.yaml")
TINY = [
    "model.hidden=16", "model.num_blocks=1", "model.time_dim=16", "train.steps=20", "train.batch_size=64",
    "train.log_every=5", "train.progress=false", "train.tensorboard=false", "train.warmup_steps=2",
    "train.checkpoint_every=5", "diffusion.timesteps=100", "sample.num=400", "sample.steps=10",
]


forks = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked processes (POSIX)")


@pytest.fixture(autouse=True)
def no_toy_report(monkeypatch):
    """The toy report (plots) costs seconds and has nothing to do with these faults."""
    import ddpmlab.runs.toy_report

    monkeypatch.setattr(ddpmlab.runs.toy_report, "write_toy_report", lambda run: None)


def _train(run: Path, *extra: str, config: str = MOG1D) -> int:
    return main(["train", "--config", config, "--run", str(run), *TINY, *extra])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ddpmlab: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _weights(run: Path) -> dict:
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    return {"model": state["model"], "ema": state["ema"]["model"], "step": state["step"]}


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("model", "ema") for k in a[part])


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _forked(function) -> int:
    """Run ``function`` in a forked child; returns its exit code (-9: killed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            function()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# -------------------------------------------------------------------------------------------------
# kill -9 at any moment.
# -------------------------------------------------------------------------------------------------


@forks
def test_kills_at_random_moments_resume_to_the_weights_of_an_uninterrupted_run(tmp_path):
    outcome = kill_and_resume("toy", tmp_path, kills=3, seed=0, launcher="fork", extra=["train.steps=150"])
    assert outcome.kills == 3 and outcome.finished
    assert outcome.model_bitwise and outcome.ema_bitwise
    assert outcome.metrics_as_reference and outcome.temporaries_left == 0


@forks
def test_a_kill_during_a_checkpoint_write_leaves_a_run_that_resumes_exactly(tmp_path):
    config = load_config(MOG1D, [*TINY, "train.checkpoint_every=4"])
    straight = train_run(config, tmp_path / "straight")
    run = tmp_path / "killed"

    def killed_in_second_save():
        saves = []
        real_save = torch.save

        def half_then_kill(payload, file):
            saves.append(1)
            if len(saves) == 2:  # half a checkpoint on disk, then the process dies
                file.write(b"PK\x03\x04 half a checkpoint")
                file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(payload, file)

        checkpoint_module.torch.save = half_then_kill
        train_run(config, run)

    assert _forked(killed_in_second_save) == -signal.SIGKILL
    assert len(list((run / "checkpoints").glob(".last.pt.*.tmp"))) == 1  # what the kill left
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4  # the previous one, whole
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) > 4  # steps logged after the checkpoint, to be redone
    resumed = train_run(None, run, resume=True)
    assert resumed.state.step == 20
    assert _same_weights(_weights(run), {"model": straight.model.state_dict(),
                                          "ema": straight.ema.model.state_dict()})
    assert not list((run / "checkpoints").glob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]  # each step once, as an uninterrupted run logs them


def test_metrics_past_the_checkpoint_and_lines_cut_short_are_dropped(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (5, 10, 15)]
    lines += [json.dumps({"eval": True, "step": 10}), '{"step": 20, "lo']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    assert truncate_metrics(tmp_path, 10) == 2
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == [5, 10, 10]


def test_a_save_removes_the_temporary_files_of_killed_saves(tmp_path):
    stale = tmp_path / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".other.pt.abc.tmp"
    other.write_bytes(b"not ours")
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert not stale.exists() and other.exists()


# -------------------------------------------------------------------------------------------------
# Non-finite losses, gradients, weights and settings.
# -------------------------------------------------------------------------------------------------


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "train.lr=1e6", "train.checkpoint_every=1") == 2
    error = _error(capsys)
    assert "not finite" in error and "at step 3" in error and "train.lr" in error
    assert "step 2) is kept" in error
    kept = _weights(run)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for part in ("model", "ema") for t in kept[part].values())
    assert main(["sample", "--run", str(run), "--num", "10", "--out", str(tmp_path / "s.npz")]) == 0


def test_without_a_check_per_step_the_error_still_names_the_first_bad_step(tmp_path):
    """On GPUs the guard is read at log steps and before saves only (no host sync per step)."""
    from ddpmlab import GaussianDiffusion, make_schedule
    from ddpmlab.data.batches import SampledBatches
    from ddpmlab.data.toy import GaussianMixture
    from ddpmlab.models import MLPDenoiser
    from ddpmlab.training.trainer import Trainer

    torch.manual_seed(0)
    mixture = GaussianMixture([[-2.0], [2.0]], [[0.5], [0.5]], [0.5, 0.5])
    config = TrainConfig(steps=20, batch_size=64, lr=1e6, warmup_steps=2, log_every=10, checkpoint_every=2,
                         tensorboard=False, progress=False)
    trainer = Trainer(MLPDenoiser(1, hidden=16, num_blocks=1, time_dim=16),
                      GaussianDiffusion(make_schedule("linear", 100)),
                      SampledBatches(mixture.sample, 64, seed=0), config, run_dir=tmp_path)
    trainer._check_every_step = False  # as on a GPU: read at log steps and before each save
    with pytest.raises(NonFiniteError) as raised:
        trainer.fit()
    bad = int(str(raised.value).split("at step ")[1].split(";")[0])
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"]
    assert saved < bad and saved % 2 == 0 and bad <= saved + 2  # the first bad step, the last good save
    assert f"step {saved}) is kept" in str(raised.value)


def test_fp16_gradient_overflow_is_the_scalers_business_a_non_finite_loss_is_not():
    config = TrainConfig()
    scaled = NonFiniteGuard(torch.device("cpu"), config, scaled_gradients=True)
    scaled.observe(1, torch.tensor(0.5), torch.tensor(float("inf")))  # the scaler skips this step
    scaled.check("kept")
    scaled.observe(2, torch.tensor(float("nan")), torch.tensor(1.0))
    with pytest.raises(NonFiniteError, match="the loss is not finite .* at step 2"):
        scaled.check("kept")
    plain = NonFiniteGuard(torch.device("cpu"), config)
    plain.observe(1, torch.tensor(0.5), torch.tensor(float("inf")))
    with pytest.raises(NonFiniteError, match="the gradient norm is not finite .* at step 1"):
        plain.check("kept")


def test_non_finite_weights_are_never_saved(tmp_path):
    config = load_config(MOG1D, TINY)
    trainer = train_run(config, tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with torch.no_grad():
        next(trainer.ema.model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="the weights are not finite"):
        trainer.save()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("setting", ["train.lr=.inf", "diffusion.min_snr_gamma=.nan", "train.minutes=.inf"])
def test_non_finite_settings_are_refused_before_anything_is_written(tmp_path, capsys, setting):
    assert _train(tmp_path / "run", setting) == 2
    assert "must be a finite number" in _error(capsys)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------------------------
# A full disk, a folder that cannot be written.
# -------------------------------------------------------------------------------------------------


def _fail_from_save(monkeypatch, number: int, error: OSError) -> None:
    """Make checkpoint write ``number`` (and later ones) fail with ``error`` after half a file."""
    real_save, saves = torch.save, []

    def failing(payload, file):
        saves.append(1)
        if len(saves) >= number:
            file.write(b"half a checkpoint")
            raise error
        real_save(payload, file)

    monkeypatch.setattr(checkpoint_module.torch, "save", failing)


def test_a_full_disk_keeps_the_previous_checkpoint_and_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _fail_from_save(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert _train(run) == 2
    error = _error(capsys)
    assert "No space left on device" in error and "the previous one is kept" in error
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(run, "train.steps=5") == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()

    real_mkstemp = checkpoint_module.tempfile.mkstemp

    def refused(*args, dir=None, **kwargs):  # what chmod 500 on checkpoints/ does (but not to root)
        if Path(dir).name == "checkpoints":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", refused)
    assert main(["train", "--run", str(run), "--resume", "train.steps=10"]) == 2
    error = _error(capsys)
    assert "Permission denied" in error and "the previous one is kept" in error
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoint_folder_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "train.steps=5") == 0
    (run / "checkpoints").chmod(0o500)
    try:
        assert main(["train", "--run", str(run), "--resume", "train.steps=10"]) == 2
        assert "Permission denied" in _error(capsys)
    finally:
        (run / "checkpoints").chmod(0o700)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5


def test_a_metrics_file_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    from ddpmlab.training.writers import RunLogger

    def full(self, step, metrics):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "metrics.jsonl")

    monkeypatch.setattr(RunLogger, "log", full)
    assert _train(tmp_path / "run") == 2
    assert "No space left on device" in _error(capsys)


# -------------------------------------------------------------------------------------------------
# One trainer per run directory.
# -------------------------------------------------------------------------------------------------


def test_a_second_trainer_in_the_same_run_directory_refuses_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another process training there (a lock taken on another open file)
        assert _train(run) == 2
        assert f"another process (pid {os.getpid()}) is training in {run}" in _error(capsys)
        assert not (run / "checkpoints").exists()
    assert _train(run, "train.steps=5") == 0  # released
    with RunLock(run):
        assert main(["train", "--run", str(run), "--resume", "train.steps=10"]) == 2
        assert "is training in" in _error(capsys)


@forks
def test_a_killed_trainer_does_not_leave_its_lock_behind(tmp_path):
    run = tmp_path / "run"
    run.mkdir()

    def lock_and_die():
        RunLock(run).acquire()
        os.kill(os.getpid(), signal.SIGKILL)

    assert _forked(lock_and_die) == -signal.SIGKILL
    assert (run / ".lock").exists()  # the file stays, its lock went with the process
    assert _train(run, "train.steps=5") == 0


# -------------------------------------------------------------------------------------------------
# A resume continues the run as it was saved.
# -------------------------------------------------------------------------------------------------


def test_a_short_resume_continues_the_saved_plan(tmp_path, monkeypatch):
    from ddpmlab.training.trainer import Trainer

    assert _train(tmp_path / "straight") == 0
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, until_step=None: fit(self, until_step=8))
    assert _train(tmp_path / "split") == 0  # interrupted after step 8 (its last checkpoint)
    monkeypatch.setattr(Trainer, "fit", fit)
    assert main(["train", "--run", str(tmp_path / "split"), "--resume"]) == 0  # no config, no overrides
    resumed, straight = _weights(tmp_path / "split"), _weights(tmp_path / "straight")
    assert resumed["step"] == straight["step"] == 20  # not the default train.steps (2000)
    assert _same_weights(resumed, straight)  # the cosine LR as planned, not re-planned


def test_a_resume_refuses_overrides_but_the_stop_rule_and_prints_a_new_plan(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "model.hidden=32"]) == 2
    error = _error(capsys)
    assert "only train.steps, train.epochs, train.minutes can change" in error and "model.hidden" in error
    assert _snapshot(run) == before
    assert main(["train", "--config", MOG1D, "--run", str(run), "--resume", *TINY, "train.steps=25"]) == 0
    assert "ddpmlab: resuming with train.steps=25 (was 20)" in capsys.readouterr().err
    assert _weights(run)["step"] == 25


# -------------------------------------------------------------------------------------------------
# Checks that can run before training do.
# -------------------------------------------------------------------------------------------------


def test_a_sampler_the_diffusion_cannot_run_is_refused_before_training(tmp_path, capsys):
    assert main(["train", "--config", MOG1D, "--run", str(tmp_path / "run"), "diffusion.timesteps=50"]) == 2
    assert "num_steps must be between 1 and 50, got 100" in _error(capsys)
    assert not (tmp_path / "run").exists()
    assert main(["train", "--config", MOG1D, "--dry-run", "diffusion.timesteps=50"]) == 2
    assert "sample.steps=100" in _error(capsys)


def test_the_demo_sampler_fits_a_diffusion_of_fewer_than_50_steps(tmp_path):
    from ddpmlab.runs.demo import demo_outputs

    tiny_unet = [
        "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]",
        "model.num_groups=4", "model.num_heads=2", "train.steps=1", "train.batch_size=4",
        "train.progress=false", "train.tensorboard=false", "train.sample_every=null", "train.minutes=null",
        "diffusion.timesteps=40", "sample.steps=5",
    ]
    run = tmp_path / "run"
    train_run(load_config(ROOT / "configs" / "mnist5k.yaml", tiny_unet), run)
    grid, archive, animation = demo_outputs(run)  # DDIM min(50, T) steps
    assert grid.exists() and archive.exists() and animation.exists()


# -------------------------------------------------------------------------------------------------
# Damaged, foreign and incomplete checkpoints.
# -------------------------------------------------------------------------------------------------


def test_a_foreign_checkpoint_is_refused_and_the_run_left_as_it_was(tmp_path, capsys):
    assert _train(tmp_path / "mine", config=str(ROOT / "configs" / "moons.yaml")) == 0
    assert _train(tmp_path / "other") == 0
    mine = tmp_path / "mine"
    foreign = (tmp_path / "other" / "checkpoints" / "last.pt").read_bytes()
    (mine / "checkpoints" / "last.pt").write_bytes(foreign)
    before = _snapshot(mine)
    capsys.readouterr()
    assert main(["train", "--run", str(mine), "--resume", "train.steps=30"]) == 2
    error = _error(capsys)
    assert "is not this run's checkpoint: its data.name is mog1d" in error and "says moons" in error
    assert _snapshot(mine) == before


def test_flipped_bytes_are_found_by_the_checksum(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    path = run / "checkpoints" / "last.pt"
    weights = load_checkpoint(path)["ema"]["model"]
    data = bytearray(path.read_bytes())
    tensor = max(weights.values(), key=torch.Tensor.numel)
    where = data.find(tensor.numpy().tobytes())  # the tensor's bytes, stored as they are
    assert where > 0
    for offset in range(0, 64 * 4, 4):
        data[where + offset] ^= 0xFF
    path.write_bytes(bytes(data))
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "10", "--out", str(tmp_path / "s.npz")]) == 2
    assert f"checkpoint {path} is damaged" in _error(capsys)
    assert main(["train", "--run", str(run), "--resume"]) == 2
    assert "is damaged" in _error(capsys)
    assert _snapshot(run) == before and not (tmp_path / "s.npz").exists()


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 3, "w": torch.ones(2)})
    state = torch.load(path, weights_only=True)
    del state["sha256"]
    torch.save(state, path)
    assert load_checkpoint(path)["step"] == 3


def _rewrite(run: Path, change) -> None:
    """Change the checkpoint's content (its checksum recomputed) and config.yaml alike."""
    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path, state)
    (run / "config.yaml").write_text(Config.from_dict(state["config"]).to_yaml())


def test_weights_that_do_not_fit_their_config_are_one_line_and_change_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    _rewrite(run, lambda state: state["config"]["model"].update(hidden=32))
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "train.steps=30"]) == 2
    error = _error(capsys)
    assert "do not fit the model its config describes: size mismatch for" in error and "more)" in error
    assert _snapshot(run) == before  # config.yaml not rewritten
    assert main(["sample", "--run", str(run), "--num", "10", "--out", str(tmp_path / "s.npz")]) == 2
    assert "do not fit" in _error(capsys)


def test_a_checkpoint_without_its_ema_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    _rewrite(run, lambda state: state.pop("ema"))
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "10", "--out", str(tmp_path / "s.npz")]) == 2
    assert "is incomplete: it has no ema entry" in _error(capsys)
    assert main(["train", "--run", str(run), "--resume", "train.steps=30"]) == 2
    assert "no ema entry" in _error(capsys)
    assert _snapshot(run) == before


def test_keep_checkpoints_keeps_the_last_k_besides_last_pt(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "train.keep_checkpoints=2") == 0
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["last.pt", "step_0000015.pt", "step_0000020.pt"]
    assert load_checkpoint(run / "checkpoints" / "step_0000015.pt")["step"] == 15
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(run / "checkpoints" / "step_0000010.pt")


def test_tensorboard_drops_what_a_killed_session_logged_past_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ddpmlab.training.writers import RunLogger

    config = TrainConfig(tensorboard=True)
    first = RunLogger(tmp_path, config, {})
    first.open()
    for step in range(1, 11):  # a session that logged up to step 10, its checkpoint at step 5
        first.log(step, {"loss": float(step)})
    first.close()
    resumed = RunLogger(tmp_path, config, {})
    resumed.open(resumed_at=5)
    for step in range(6, 11):
        resumed.log(step, {"loss": -float(step)})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert logged == [(s, float(s)) for s in range(1, 6)] + [(s, -float(s)) for s in range(6, 11)]


def test_sampling_refuses_non_finite_weights_saved_before_the_guard(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    _rewrite(run, lambda state: next(iter(state["ema"]["model"].values())).fill_(float("nan")))
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "10", "--out", str(tmp_path / "s.npz")]) == 2
    assert "holds non-finite weights (inf or NaN)" in _error(capsys)
    assert not (tmp_path / "s.npz").exists()
