"""The base of the toy datasets and the Gaussian mixture, with its exact noised marginals and its
exact optimal denoiser (see :mod:`ddpmlab.data.toy` for the whole family and the formulas)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch

from ddpmlab.diffusion import PREDICTION_TYPES
from ddpmlab.schedules import NoiseSchedule

__all__ = [
    "ToyDataset",
    "GaussianMixture",
    "OptimalDenoiser",
    "check_count",
    "check_positive",
    "check_non_negative",
]


def check_count(n: int, what: str = "the number of samples") -> int:
    """``n`` as an int >= 1, or a ValueError saying that ``what`` must be a positive integer."""
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be positive (at least 1), got {n}")
    return n


class ToyDataset:
    """The interface every toy dataset follows (a base class with the shared defaults).

    Attributes:
        name: a short label (the registry name for datasets built by :func:`make_toy_dataset`).
        dim: D, the dimension of a point.
        num_classes: the number of distinct labels, 0 when the dataset has none.
        has_density: whether :meth:`log_prob` is available.
    """

    name: str = "toy"
    has_density: bool = False

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return 0

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """n i.i.d. exact samples [n, D] (float32) and, if asked, their labels [n] (int64).

        All randomness comes from ``generator`` (a CPU ``torch.Generator``; the global one if None).
        Datasets without labels return all-zero labels, so callers can always unpack two values.
        """
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [N] (float64) at points x [N, D]."""
        raise NotImplementedError(f"the {self.name!r} toy dataset has no density (has_density is False)")

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        """p(x) [N] (float64) at points x [N, D]."""
        return self.log_prob(x).exp()

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        """x as float64 [N, D] on the CPU, with a clear error for the wrong shape."""
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        if self.dim == 1 and x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.name}: expected points of shape [N, {self.dim}], got {list(x.shape)}")
        return x


class GaussianMixture(ToyDataset):
    """A mixture of K isotropic Gaussians in D dimensions, sum_k w_k N(mu_k, s_k^2 I).

    A toy dataset whose labels are the component indices (``num_classes`` = K), with an exact density
    and, through :meth:`optimal_denoiser`, an exact denoiser.

    Args:
        means: [K, D] (or [K] for D = 1).
        stds: [K] standard deviations s_k.
        weights: [K] mixture weights (normalised here); uniform when None.
        name: a label for plots and metrics.
    """

    has_density = True

    def __init__(
        self,
        means: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
        stds: Sequence[float] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor | None = None,
        *,
        name: str = "mog",
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
            raise ValueError(
                f"need one std and one weight per component ({K}), got {stds.numel()} and {weights.numel()}"
            )
        if bool((stds <= 0).any()):
            raise ValueError("every std must be positive")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        self.means = means
        self.stds = stds
        self.weights = weights / weights.sum()
        self.name = name

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def num_classes(self) -> int:
        """K: the labels of :meth:`sample` are component indices."""
        return self.num_components

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """n exact samples [n, D] (float32), and their component labels [n] if asked."""
        n = check_count(n)
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

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """The distribution function F(x) = sum_k w_k Phi((x - mu_k) / s_k) [N] (float64); D = 1 only."""
        if self.dim != 1:
            raise ValueError(f"cdf is defined for one-dimensional mixtures only, this one has D = {self.dim}")
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)
        standardised = (x - self.means[:, 0]) / self.stds
        return (self.weights * torch.special.ndtr(standardised)).sum(-1)

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

    def optimal_denoiser(self, schedule: NoiseSchedule, prediction: str = "eps") -> OptimalDenoiser:
        """The exact minimiser of the DDPM loss for this mixture and (training) schedule, as a model.

        ``prediction`` is ``eps``, ``x0`` or ``v``; see :class:`OptimalDenoiser`.
        """
        return OptimalDenoiser(self, schedule, prediction)

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
        if prediction not in PREDICTION_TYPES:
            allowed = ", ".join(PREDICTION_TYPES)
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {allowed}")
        self.mixture = mixture
        self.schedule = schedule
        self.prediction = prediction

    def _eps_x0(
        self, x_t: torch.Tensor, t: int, mixture: GaussianMixture
    ) -> tuple[torch.Tensor, torch.Tensor]:
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


def check_non_negative(label: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    return value


def check_positive(label: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    return value
