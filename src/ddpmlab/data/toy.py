"""Low-dimensional data with exact samplers, densities and, for Gaussian mixtures, exact denoisers.

A mixture of isotropic Gaussians stays a mixture of Gaussians under the forward process:
if x0 ~ sum_k w_k N(mu_k, s_k^2 I) then

    q(x_t) = sum_k w_k N(sqrt(alpha_bar_t) mu_k, (alpha_bar_t s_k^2 + 1 - alpha_bar_t) I),

so the score grad log q(x_t) and the optimal noise predictor (Tweedie's formula, also the minimiser of
the DDPM loss)

    eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log q(x_t)

are known in closed form. :class:`OptimalDenoiser` is that predictor as a model: it lets a learner
compare a trained network with the ideal one, and lets tests check samplers with no training at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ddpmlab.schedules import NoiseSchedule

__all__ = ["GaussianMixture", "OptimalDenoiser"]


class GaussianMixture:
    """A mixture of K isotropic Gaussians in D dimensions, sum_k w_k N(mu_k, s_k^2 I).

    Args:
        means: [K, D] (or [K] for D = 1).
        stds: [K] standard deviations s_k.
        weights: [K] mixture weights (normalised here); uniform when None.
    """

    def __init__(
        self,
        means: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
        stds: Sequence[float] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2:
            raise ValueError(f"means must be [K] or [K, D], got shape {list(means.shape)}")
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).flatten()
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64
        ).flatten()
        if stds.numel() == 1:
            stds = stds.expand(K).clone()
        if stds.shape != (K,) or weights.shape != (K,):
            raise ValueError(f"need one std and one weight per component ({K}), got {stds.numel()} and {weights.numel()}")
        if bool((stds <= 0).any()):
            raise ValueError("every std must be positive")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        self.means = means
        self.stds = stds
        self.weights = weights / weights.sum()

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """n exact samples [n, D] (float32), and their component labels [n] if asked."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[labels] + self.stds[labels, None] * noise
        x = x.float()
        return (x, labels) if return_labels else x

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, s_k^2 I) for every point and component: [N, K] (float64)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim)
        squared = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        variances = self.stds**2
        log_normal = -0.5 * squared / variances - 0.5 * self.dim * torch.log(2 * math.pi * variances)
        return self.weights.log() + log_normal

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density [N] at points x [N, D] (or [N] for D = 1)."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x).exp()

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(component k | x): [N, K]."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x): [N, D] (float64)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim)
        per_component = -(x[:, None, :] - self.means[None]) / (self.stds**2)[None, :, None]
        return (self.responsibilities(x)[..., None] * per_component).sum(1)

    def noised(self, alpha_bar: float) -> GaussianMixture:
        """The marginal q(x_t) when x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
        alpha_bar = float(alpha_bar)
        stds = torch.sqrt(alpha_bar * self.stds**2 + (1.0 - alpha_bar))
        return GaussianMixture(math.sqrt(alpha_bar) * self.means, stds, self.weights)

    def component(self, k: int) -> GaussianMixture:
        """Component k alone, as a one-component mixture."""
        return GaussianMixture(self.means[k : k + 1], self.stds[k : k + 1])

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def variance(self) -> torch.Tensor:
        """The per-dimension variance [D] of the mixture."""
        second = (self.weights[:, None] * (self.means**2 + self.stds[:, None] ** 2)).sum(0)
        return second - self.mean() ** 2

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, D={self.dim})"


class OptimalDenoiser(torch.nn.Module):
    """The exact minimiser of the DDPM loss for mixture data: eps*(x_t, t) = -sqrt(1 - alpha_bar_t) score.

    A model like any other: ``model(x_t, t, cond=None)`` with x_t [B, D] and original timesteps t [B].
    With ``cond`` (component indices [B]) it is the optimal denoiser of each sample's own component, the
    ideal class-conditional model. ``prediction`` picks the output: ``eps``, ``x0`` or ``v``.
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule, prediction: str = "eps") -> None:
        super().__init__()
        if schedule.is_respaced:
            raise ValueError("OptimalDenoiser needs the training schedule, not a respaced one")
        self.mixture = mixture
        self.schedule = schedule
        self.prediction = prediction

    def _eps_x0(self, x_t: torch.Tensor, t: int, mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_bar = float(self.schedule.alphas_cumprod[t])
        score = mixture.noised(alpha_bar).score(x_t)
        eps = -math.sqrt(1.0 - alpha_bar) * score
        x0 = (x_t.double() - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        return eps, x0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = x_t.reshape(x_t.shape[0], -1).double()
        eps = torch.empty_like(x)
        x0 = torch.empty_like(x)
        groups = [(None, torch.ones(len(x), dtype=torch.bool))] if cond is None else [
            (int(k), (cond == k).cpu()) for k in torch.unique(cond)
        ]
        for timestep in torch.unique(t.cpu()):
            at_t = (t.cpu() == timestep)
            for component, in_group in groups:
                mask = at_t & in_group
                if not bool(mask.any()):
                    continue
                mixture = self.mixture if component is None else self.mixture.component(component)
                mask = mask.to(x.device)
                eps[mask], x0[mask] = self._eps_x0(x[mask], int(timestep), mixture)
        if self.prediction == "eps":
            out = eps
        elif self.prediction == "x0":
            out = x0
        else:
            alpha_bar = self.schedule.alphas_cumprod[t.cpu()].to(x)[:, None]
            out = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
        return out.to(x_t.dtype).reshape(x_t.shape)
