"""GPU speed of ddpmlab at Ho et al.'s CIFAR-10 configuration: training, sampling, memory, loss, FLOPs.

One command measures everything the GPU issue asks for, within a wall budget, and writes
``benchmarks/results/gpu_speed.{json,md}`` (rewritten after every row, so a run cut short keeps what
it measured)::

    python -m benchmarks gpu                                  # every section, 420 s wall budget
    python -m benchmarks gpu --sections train,sample --budget-s 300
    python -m benchmarks gpu --peak-tflops 989                # MFU against another bf16 peak
    python -m benchmarks gpu --smoke                          # every section on the CPU, tiny model, ~20 s

(``python -m benchmarks.gpu`` is the same command.) Without installing ddpmlab (e.g. on a bare GPU
machine that has torch): from the repository root, ``PYTHONPATH=src python -m benchmarks gpu --out
DIR/gpu_speed``; diffusers must be importable too (it is pure Python: ``pip install --no-deps diffusers``
next to torch, numpy, huggingface_hub, safetensors). Give the command ~1.3x ``--budget-s`` of wall time:
the budget is checked between rows, and a compile cannot be interrupted. A run cut short (``timeout``
sends SIGTERM) keeps every row written so far.

On the project's lent GPU machine (torch present; no ddpmlab, no diffusers, no internet), one device call:
first, here, ``.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
--implementation cp --platform manylinux2014_x86_64 diffusers -d .venv/gpu-wheels`` (match the machine's
Python), then run with ``carry=[".venv/gpu-wheels"]`` and a timeout of ~570 s::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .venv/gpu-wheels/*.whl \
      || exit 1; export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1; nvidia-smi -L;
    timeout -k 15 540 python3 -m benchmarks gpu --budget-s 420 --out $OUT/gpu_speed 2>&1 \
      | tee $OUT/gpu_speed.log

and copy ``gpu_speed.json`` / ``.md`` from the returned files into ``benchmarks/results/``.

Network: ``configs/cifar10.yaml`` (35.7M parameters: base 128, mults 1,2,2,2, 2 residual blocks,
attention at 16x16, 1 head, dropout 0.1, additive time embedding), 3x32x32, batch 128; the CFG rows use
``configs/cifar10_cond.yaml`` (the same network plus a class embedding). diffusers' ``UNet2DModel`` is
configured to the same network (``harness.diffusers_twin``; same parameter count) and, where the weights
matter (sampling), holds the same weights (copied with ``harness.load_diffusers_weights``; the copy is
checked: same outputs in fp32).

Sections (``--sections``, run in this order), one module each:

- ``flops`` (flops.py): FLOPs per image of one forward pass and of a training step (forward +
  backward), counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device, for ours,
  diffusers' twin and the imagenet100_128 UNet; on a GPU also which SDPA backends accept the attention
  shapes.
- ``memory`` (memory.py): peak GPU memory of training steps of ``configs/imagenet100_128.yaml`` at
  batch 64 (bf16 autocast, channels_last, fused AdamW), with and without ``gradient_checkpointing``;
  also the bytes of activations autograd saves (device independent) and the step time.
- ``train`` (train.py): training images/s, one row per speed-up, each added to the previous row's
  settings (fp32 with TF32 off, + TF32, + bf16 autocast, + channels_last, + cudnn.benchmark, + fused
  AdamW, + torch.compile), diffusers fp32 and diffusers at its best settings (bf16 autocast, SDPA
  attention, TF32, cudnn.benchmark, fused AdamW), all in one process, timed in interleaved rounds; then
  the library's own ``Trainer.fit`` as shipped (bf16, compile, fused AdamW). A step (train_step.py) is
  the library's ``GaussianDiffusion.training_loss`` on a fixed batch (t and noise drawn on the device),
  backward, gradient clipping at 1.0, AdamW, EMA update, for ours and diffusers alike.
- ``loss`` (loss.py): the same seed and number of steps in fp32 (TF32 off) and at the fastest setting,
  on synthetic smooth images (no CIFAR-10 on the GPU machine); mean loss of the last N steps, and the
  fastest setting with another seed as the scale of run-to-run noise.
- ``sample`` (sample.py): 256 images, DDPM-1000 with our ``DDPMSampler`` against a DDPMPipeline-style
  diffusers loop (``UNet2DModel`` + ``DDPMScheduler.step`` in a Python loop), and DDIM-50 with CFG
  (w = 3) against the usual batched diffusers CFG loop; our rows add bf16 autocast, channels_last, a
  manual ``torch.cuda.CUDAGraph`` of one denoiser call, and ``torch.compile(mode="reduce-overhead")``.
  Rows time a prefix of the loop (per-step cost does not depend on t) and extrapolate; the fastest DDPM
  row is then also timed over the whole loop.

Benchmark-only, not ddpmlab options: channels_last, the TF32 / cudnn.benchmark flags, and for sampling
bf16 autocast, torch.compile and CUDA graphs: wrappers around the model (denoisers.py) that our sampler
calls as any denoiser, ``model(x_t, t, cond)``; no library class is patched. The library's own options
are used for the rest: the sampler loop, seed blocks of device generators as ``ddpmlab sample`` draws
noise, CFG, the diffusion loss, the Trainer (bf16, compile, fused AdamW on CUDA),
``gradient_checkpointing``.

Timing: every row runs untimed warm-up steps first (compile and CUDA-graph capture happen there and are
reported separately), then ``--rounds`` timed rounds between ``torch.cuda.synchronize()`` calls; medians.

The other modules: common.py (settings, budget, device, the models from the configs), report.py (the
report written after every row, and what every section is given), driver.py (options, the sections in
order under the budget, ``main``).
"""
