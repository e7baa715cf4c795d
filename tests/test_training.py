"""Trainer, EMA, checkpoints and batch streams: exact resume, atomic saves, safe loading."""

from __future__ import annotations

import math

import pytest
import torch

from ddpmlab import GaussianDiffusion, make_schedule
from ddpmlab.config import TrainConfig
from ddpmlab.data.batches import LoaderBatches, SampledBatches
from ddpmlab.data.toy import GaussianMixture
from ddpmlab.models import MLPDenoiser
from ddpmlab.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpmlab.training.ema import EMA
from ddpmlab.training.trainer import Trainer, lr_multiplier, make_adamw

MIXTURE = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.3, 0.5], [0.4, 0.6])


def _sample_with_labels(n, generator, return_labels=True):
    return MIXTURE.sample(n, generator, return_labels=True)


def _trainer(tmp_path, steps, conditional=False, grad_accum=1, seed=0):
    torch.manual_seed(seed)
    model = MLPDenoiser(2, hidden=32, num_blocks=2, time_dim=16, num_classes=2 if conditional else None)
    config = TrainConfig(
        steps=steps,
        batch_size=16,
        lr=1e-2,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=None,
        tensorboard=False,
        progress=False,
        grad_accum=grad_accum,
        ema_decay=0.9,
        seed=seed,
    )
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    batches = SampledBatches(_sample_with_labels, config.batch_size, seed=seed)
    return Trainer(
        model,
        diffusion,
        batches,
        config,
        run_dir=tmp_path,
        conditional=conditional,
        run_config={"name": "test"},
    )


def _flat(module):
    return torch.cat(
        [p.detach().flatten() for p in module.state_dict().values() if p.dtype.is_floating_point]
    )


@pytest.mark.parametrize("conditional", [False, True])
def test_resume_is_exact(tmp_path, conditional):
    """k steps, save, resume for k more == 2k uninterrupted steps (weights, EMA and optimizer state)."""
    straight = _trainer(tmp_path / "straight", steps=8, conditional=conditional)
    straight.fit()

    first = _trainer(tmp_path / "split", steps=8, conditional=conditional)
    first.fit(until_step=4)  # as if interrupted after 4 of 8 steps
    second = _trainer(
        tmp_path / "split", steps=8, conditional=conditional, seed=99
    )  # different init, resumed
    second.resume()
    assert second.state.step == 4
    second.fit()

    assert second.state.step == 8
    torch.testing.assert_close(_flat(second.model), _flat(straight.model), rtol=0, atol=0)
    torch.testing.assert_close(_flat(second.ema.model), _flat(straight.ema.model), rtol=0, atol=0)
    assert second.lr_scheduler.get_last_lr() == straight.lr_scheduler.get_last_lr()


def test_training_reduces_the_loss(tmp_path):
    trainer = _trainer(tmp_path, steps=150)
    diffusion = trainer.diffusion
    x0 = MIXTURE.sample(2048, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(6)
    t = torch.randint(0, 100, (2048,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    with torch.no_grad():
        before = float(diffusion.training_loss(trainer.model, x0, t=t, noise=noise))
    trainer.fit()
    with torch.no_grad():
        after = float(diffusion.training_loss(trainer.ema.model, x0, t=t, noise=noise))
    assert before == pytest.approx(1.0, abs=0.1)  # zero-initialised output: loss = E||eps||^2 / D = 1
    assert after < 0.75 * before


def test_metrics_jsonl_and_checkpoint_contents(tmp_path):
    trainer = _trainer(tmp_path, steps=3)
    trainer.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 3 and '"loss"' in lines[0] and '"lr"' in lines[0]
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key in ("model", "ema", "optimizer", "lr_scheduler", "batches", "rng", "config", "format_version"):
        assert key in state
    assert state["step"] == 3 and state["config"] == {"name": "test"}


def test_grad_accumulation_matches_a_bigger_batch(tmp_path):
    """Accumulating 2 micro-batches of 16 equals one batch of 32 made of the same samples."""

    def run(batch_size, accum):
        torch.manual_seed(0)
        model = MLPDenoiser(2, hidden=16, num_blocks=1, time_dim=8)
        config = TrainConfig(
            steps=1,
            batch_size=batch_size,
            grad_accum=accum,
            lr=1e-2,
            warmup_steps=0,
            tensorboard=False,
            progress=False,
            checkpoint_every=None,
            grad_clip=None,
        )
        diffusion = GaussianDiffusion(make_schedule("linear", 50))
        data = MIXTURE.sample(32, torch.Generator().manual_seed(1), return_labels=True)
        chunks = iter(
            [(data[0][i : i + batch_size], data[1][i : i + batch_size]) for i in range(0, 32, batch_size)]
        )

        class Fixed:
            epoch, batches_per_epoch = 0, None

            def __iter__(self):
                return chunks

            def state_dict(self):
                return {}

        trainer = Trainer(model, diffusion, Fixed(), config)
        # Same t and noise for the same samples whatever the split:
        fixed_t = torch.randint(0, 50, (32,), generator=torch.Generator().manual_seed(2))
        fixed_noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
        offsets = iter(range(0, 32, batch_size))
        original = diffusion.training_loss

        def loss(model, x0, cond=None, generator=None, t=None, noise=None):
            assert t is None and noise is None  # one process: the loss draws them itself
            start = next(offsets)
            sl = slice(start, start + len(x0))
            return original(model, x0, cond, t=fixed_t[sl], noise=fixed_noise[sl])

        diffusion.training_loss = loss
        trainer.fit()
        return _flat(trainer.model)

    torch.testing.assert_close(run(16, 2), run(32, 1), rtol=1e-5, atol=1e-6)


def test_wall_clock_limit_counts_each_second_once(tmp_path, monkeypatch):
    """train.minutes stops after that much training time (earlier sessions included), not half of it."""
    clock = [0.0]

    def fake_perf_counter():
        clock[0] += 1.0  # every reading of the clock is one second later
        return clock[0]

    trainer = _trainer(tmp_path, steps=None)
    trainer.config.minutes = 1.0
    readings_per_step = []
    monkeypatch.setattr("ddpmlab.training.trainer.time.perf_counter", fake_perf_counter)
    before = clock[0]
    state = trainer.fit()
    readings_per_step.append((clock[0] - before) / state.step)
    assert 60.0 <= state.elapsed_seconds < 60.0 + 2 * readings_per_step[0] + 2
    assert state.elapsed_seconds <= clock[0] - before  # never more than the time that passed
    assert state.step >= 60.0 / readings_per_step[0] - 2


def test_lr_schedule_warmup_then_cosine():
    assert lr_multiplier(0, 10, 110, 0.0, "cosine") == pytest.approx(0.1)
    assert lr_multiplier(9, 10, 110, 0.0, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(60, 10, 110, 0.0, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(110, 10, 110, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_multiplier(60, 10, 110, 0.0, "constant") == 1.0
    assert lr_multiplier(10_000, 10, None, 0.0, "cosine") == 1.0  # unknown length: constant after warmup


def test_ema_is_an_exponential_average():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5, warmup=False)
    values = [1.0, 2.0, 3.0]
    expected = 0.0
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        expected = 0.5 * expected + 0.5 * v
    assert float(ema.model.weight) == pytest.approx(expected)
    warm = EMA(model, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)


def test_checkpoints_are_atomic_and_refuse_foreign_files(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1, "w": torch.ones(2)})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    torch.save({"anything": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a ddpmlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"kind": "ddpmlab-checkpoint", "format_version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "evil.pt")  # weights_only refuses to unpickle code


def test_loader_batches_resume_mid_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(20.0)[:, None], torch.arange(20))
    stream = LoaderBatches(data, batch_size=4, seed=3)
    iterator = iter(stream)
    seen = [next(iterator)[1].tolist() for _ in range(7)]  # epoch 0 has 5 batches: this enters epoch 1
    assert stream.epoch == 1 and stream.batch_in_epoch == 2
    epoch0 = sum(seen[:5], [])
    assert sorted(epoch0) == list(range(20))  # each item once per epoch

    restored = LoaderBatches(data, batch_size=4, seed=3)
    state = LoaderBatches(data, batch_size=4, seed=3)
    state.epoch, state.batch_in_epoch = 1, 1
    restored.load_state_dict(state.state_dict())
    assert next(iter(restored))[1].tolist() == seen[6]


def test_loader_batches_shard_across_ranks():
    data = torch.utils.data.TensorDataset(torch.zeros(16, 1), torch.arange(16))
    shares = [next(iter(LoaderBatches(data, 8, seed=0, rank=r, world_size=2)))[1].tolist() for r in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(16))
    assert math.isfinite(sum(shares[0]))


def test_running_mean_keeps_tensors_on_their_device_until_pop():
    """The Trainer adds the loss and grad norm as device tensors (no host sync per step); the mean is
    read once per logging window."""
    from ddpmlab.training.writers import RunningMean

    mean = RunningMean()
    mean.add(torch.tensor(1.0, dtype=torch.float32))
    mean.add(torch.tensor(2.0, dtype=torch.bfloat16), count=2)  # e.g. an autocast loss
    mean.add(0.5)
    assert isinstance(mean.total, torch.Tensor) and mean.total.dtype == torch.float64
    assert mean.pop() == pytest.approx((1.0 + 2 * 2.0 + 0.5) / 4)
    assert mean.pop() == 0.0 and mean.count == 0  # empty after a pop


def test_ranks_agree_on_the_wall_clock_every_few_steps_only(tmp_path, monkeypatch):
    """Under torchrun the ranks all-reduce 'out of time' (their clocks differ), but not every step: each
    all-reduce would be a host round trip per GPU step. Checked at steps divisible by TIME_CHECK_EVERY."""
    from ddpmlab.training import trainer as trainer_module

    trainer = _trainer(tmp_path, steps=None)
    trainer.config.minutes = 1.0
    asked = []

    def any_true(flag):
        asked.append((trainer.state.step, flag))
        return flag

    monkeypatch.setattr(trainer_module.distributed, "any_true", any_true)
    trainer.world_size = 2  # as if launched by torchrun (only _should_stop looks at it here)
    trainer.state.elapsed_seconds = 61.0
    for step in range(25):
        trainer.state.step = step
        stop = trainer._should_stop()
        assert stop == (step % trainer_module.TIME_CHECK_EVERY == 0)
    assert [step for step, _ in asked] == [0, 10, 20] and all(flag for _, flag in asked)
    trainer.world_size = 1  # one process: its own clock, every step, no collective
    trainer.state.step = 3
    assert trainer._should_stop() and len(asked) == 3


def test_adamw_is_fused_where_torch_can_and_steps_like_the_reference():
    """The trainer's AdamW (fused on the CPU since torch 2.4) takes the same steps as torch's
    single-tensor reference, weight decay only where asked."""
    torch.manual_seed(0)
    weights, bias = torch.randn(6, 5), torch.randn(5)
    gradients = [(torch.randn(6, 5), torch.randn(5)) for _ in range(3)]

    def run(build):
        w, b = weights.clone().requires_grad_(), bias.clone().requires_grad_()
        optimizer = build([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}])
        for grad_w, grad_b in gradients:
            w.grad, b.grad = grad_w.clone(), grad_b.clone()
            optimizer.step()
        return optimizer, w.detach(), b.detach()

    optimizer, w, b = run(lambda groups: make_adamw(groups, lr=1e-2))
    _, w_ref, b_ref = run(lambda groups: torch.optim.AdamW(groups, lr=1e-2, foreach=False))
    torch.testing.assert_close(w, w_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, b_ref, rtol=1e-6, atol=1e-7)
    assert not torch.equal(w, weights)
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    assert bool(optimizer.defaults["fused"]) == ((major, minor) >= (2, 4))


def test_adamw_falls_back_to_foreach_where_fused_is_refused(monkeypatch):
    real_adamw = torch.optim.AdamW

    def old_torch_adamw(params, **options):
        optimizer = real_adamw(params, **options)  # writes its defaults into the groups, as torch < 2.4
        if options.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
        return optimizer

    monkeypatch.setattr(torch.optim, "AdamW", old_torch_adamw)
    w = torch.randn(3, requires_grad=True)
    optimizer = make_adamw([{"params": [w], "weight_decay": 0.0}], lr=1e-2)
    assert optimizer.param_groups[0]["foreach"] and not optimizer.param_groups[0]["fused"]
    before = w.detach().clone()
    w.grad = torch.ones(3)
    optimizer.step()
    torch.testing.assert_close(w.detach(), before - 1e-2, rtol=0, atol=1e-6)  # Adam's first step: lr * sign
