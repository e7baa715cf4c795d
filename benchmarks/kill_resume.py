"""``kill -9`` a small CPU training at random moments, resume it each time, and compare the finished run
with one that was never interrupted: the model and EMA weights must be bitwise equal.

For each kind of run (``toy``: the mog1d MLP; ``image``: a small mnist5k UNet), a reference run trains
uninterrupted; then the same run is started, killed (SIGKILL: no handler runs, as with a power cut of
the process) after a random delay, and continued with ``ddpmlab train --run R --resume`` (no config,
no overrides: the run continues as it was saved), ``--kills`` times, and finally left to finish. A
session killed before the run's first checkpoint is started afresh (there is nothing to resume).
Checkpoints are written every few steps, so kills land in imports, data and model building, training
steps, metrics appends and checkpoint writes alike; a kill during a write is recognised by the
temporary file it leaves (``checkpoints/.last.pt.*.tmp``), which the next session must remove. One
kill in five lands in a session's start-up, the others uniformly within a window after the session's
first checkpoint (:func:`kill_window`, from times measured on the reference run): the killed sessions
leave a good part of the training to the last one, so every kill asked is made.

Checked at the end: model and EMA weights of ``last.pt`` equal the reference's bit for bit (on the CPU
with one thread, the same computation in the same order), ``metrics.jsonl`` holds the reference's
training steps once each, and no temporary file is left.

    python -m benchmarks.kill_resume                 # toy and image, 20 kills each; writes results
    python -m benchmarks kill-resume --kinds toy --kills 5 --no-write

:func:`kill_and_resume` is also what ``tests/test_faults.py`` runs, with a few kills and forked
processes (``launcher="fork"``: no interpreter start-up per session).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.harness import command_line, config_path, machine_line, publish, versions

COMMON = ["train.progress=false", "train.tensorboard=false", "train.minutes=null"]
KINDS = {
    "toy": (
        "mog1d",
        [*COMMON, "train.steps=300", "train.checkpoint_every=3", "train.log_every=1", "sample.num=2000",
         "sample.steps=20", "sample.batch_size=2000"],
    ),
    "image": (
        "mnist5k",
        [*COMMON, "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]",
         "model.num_groups=4", "model.num_heads=2", "train.steps=150", "train.batch_size=8",
         "train.warmup_steps=5", "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=null",
         "diffusion.timesteps=50", "sample.steps=5"],
    ),
}
CHECKPOINT = Path("checkpoints") / "last.pt"
START_SHARE = 0.2  # of the kills land in a session's start-up
CHECKPOINTS_PER_WINDOW = 2  # the kills in training land within this many checkpoint intervals at least


@dataclass
class Outcome:
    """One kind's result."""

    kind: str
    kills_asked: int
    kills: int  # sessions killed
    during_save: int  # kills that left a checkpoint's temporary file
    before_first_checkpoint: int  # kills after which the run started afresh
    steps_redone: int  # steps logged past the checkpoint at the kills: lost, redone by the resumes
    sessions: int
    finished: bool
    model_bitwise: bool
    ema_bitwise: bool
    metrics_as_reference: bool
    temporaries_left: int
    reference_seconds: float
    seconds: float


# --------------------------------------------------------------------------------------------------
# Starting and killing training processes.
# --------------------------------------------------------------------------------------------------


class Session:
    """A ``ddpmlab`` command in its own process: a new interpreter (``subprocess``) or a fork of this
    one (``fork``: quick, for tests; the child runs ``ddpmlab.cli.main`` and exits)."""

    def __init__(self, argv: list[str], launcher: str, log: Path) -> None:
        self.code: int | None = None
        if launcher == "subprocess":
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            with open(log, "ab") as out:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "ddpmlab", *argv], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            self.pid = self.process.pid
        else:
            self.process = None
            self.pid = _fork(argv, log)

    def poll(self) -> int | None:
        """The exit code, or None while it runs (a killed process: -9)."""
        if self.code is None:
            if self.process is not None:
                self.code = self.process.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                self.code = os.waitstatus_to_exitcode(status) if pid else None
        return self.code

    def kill(self) -> None:
        """SIGKILL, then reap it."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.01)
        return int(self.code)


def _fork(argv: list[str], log: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: ddpmlab's main, its output to the log, and out without running any cleanup
        handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        torch.set_num_threads(1)
        from ddpmlab.cli import main

        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fresh_command(kind: str, run_dir: Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    config, overrides = KINDS[kind]
    return ["train", "--config", str(config_path(config)), "--run", str(run_dir), *overrides, *extra]


def resume_command(run_dir: Path) -> list[str]:
    return ["train", "--run", str(run_dir), "--resume"]


# --------------------------------------------------------------------------------------------------
# One kind: reference, killed run, comparison.
# --------------------------------------------------------------------------------------------------


def reference_run(kind: str, run_dir: Path, launcher: str, extra: list[str]) -> tuple[float, float, float]:
    """Train uninterrupted; returns the seconds to its first checkpoint (the start-up), from there to
    its last (the training) and in all."""
    started = time.time()
    command = fresh_command(kind, run_dir, extra)
    session = Session(command, launcher, run_dir.parent / f"{run_dir.name}.log")
    first = None
    while session.poll() is None:
        if first is None and (run_dir / CHECKPOINT).exists():
            first = time.time() - started
        time.sleep(0.01)
    if session.code != 0:
        raise SystemExit(f"the reference {kind} run failed (exit {session.code}); see {run_dir}.log")
    total = time.time() - started
    last = (run_dir / CHECKPOINT).stat().st_mtime - started  # the final save, before any report
    first = min(first if first is not None else last, last)
    return first, last - first, total


def temporaries(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CHECKPOINT.parent).glob(".last.pt.*.tmp"))


def wait_then_kill(
    session: Session, run_dir: Path, rng: random.Random, startup: float, window: float
) -> bool:
    """Kill ``session`` at a random moment: with probability START_SHARE within ``startup`` seconds of
    its start (imports, data, model, loading the checkpoint, the first steps), else at a uniform moment
    within ``window`` seconds after its first checkpoint (so that every such session moves the run
    on, however long its start-up takes on a busy machine). Returns False when it ended first."""
    started = time.time_ns()
    checkpoint = run_dir / CHECKPOINT
    if rng.random() < START_SHARE:
        deadline = time.perf_counter() + rng.uniform(0.0, startup)
    else:
        while session.poll() is None and not _written_since(checkpoint, started):
            time.sleep(0.002)
        deadline = time.perf_counter() + rng.uniform(0.0, window)
    while session.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.002)
    if session.poll() is not None:
        return False
    session.kill()
    return True


def _written_since(path: Path, since_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns > since_ns
    except FileNotFoundError:
        return False


def killed_run(
    kind: str,
    run_dir: Path,
    kills: int,
    timing: tuple[float, float],
    seed: int,
    launcher: str,
    extra: list[str],
) -> dict:
    """Start, kill at a random moment (:func:`wait_then_kill`), resume, ``kills`` times; then let it
    finish. ``timing``: the start-up seconds of a session and the window of the kills in training."""
    rng = random.Random(seed)
    log = run_dir.parent / f"{run_dir.name}.log"
    counts = {"kills": 0, "during_save": 0, "before_first_checkpoint": 0, "steps_redone": 0, "sessions": 0}
    startup, window = timing
    while True:
        resume = (run_dir / CHECKPOINT).exists()
        command = resume_command(run_dir) if resume else fresh_command(kind, run_dir, extra)
        session = Session(command, launcher, log)
        counts["sessions"] += 1
        if counts["kills"] == kills or not wait_then_kill(session, run_dir, rng, startup, window):
            counts["finished"] = session.wait() == 0  # the last session, or one that ended first
            return counts
        counts["kills"] += 1
        counts["during_save"] += bool(temporaries(run_dir))
        counts["before_first_checkpoint"] += not (run_dir / CHECKPOINT).exists()
        counts["steps_redone"] += _steps_past_checkpoint(run_dir)


def kill_window(kind: str, training: float, kills: int, extra: list[str]) -> float:
    """Seconds after a session's first checkpoint within which it is killed: ``training / (2 kills)``,
    but at least CHECKPOINTS_PER_WINDOW checkpoint intervals (so that kills also land in later
    checkpoint writes). The killed sessions then do well under all of the training (about one
    interval plus half a window each), so every kill asked is made."""
    from ddpmlab.config import load_config

    name, overrides = KINDS[kind]
    train = load_config(config_path(name), [*overrides, *extra]).train
    interval = training * train.checkpoint_every / train.steps
    return max(training / (2 * kills), CHECKPOINTS_PER_WINDOW * interval, 0.01)


def _steps_past_checkpoint(run_dir: Path) -> int:
    """How many steps a killed session logged after its last checkpoint (they are redone)."""
    from ddpmlab.training.checkpoint import peek_checkpoint

    saved = peek_checkpoint(run_dir / CHECKPOINT)["step"] if (run_dir / CHECKPOINT).exists() else 0
    logged = [saved]
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            logged.append(int(json.loads(line).get("step", 0)))
        except (ValueError, AttributeError):  # a line the kill cut short
            continue
    return max(logged) - saved


def _weights(run_dir: Path) -> dict:
    from ddpmlab.training.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / CHECKPOINT)


def _bitwise(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _training_steps(run_dir: Path) -> list[int]:
    from ddpmlab.runs import read_metrics

    return [record["step"] for record in read_metrics(run_dir) if "loss" in record]


def kill_and_resume(
    kind: str,
    workdir: Path,
    kills: int,
    seed: int = 0,
    launcher: str = "subprocess",
    extra: list[str] | tuple[str, ...] = (),
) -> Outcome:
    """Reference run and killed run of ``kind`` (with the dotted overrides ``extra`` besides the
    kind's own) in ``workdir``; their comparison."""
    reference, interrupted = workdir / f"{kind}_reference", workdir / f"{kind}_killed"
    extra = list(extra)
    startup, training, total = reference_run(kind, reference, launcher, extra)
    started = time.perf_counter()
    window = kill_window(kind, training, kills, extra)
    counts = killed_run(kind, interrupted, kills, (startup, window), seed, launcher, extra)
    seconds = time.perf_counter() - started
    same = {"model": False, "ema": False}
    if counts["finished"]:
        ours, theirs = _weights(interrupted), _weights(reference)
        same = {
            "model": _bitwise(ours["model"], theirs["model"]),
            "ema": _bitwise(ours["ema"]["model"], theirs["ema"]["model"]),
        }
    return Outcome(
        kind=kind,
        kills_asked=kills,
        **counts,
        model_bitwise=same["model"],
        ema_bitwise=same["ema"],
        metrics_as_reference=_training_steps(interrupted) == _training_steps(reference),
        temporaries_left=len(temporaries(interrupted)),
        reference_seconds=round(total, 1),
        seconds=round(seconds, 1),
    )


# --------------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------------


def report(outcomes: list[Outcome], command: str) -> str:
    yes = {True: "yes", False: "NO"}
    lines = [
        "# Kill -9 and resume",
        "",
        f"Machine: {machine_line()} (the training processes: 1 thread each)",
        "",
        f"Command: `{command}`",
        "",
        "Each session is killed with SIGKILL after a random delay and continued with "
        "`ddpmlab train --run R --resume` (no config, no overrides); the finished run is compared with "
        "an uninterrupted one.",
        "",
        "| run | kills | during a checkpoint write | before the first checkpoint | steps redone | sessions | "
        "finished | model bitwise | EMA bitwise | metrics steps as reference | temporary files left | "
        "s (reference) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.kind} | {o.kills} of {o.kills_asked} | {o.during_save} | {o.before_first_checkpoint} | "
            f"{o.steps_redone} | {o.sessions} | {yes[o.finished]} | {yes[o.model_bitwise]} | "
            f"{yes[o.ema_bitwise]} | {yes[o.metrics_as_reference]} | {o.temporaries_left} | "
            f"{o.seconds} ({o.reference_seconds}) |"
        )
    survived = sum(o.kills for o in outcomes if o.finished and o.model_bitwise and o.ema_bitwise)
    made = sum(o.kills for o in outcomes)
    lines += ["", f"Kills survived (resumed to bitwise-equal weights): {survived} of {made}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.harness import add_output_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="toy,image", help="comma-separated: toy, image")
    parser.add_argument("--kills", type=int, default=20, help="kills per kind (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--keep", default=None, help="keep the run directories in this folder")
    add_output_options(parser, "kill_resume")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or args.kills < 1:
        parser.error(f"--kinds from {', '.join(KINDS)} and --kills >= 1 (got {args.kinds}, {args.kills})")
    with tempfile.TemporaryDirectory(prefix="kill_resume_") as scratch:
        workdir = Path(args.keep) if args.keep else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        outcomes = [kill_and_resume(kind, workdir, args.kills, args.seed + i) for i, kind in enumerate(kinds)]
    command = command_line("kill-resume", argv)
    result = {"outcomes": [asdict(o) for o in outcomes], "command": command, "versions": versions()}
    publish(args, result, report(outcomes, command))
    good = all(o.finished and o.model_bitwise and o.ema_bitwise and o.metrics_as_reference for o in outcomes)
    return 0 if good and all(o.temporaries_left == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
