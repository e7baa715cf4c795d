# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Images: the UNet, a class-conditional MNIST model, and the submission zip
#
# Section B of the DDPM homework: the network that denoises images, piece by piece (time embedding,
# residual block, attention, group normalisation, the conditional U-Net), the forward process on a
# batch of the training data, training, sampling with and without classifier-free guidance, and the
# course submission: a zip `HW2_<id>.zip` of 64 PNG images.
#
# Every piece is the library's own module, built and called here; nothing is re-implemented. The model
# is `configs/mnist5k.yaml`: a 1.2M-parameter UNet trained on 5,000 real MNIST digits for **10 minutes
# on a laptop CPU** (the rest of the notebook takes two or three more).
#
# **Modes.** `DDPMLAB_NOTEBOOK_MODE=small` (what the test suite runs) trains a tiny UNet for 20 steps,
# so its samples are noise: it checks that every cell runs, not what the model learns.

# %% [markdown]
# ## Setup
#
# In full mode the run is kept in `runs/mnist5k` next to this notebook: running it again (or notebook
# 4, which reuses this model) does not train again. `STUDENT_ID` names the submission zip.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ddpmlab.plots import show

SMALL = os.environ.get("DDPMLAB_NOTEBOOK_MODE", "full") == "small"
RUNS = Path(tempfile.mkdtemp(prefix="ddpmlab-notebook-03-")) if SMALL else Path("runs")
FIGURES = Path(tempfile.mkdtemp(prefix="ddpmlab-figures-03-"))
STUDENT_ID = "123456789"  # yours: the zip is HW2_<id>.zip
# Small mode: a tiny UNet (8 channels, 2 levels), 20 training steps, 5 sampling steps.
TINY = [
    "model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]",
    "model.num_groups=4", "model.num_heads=2", "train.steps=20", "train.batch_size=16",
    "train.minutes=null", "train.log_every=5", "train.warmup_steps=1", "train.sample_every=null",
    "train.checkpoint_every=null", "train.progress=false", "train.tensorboard=false", "sample.steps=5",
]
OVERRIDES = TINY if SMALL else []
print(f"{'small' if SMALL else 'full'} mode, runs in {RUNS.resolve()}")

# %% [markdown]
# ## 1. Position embeddings: telling the network the timestep
#
# One network denoises at every noise level, so it must be told t. Ho et al. (2020, appendix B) use
# the Transformer's sinusoidal position encoding: with $d$ features and frequencies
# $f_i = 10000^{-i/(d/2)}$,
#
# $$\mathrm{emb}(t) = \big[\sin(t f_0), \dots, \sin(t f_{d/2-1}),\ \cos(t f_0), \dots,
# \cos(t f_{d/2-1})\big],$$
#
# then a small MLP (`TimestepEmbedding`: Linear, SiLU, Linear). Left: the 64 features of every t (the
# sines, then the cosines; in each half the fast waves on the left, the slow ones on the right).
# Right: the cosine similarity of the embeddings of two timesteps: close timesteps look alike, distant
# ones do not, so the network can treat neighbouring noise levels alike and still tell far ones apart.

# %%
from ddpmlab.models.embeddings import TimestepEmbedding, sinusoidal_embedding

T = 1000
features = sinusoidal_embedding(torch.arange(T), 64)  # [1000, 64]
unit = features / features.norm(dim=1, keepdim=True)
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
image = left.imshow(features, aspect="auto", cmap="RdBu", interpolation="nearest")
left.set(title="sinusoidal_embedding(t, 64)", xlabel="feature", ylabel="timestep t")
fig.colorbar(image, ax=left)
image = right.imshow(unit @ unit.T, cmap="viridis", interpolation="nearest")
right.set(title="cosine similarity of emb(t) and emb(t')", xlabel="t'", ylabel="t")
fig.colorbar(image, ax=right)
show(fig)
print(TimestepEmbedding(64, 128))

# %% [markdown]
# ## 2. The residual block
#
# `ResidualBlock` is the UNet's workhorse: GroupNorm, SiLU, 3x3 conv; then the time embedding enters,
# FiLM-style (Nichol & Dhariwal 2021): $h \leftarrow \mathrm{GroupNorm}(h)\,(1 + \text{scale}) +
# \text{shift}$, with (scale, shift) a linear function of the embedding; then SiLU, dropout, a second
# 3x3 conv, and the skip connection (a 1x1 conv when the width changes).
#
# The second conv starts at **zero**, so a new block is exactly its skip connection: a deep UNet starts
# as a near-identity and learns what to add. The cell checks both the shape and that identity.

# %%
from ddpmlab.models.blocks import ResidualBlock

block = ResidualBlock(32, 64, emb_dim=128, dropout=0.0, num_groups=8, scale_shift=True)
x = torch.randn(2, 32, 14, 14)
emb = torch.randn(2, 128)
with torch.no_grad():
    out = block(x, emb)
    print(f"x {list(x.shape)} + time embedding {list(emb.shape)} -> {list(out.shape)}")
    print("a fresh block is its skip connection:", torch.allclose(out, block.skip(x), atol=1e-6))
print(f"{sum(p.numel() for p in block.parameters()):,} parameters")

# %% [markdown]
# ## 3. The attention block
#
# Convolutions see a 3x3 neighbourhood; self-attention lets every pixel look at every other one
# (Ho et al. use it at 16x16). Each of the $HW$ positions is a token with $C$ features: GroupNorm, then
# a 1x1 conv makes queries, keys and values, and each head computes
# $\mathrm{softmax}(QK^\top / \sqrt{d})\,V$ over all positions; a zero-initialised projection is added
# back to the input (identity at the start, again). Its cost grows as $(HW)^2$, which is why the MNIST
# config attends only at the 7x7 level (49 tokens).

# %%
from ddpmlab.models.blocks import AttentionBlock

attention = AttentionBlock(64, num_heads=4, num_groups=8)
h = torch.randn(2, 64, 7, 7)
with torch.no_grad():
    print(f"{list(h.shape)} -> {list(attention(h).shape)}; identity at the start:",
          torch.allclose(attention(h), h))
print(attention)

# %% [markdown]
# ## 4. Group normalisation
#
# Batch normalisation would make each image's output depend on the rest of the batch, and batches are
# small for large images. GroupNorm (Wu & He 2018) normalises each image on its own: channels are split
# into G groups, and each group of each image gets mean 0 and variance 1 over its channels and pixels
# (then a learned scale and shift per channel). The cell checks both properties on the residual block's
# second norm (8 groups of 8 channels).

# %%
norm = block.norm_2  # nn.GroupNorm(8, 64)
h = 3 + 2 * torch.randn(4, 64, 14, 14)
with torch.no_grad():
    normed = norm(h)
    groups = normed.reshape(4, 8, -1)  # [image, group, channels x pixels]
    print(f"{norm}: per image and group, mean {groups.mean(-1).abs().max():.1e} (max |.|),"
          f" variance {groups.var(-1).min():.3f} to {groups.var(-1).max():.3f}")
    print("the first image normalised alone gives the same output:", torch.allclose(norm(h[:1]), normed[:1]))

# %% [markdown]
# ## 5. The conditional U-Net
#
# `UNet` puts the pieces together (Ho et al. 2020, appendix B): an input conv; a down path of levels
# (residual blocks, attention where configured, then a stride-2 conv); a middle (block, attention,
# block); an up path that mirrors it, each block taking the previous output **concatenated with a saved
# output of the down path** (the U's skip connections); and an output conv, zero at the start.
#
# For a class-conditional model, the label's embedding (`ClassEmbedding`) is added to the time
# embedding, so every residual block sees both. The embedding table has one extra row, the *null*
# class (index 10), which means "no label": classifier-free guidance needs it (section 8).
#
# `dry_run` builds the model that `configs/mnist5k.yaml` trains. Forward hooks print the shape after
# each stage: 28x28 with 32 channels, 14x14 with 64, 7x7 with 64, and back.

# %%
from ddpmlab.config import load_config
from ddpmlab.runs import dry_run
from ddpmlab.runs.demo import shipped_config

config = load_config(shipped_config("mnist5k"), OVERRIDES)
model, info = dry_run(config)
print(f"UNet with {sum(p.numel() for p in model.parameters()):,} parameters for data of shape {info.shape},"
      f" {info.num_classes} classes; condition encoder {model.condition_encoder}")
print(f"the null class: {model.condition_encoder.null_condition}")

stages = [("input conv", model.input_conv)]
for i, level in enumerate(model.down_levels):
    stages += [(f"down {i}.{j}", stage) for j, stage in enumerate(level.stages)]
stages += [(f"middle {j}", stage) for j, stage in enumerate(model.middle)]
for i, level in enumerate(model.up_levels):  # deepest level first
    depth = len(model.up_levels) - 1 - i
    stages += [(f"up {depth}.{j}", stage) for j, stage in enumerate(level.stages)]


def print_shape(module, inputs, output, name):
    print(f"  {name:<11} {list(output.shape)}")


hooks = [module.register_forward_hook(lambda *a, name=name: print_shape(*a, name)) for name, module in stages]
with torch.no_grad():
    out = model(torch.randn(2, 1, 28, 28), torch.tensor([10, 900]), torch.tensor([3, 7]))
for hook in hooks:
    hook.remove()
print(f"output {list(out.shape)}: the predicted noise, shaped like x_t")

# %% [markdown]
# ## 6. The data, and what the network is trained on
#
# `build_data` returns an endless stream of shuffled batches `(x0, labels)` (the PyTorch `DataLoader`
# of the homework, with a position that checkpoints can save) and a description of the data.
# Training (Algorithm 1) noises each image to a random $t$ with the closed form of **eq. 4**, and
# replaces each label by the null class with probability `train.cond_dropout` = 0.1, so that one
# network learns both $\epsilon_\theta(x_t, t, y)$ and $\epsilon_\theta(x_t, t, \varnothing)$.
# Top: a batch of real digits; bottom: the same batch as the network sees it.

# %%
from ddpmlab import GaussianDiffusion, make_schedule
from ddpmlab.data import build_data
from ddpmlab.data.base import to_uint8
from ddpmlab.export import save_grid

batches, info = build_data(config.data, batch_size=16, seed=0)
x0, labels = next(iter(batches))
diffusion = GaussianDiffusion(make_schedule(config.diffusion.schedule, config.diffusion.timesteps))
generator = torch.Generator().manual_seed(0)
t = torch.randint(0, 1000, (16,), generator=generator)
x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
encoder = model.condition_encoder
dropped = encoder.drop(labels, p=config.train.cond_dropout, generator=generator)
print("labels       ", labels.tolist())
print("after dropout", dropped.tolist(), "(10 = no label)")
print("timesteps    ", t.tolist())
many = encoder.drop(torch.zeros(10_000, dtype=torch.int64), p=config.train.cond_dropout, generator=generator)
print(f"labels dropped in 10,000 draws: {(many == encoder.null_condition).float().mean():.1%}")
show(save_grid(to_uint8(torch.cat([x0, x_t])), FIGURES / "batch.png", rows=2, scale=2))

# %% [markdown]
# ## 7. Training
#
# `train_run` runs Algorithm 1 with AdamW, warm-up and a cosine learning rate, an EMA of the weights
# (what sampling uses), checkpoints, `metrics.jsonl` and a grid of EMA samples every 750 steps. The
# config stops at 1,500 steps or 10 minutes, whichever comes first (fewer steps on a slower machine).
# Running this cell again continues an interrupted run, or does nothing for a finished one.

# %%
from ddpmlab.plots import plot_loss_curve
from ddpmlab.runs import read_metrics, train_run

run_dir = RUNS / "mnist5k"
trainer = train_run(config, run_dir, resume=(run_dir / "checkpoints" / "last.pt").exists())
print(f"{trainer.state.step} steps in {trainer.state.elapsed_seconds / 60:.1f} minutes")
show(plot_loss_curve(read_metrics(run_dir), FIGURES / "loss.png"))
grids = sorted((run_dir / "samples").glob("step_*.png"))
if grids:
    print(f"EMA samples during training, the last at {grids[-1].stem}:")
    show(grids[-1])

# %% [markdown]
# ## 8. Sampling, with and without guidance
#
# `open_run` loads the EMA model. `make_run_sampler` gives the config's sampler: DDIM with 50 steps
# (docs/equations.md, section 8). Classifier-free guidance (Ho & Salimans 2022) mixes the two
# predictions the network learned:
#
# $$\tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) + w\,\big(\epsilon_\theta(x_t, t, y) -
# \epsilon_\theta(x_t, t, \varnothing)\big).$$
#
# $w = 0$ ignores the label (the unconditional model), $w = 1$ is the conditional model, $w > 1$ pushes
# further towards what distinguishes class $y$. The three grids use the same seed, hence the same
# starting noise in the same place: one row per digit 0-9.

# %% tags=["readme"]
from ddpmlab.export import grid_image
from ddpmlab.runs import class_grid_labels, make_run_sampler, open_run, sample_images

run = open_run(run_dir)
sampler = make_run_sampler(run)
per_class = 2 if SMALL else 8
fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
for ax, w in zip(axes, (0.0, 1.0, 3.0)):
    labels = class_grid_labels(10, per_class)  # [0, 0, 0, 0, 1, 1, ...]: one row per digit
    images, _ = sample_images(run, 10 * per_class, sampler, guidance=w, labels=labels)
    ax.imshow(grid_image(images, rows=10)[..., 0], cmap="gray")
    name = {0.0: " (unconditional)", 1.0: " (conditional)"}.get(w, "")
    ax.set(title=f"w = {w:g}{name}", xticks=[], yticks=[])
print(sampler)
show(fig)

# %% [markdown]
# ## 9. Watching the reverse process
#
# `sample_trajectory` keeps snapshots along the way. Each row is one digit (0 to 9, $w = 3$): on the
# left the noisy $x_t$ from $x_T$ to the final sample, on the right the network's guess of the clean
# image at the same step, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon) / \sqrt{\bar\alpha_t}$
# (**eq. 15**). The guess settles on the digit's shape long before $x_t$ looks like it.

# %%
from ddpmlab.runs import sample_trajectory

trajectory = sample_trajectory(run, 10, sampler, frames=8, guidance=3.0, labels=torch.arange(10))
print("snapshots at t =", trajectory.timesteps[:-1], "then the final sample")
fig, axes = plt.subplots(1, 2, figsize=(12, 7))
for ax, frames, title in zip(axes, (trajectory.x_t, trajectory.x0), ("$x_t$", r"predicted $\hat x_0$")):
    ordered = frames.transpose(0, 1).flatten(0, 1)  # row by row: one digit at every snapshot
    ax.imshow(grid_image(ordered, rows=10)[..., 0], cmap="gray")
    ax.set(title=title, xticks=[], yticks=[])
show(fig)

# %% [markdown]
# ## 10. The submission: `HW2_<id>.zip` with 64 PNG images
#
# The homework asks for at least 64 sampled images in a zip named `HW{assignment}_{id}.zip`, as PNG or
# JPG files. `sample_images` draws them (labels 0-9 in turn, the run's guidance $w = 3$) as uint8
# arrays, and `save_zip` writes each as its own PNG (`000_0.png`, `001_1.png`, ...: index and label).
# The cell then opens the zip again and checks what is inside. (`ddpmlab export --run runs/mnist5k
# --num 64 --format png --zip HW2_<id>.zip` does the same from a terminal.)

# %%
import zipfile

from PIL import Image

from ddpmlab.export import save_zip

images, used = sample_images(run, 64, sampler, seed=1)
archive = save_zip(images, run_dir / f"HW2_{STUDENT_ID}.zip", "png", used)
with zipfile.ZipFile(archive) as opened:
    names = opened.namelist()
    sizes = {Image.open(opened.open(name)).size for name in names}
print(f"{archive}: {len(names)} files, all PNG: {all(n.endswith('.png') for n in names)}, sizes {sizes}")
print(names[:4], "...")
show(save_grid(images, FIGURES / "submission.png", rows=4, scale=2))

# %% [markdown]
# ## Summary and exercises
#
# - The UNet is a stack of residual blocks that read the time (and class) embedding, attention at the
#   coarsest level, GroupNorm everywhere, and skip connections across the U; every new block starts as
#   an identity.
# - One network, trained with 10% of labels dropped, is both the conditional and the unconditional
#   model; guidance mixes the two at sampling time.
#
# Try: `guidance` 1.5 or 7 in section 8; `DDPMSampler` with 1000 steps (`make_run_sampler(run, "ddpm",
# 1000)`); `model.base_channels=64` or `train.minutes=30` in `load_config`'s overrides (a new run
# folder); notebook 4 for classifier guidance and numbers that say how good the samples are.
