"""Multi-process training and sampling (torchrun + DistributedDataParallel) on the CPU with gloo.

One ``torchrun`` launch of 2 processes runs three commands in one process group: a DDP training run,
a resume (with 2 processes) of a run trained by 1 process, and sampling. Each rank records, through
an audit hook, every file it opened for writing (or made, moved, removed) under the runs folder.
Against runs trained here in one process it checks that 2 processes with batch b take the very steps
of 1 process with batch 2b, that resuming with another number of processes continues the same run,
that samples do not depend on the number of processes, and that only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ddpmlab.cli import main
from ddpmlab.config import ConfigError, load_config
from ddpmlab.data.batches import LoaderBatches, SampledBatches
from ddpmlab.runs import resolve_batch_size, train_run
from ddpmlab.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)

SRC = Path(__file__).resolve().parents[1] / "src"

# 8x8 digits, class-conditional (condition dropout on), a tiny UNet without dropout, 50 timesteps.
BASE = [
    "data.name=digits", "data.conditional=true", "model.type=unet", "model.base_channels=8",
    "model.channel_mults=[1]", "model.num_res_blocks=1", "model.num_groups=4", "model.dropout=0.0",
    "diffusion.timesteps=50", "train.lr=0.01", "train.lr_schedule=constant", "train.warmup_steps=1",
    "train.log_every=2", "train.checkpoint_every=2", "train.minutes=null", "train.progress=false",
    "train.tensorboard=false", "train.device=cpu", "sample.sampler=ddim", "sample.steps=5",
]
# The DDP run also writes TensorBoard logs and sample grids (rank 0 only).
WRITERS = ["train.tensorboard=true", "train.sample_every=2"]
SAMPLE = ["--num-samples", "40", "--batch-size", "16", "--sampler", "ddpm", "--steps", "5", "--guidance", "2",
          "--seed", "3"]

# Run by torchrun on every rank: an audit hook notes what this process writes under WATCH, then the
# commands run one after the other in one process group (torchrun starts one group per launch).
WORKER = r'''
import json, os, sys

commands, watch, report = json.loads(open(sys.argv[1]).read())
watch = os.path.abspath(watch)
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def under_watch(path):
    if isinstance(path, int):
        return False
    path = os.path.abspath(os.fsdecode(path))
    return path == watch or path.startswith(watch + os.sep)


def audit(event, args):
    if event == "open" and under_watch(args[0]):
        mode, flags = args[1], args[2]
        writing = isinstance(mode, str) and any(c in mode for c in "wax+")
        if writing or (mode is None and flags & WRITE_FLAGS):
            writes.append([event, os.fsdecode(args[0])])
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree") and under_watch(
        args[0]
    ):
        writes.append([event, os.fsdecode(args[0])])
        if event == "os.rename":  # files written atomically: a temporary file renamed over the target
            writes.append([event, os.fsdecode(args[1])])


sys.addaudithook(audit)
from ddpmlab import cli, distributed

leave, distributed.destroy = distributed.destroy, lambda: None  # keep the group for every command
code = 0
try:
    for argv in commands:
        code = cli.main(argv)
        if code:
            break
finally:
    leave()
    with open(os.path.join(report, "writes_rank%s.json" % os.environ["RANK"]), "w") as file:
        json.dump(writes, file)
sys.exit(code)
'''


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(folder: Path, commands: list[list[str]], watch: Path, nproc: int = 2) -> dict[int, list]:
    """Run ``commands`` (ddpmlab argument lists) in one torchrun launch of ``nproc`` processes on this
    machine; returns what each rank wrote under ``watch``."""
    worker, spec = folder / "worker.py", folder / "commands.json"
    worker.write_text(WORKER)
    spec.write_text(json.dumps([commands, str(watch), str(folder)]))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    path = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=path)
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in env:
        if any(name == "lo" for _, name in socket.if_nameindex()):
            env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only: no network needed
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(worker), str(spec),
    ]
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun timed out:\n{output[-4000:]}")
    assert process.returncode == 0, f"torchrun failed:\n{output[-12000:]}"
    return {r: json.loads((folder / f"writes_rank{r}.json").read_text()) for r in range(nproc)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    runs = root / "runs"

    def one_process(name: str, steps: int, *extra: str):
        config = load_config(None, [*BASE, "train.batch_size=16", f"train.steps={steps}", *extra])
        return train_run(config, runs / name, report=False)

    one_process("a2", 2)  # 1 process, batch 16, 2 steps
    one_process("a4", 4)  # ... and 4 steps
    shutil.copytree(runs / "a2", runs / "c")  # to be continued to step 4 by 2 processes
    writes = _torchrun(
        root,
        [
            ["train", "--run-dir", str(runs / "b"), *BASE, *WRITERS, "train.batch_size=8", "train.steps=2"],
            ["train", "--run-dir", str(runs / "c"), "--resume", "train.steps=4"],
            ["sample", "--run-dir", str(runs / "a4"), *SAMPLE, "--out", str(runs / "two.npz")],
        ],
        watch=runs,
    )
    return SimpleNamespace(root=root, runs=runs, writes=writes)


def _checkpoint(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-4, label: str = "") -> None:
    """Model and EMA weights equal up to float summation order (lr 0.01: atol is 1% of a step).

    Prints the largest difference (``pytest -s`` shows it)."""
    largest = 0.0
    for key in ("model", "ema"):
        first = a[key] if key == "model" else a[key]["model"]
        second = b[key] if key == "model" else b[key]["model"]
        assert first.keys() == second.keys()
        for name in first:
            torch.testing.assert_close(first[name], second[name], rtol=0, atol=atol, msg=f"{key}.{name}")
            largest = max(largest, (first[name].double() - second[name].double()).abs().max().item())
    print(f"\nsame weights{label}: max |difference| over model and EMA {largest:.2e}")


def test_two_processes_take_the_steps_of_one_process_with_the_global_batch(runs):
    one, two = _checkpoint(runs.runs / "a2"), _checkpoint(runs.runs / "b")
    assert two["step"] == one["step"] == 2
    assert two["samples_seen"] == one["samples_seen"] == 32  # counted over all processes
    assert two["batches"] == one["batches"] == {"epoch": 0, "sample_in_epoch": 32}
    _assert_same_weights(one, two, label=" (2 processes x batch b vs 1 process x batch 2b)")
    assert two["ema"]["num_updates"] == one["ema"]["num_updates"]
    # The logged loss is the mean over all ranks.
    assert two["last_metrics"]["loss"] == pytest.approx(one["last_metrics"]["loss"], rel=1e-5)
    assert "model" in two and not any(k.startswith("module.") for k in two["model"])  # unwrapped weights


def test_only_rank_0_writes_and_the_config_states_the_global_batch(runs):
    assert runs.writes[1] == [], f"rank 1 wrote: {runs.writes[1]}"
    written = {Path(path).name for _, path in runs.writes[0]}
    assert {"config.yaml", "metrics.jsonl", "two.npz"} <= written  # the audit hook sees rank 0's writes
    b = runs.runs / "b"
    assert sorted(p.name for p in (b / "samples").iterdir()) == ["step_0000002.png"]
    assert any((b / "logs").iterdir())
    steps = [json.loads(line)["step"] for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2]  # one process logs
    text = (b / "config.yaml").read_text()
    assert text.startswith("# global batch per optimizer step: 16 = batch_size 8 per process x 2 process(es)")
    assert "lr 0.01 is not scaled" in text.splitlines()[0]
    config = load_config(b / "config.yaml")
    assert (config.train.batch_size, config.train.global_batch_size) == (8, 16)


def test_resume_with_another_number_of_processes_continues_the_same_run(runs):
    straight = _checkpoint(runs.runs / "a4")
    # 1 process for 2 steps, then 2 processes (batch 8 each, derived from the global batch 16) for 2 more.
    one_then_two = _checkpoint(runs.runs / "c")
    assert one_then_two["config"]["train"]["batch_size"] == 8 and one_then_two["step"] == 4
    _assert_same_weights(straight, one_then_two, label=" (resume: 1 then 2 processes vs 1 throughout)")
    # 2 processes for 2 steps, then 1 process (batch 16) for 2 more.
    shutil.copytree(runs.runs / "b", runs.root / "b1")
    config = load_config(None, ["train.steps=4"])
    train_run(config, runs.root / "b1", resume=True, report=False)
    two_then_one = _checkpoint(runs.root / "b1")
    assert two_then_one["config"]["train"]["batch_size"] == 16 and two_then_one["step"] == 4
    _assert_same_weights(straight, two_then_one, label=" (resume: 2 then 1 processes vs 1 throughout)")
    assert two_then_one["batches"] == one_then_two["batches"] == straight["batches"]


def test_samples_do_not_depend_on_the_number_of_processes(runs, tmp_path):
    one = tmp_path / "one.npz"
    assert main(["sample", "--run", str(runs.runs / "a4"), *SAMPLE, "--out", str(one)]) == 0
    one_process, two_processes = np.load(one), np.load(runs.runs / "two.npz")
    assert two_processes["images"].shape == (40, 8, 8, 1)  # 3 rounds of 16: the last leaves rank 1 idle
    np.testing.assert_array_equal(one_process["images"], two_processes["images"])
    np.testing.assert_array_equal(one_process["labels"], two_processes["labels"])


# ----------------------------------------------------------------------------------------------------
# In one process.
# ----------------------------------------------------------------------------------------------------


def _items(stream, steps: int) -> list[list[int]]:
    iterator = iter(stream)
    return [next(iterator)[1].tolist() for _ in range(steps)]


def _global_batches(world: int, batch: int, steps: int, state: dict | None = None):
    """The items of each global batch: the union of every rank's batch at that step."""
    data = torch.utils.data.TensorDataset(torch.zeros(50, 1), torch.arange(50))
    streams = [LoaderBatches(data, batch, seed=4, rank=r, world_size=world) for r in range(world)]
    for stream in streams:
        if state is not None:
            stream.load_state_dict(state)
    per_rank = [_items(stream, steps) for stream in streams]
    return [set().union(*(ranks[step] for ranks in per_rank)) for step in range(steps)], streams[0]


def test_global_batches_are_the_same_items_for_any_number_of_processes():
    # 50 items in global batches of 12: 4 per epoch (2 items dropped), 10 steps run into epoch 2.
    reference, stream = _global_batches(1, 12, 10)
    assert stream.epoch == 2 and stream.batches_per_epoch == 4
    for world, batch in ((2, 6), (3, 4), (4, 3)):
        batches, _ = _global_batches(world, batch, 10)
        assert batches == reference, f"{world} processes"
    # Resume mid-epoch with another number of processes: the same items follow.
    _, stream = _global_batches(2, 6, 5)
    state = stream.state_dict()
    assert state == {"epoch": 1, "sample_in_epoch": 12}
    resumed, _ = _global_batches(3, 4, 5, state)
    assert resumed == reference[5:]


def test_loader_batches_read_old_checkpoints_and_roll_over_a_short_epoch_tail():
    data = torch.utils.data.TensorDataset(torch.zeros(20, 1), torch.arange(20))
    stream = LoaderBatches(data, 4, seed=3)
    stream.load_state_dict({"epoch": 1, "batch_in_epoch": 2})  # before distributed training
    assert (stream.epoch, stream.sample_in_epoch) == (1, 8)
    # Saved by a run with global batch 4 at item 16; with a global batch of 8 no whole batch is left.
    wider = LoaderBatches(data, 4, seed=3, rank=0, world_size=2)
    wider.load_state_dict({"epoch": 0, "sample_in_epoch": 16})
    next(iter(wider))
    assert (wider.epoch, wider.sample_in_epoch) == (1, 8)


def test_toy_streams_restore_exactly_for_their_own_rank_and_start_afresh_for_another():
    def sample(n, generator, return_labels=True):
        return torch.randn(n, 1, generator=generator), None

    rank0 = SampledBatches(sample, 4, seed=7000, rank=0)
    iterator = iter(rank0)
    next(iterator)
    state = rank0.state_dict()
    expected = next(iterator)[0]
    same = SampledBatches(sample, 4, seed=7000, rank=0)
    same.load_state_dict(state)
    torch.testing.assert_close(next(iter(same))[0], expected, rtol=0, atol=0)
    other = SampledBatches(sample, 4, seed=7001, rank=1)  # rank 1, resuming from rank 0's state
    other.load_state_dict(state)
    assert other.batches_drawn == 1 and not torch.equal(next(iter(other))[0], expected)


def test_global_batch_size_decides_the_per_process_batch():
    config = load_config(None, ["train.batch_size=32", "train.grad_accum=2"])
    resolved = resolve_batch_size(config, world_size=4)
    assert (resolved.train.batch_size, resolved.train.global_batch_size) == (32, 256)
    fixed = load_config(None, ["train.global_batch_size=256", "train.grad_accum=2"])
    assert resolve_batch_size(fixed, world_size=8).train.batch_size == 16
    assert resolve_batch_size(fixed, world_size=1).train.batch_size == 128
    with pytest.raises(ConfigError, match="does not split evenly over 3 process"):
        resolve_batch_size(fixed, world_size=3)


def test_commands_that_run_in_one_process_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["schedules", "--out", str(tmp_path / "s.png")]) == 2
    assert "under torchrun use train, sample, export" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()
