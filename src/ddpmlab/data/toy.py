"""Low-dimensional data with exact samplers, densities and, for Gaussian mixtures, exact denoisers.

Every toy dataset is a :class:`ToyDataset`: it has a ``name``, a dimension ``dim``, a number of
classes ``num_classes`` (0 when it has no labels), an exact sampler ``sample(n, generator,
return_labels)`` that draws i.i.d. points [n, dim] (float32) and labels [n] (int64), and, when
``has_density`` is true, an exact ``log_prob(x)``. Build them by name with :func:`make_toy_dataset`:

=================  ======  =======  ==========================================================
name               dim     classes  distribution
=================  ======  =======  ==========================================================
``mog1d``          1       3        three Gaussians of different widths (:func:`mog1d`)
``mog2d``          2       8        Gaussians evenly spaced on a ring (:func:`mog2d`)
``moons``          2       2        two interleaving half circles, blurred (:func:`moons`)
``swiss_roll``     2       0        a 2-D swiss roll spiral, blurred (:func:`swiss_roll`)
``circles``        2       2        two concentric circles, blurred (:func:`circles`)
=================  ======  =======  ==========================================================

Training draws fresh exact samples at every step (infinite data, no epochs, no DataLoader)::

    dataset = make_toy_dataset("moons")
    generator = torch.Generator().manual_seed(0)
    x0, labels = dataset.sample(batch_size, generator, return_labels=True)   # [B, 2], [B]

For the curve datasets (moons, swiss roll, circles), ``noise`` is the standard deviation of the
isotropic Gaussian added to the *returned* coordinates, which are scaled to span roughly [-2, 2].
(scikit-learn adds its ``noise`` before any rescaling; its value is ours divided by the scale.)

A mixture of isotropic Gaussians stays a mixture of Gaussians under the forward process:
if x0 ~ sum_k w_k N(mu_k, s_k^2 I) then

    q(x_t) = sum_k w_k N(sqrt(alpha_bar_t) mu_k, (alpha_bar_t s_k^2 + 1 - alpha_bar_t) I),

so the score grad log q(x_t) and the optimal noise predictor (Tweedie's formula, also the minimiser of
the DDPM loss)

    eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log q(x_t)

are known in closed form. :class:`OptimalDenoiser` is that predictor as a model: it lets a learner
compare a trained network with the ideal one, and lets tests check samplers with no training at all.
Mixture datasets build it with ``dataset.optimal_denoiser(schedule)``.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddpmlab.diffusion import PREDICTION_TYPES
from ddpmlab.schedules import NoiseSchedule

__all__ = [
    "ToyDataset",
    "GaussianMixture",
    "OptimalDenoiser",
    "Curve",
    "NoisyCurves",
    "Circles",
    "mog1d",
    "mog2d",
    "moons",
    "swiss_roll",
    "circles",
    "make_toy_dataset",
    "toy_dataset_names",
]

def _check_count(n: int) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"the number of samples must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"the number of samples must be positive, got {n}")
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
        n = _check_count(n)
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


# --------------------------------------------------------------------------------------------------
# Noisy curves: moons, swiss roll, circles.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A parametrised plane curve u -> gamma(u), u in [low, high].

    Args:
        point: gamma, mapping parameters u [N] (float64) to points [N, 2] (float64).
        low, high: the parameter range; :class:`NoisyCurves` draws u uniformly from it.
    """

    point: Callable[[torch.Tensor], torch.Tensor]
    low: float
    high: float

    @property
    def length(self) -> float:
        """The length of the parameter range, high - low (not the arc length)."""
        return self.high - self.low

    def max_speed(self, num_points: int = 10_001) -> float:
        """An estimate of max_u |gamma'(u)| from finite differences (sets the quadrature step)."""
        u = torch.linspace(self.low, self.high, num_points, dtype=torch.float64)
        points = self.point(u)
        steps = (points[1:] - points[:-1]).norm(dim=-1) / (u[1:] - u[:-1])
        return float(steps.max())


class NoisyCurves(ToyDataset):
    """Points spread along C plane curves and blurred by isotropic Gaussian noise:

        c ~ Categorical(w),  u ~ Uniform[low_c, high_c],  x = gamma_c(u) + sigma * eps,  eps ~ N(0, I_2),

    with sigma = ``noise``. The label of a point is its curve c (when ``labelled``). The density is the
    noise kernel averaged along the curves,

        p(x) = sum_c w_c / (high_c - low_c) * int_{low_c}^{high_c} N(x; gamma_c(u), sigma^2 I) du,

    which has no closed form for a general curve: for an arc of a circle it is an incomplete
    von Mises (Bessel-type) integral, for a spiral the radius varies with u as well. It is a smooth
    one-dimensional integral, though, so :meth:`log_prob` evaluates it numerically exactly with
    composite Gauss-Legendre quadrature: panels no longer than 2 sigma in arc length, 8 nodes each, so
    that the Gaussian bump around every point is resolved. Near the data (log p above about -100) the
    error in log p is below 1e-10; far out in the tails, where the bump along the curve gets narrower
    than a panel, it grows (e.g. 0.04 at a log p of -1600). With ``noise`` = 0 all the mass lies on the
    curves and there is no density.
    """

    NODES_PER_PANEL = 8

    def __init__(
        self,
        name: str,
        curves: Sequence[Curve],
        noise: float,
        weights: Sequence[float] | None = None,
        labelled: bool = True,
    ) -> None:
        if not curves:
            raise ValueError("NoisyCurves needs at least one curve")
        self.name = name
        self.curves = tuple(curves)
        self.noise = _check_non_negative("noise", noise)
        count = len(self.curves)
        weights = torch.full((count,), 1.0 / count, dtype=torch.float64) if weights is None else (
            torch.as_tensor(weights, dtype=torch.float64).flatten()
        )
        if weights.shape != (count,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"need {count} non-negative weights, not all zero")
        self.weights = weights / weights.sum()
        self.labelled = labelled
        self.has_density = self.noise > 0
        self._nodes: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        return 2

    @property
    def num_classes(self) -> int:
        return len(self.curves) if self.labelled else 0

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """n exact samples [n, 2] (float32) and, if asked, their curve labels [n] (int64; zeros when the
        dataset is unlabelled)."""
        n = _check_count(n)
        if len(self.curves) == 1:
            curve_index = torch.zeros(n, dtype=torch.int64)
        else:
            curve_index = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        fraction = torch.rand(n, generator=generator, dtype=torch.float64)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x = torch.empty(n, 2, dtype=torch.float64)
        for index, curve in enumerate(self.curves):
            on_curve = curve_index == index
            x[on_curve] = curve.point(curve.low + curve.length * fraction[on_curve])
        x = (x + self.noise * noise).float()
        if not return_labels:
            return x
        return x, (curve_index if self.labelled else torch.zeros(n, dtype=torch.int64))

    def quadrature_nodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes gamma_c(u_j) [M, 2] and log weights [M] such that
        p(x) = sum_j exp(log_weight_j) N(x; node_j, sigma^2 I), as used by :meth:`log_prob`."""
        if self._nodes is None:
            reference, reference_weights = np.polynomial.legendre.leggauss(self.NODES_PER_PANEL)
            all_points, all_log_weights = [], []
            for curve, curve_weight in zip(self.curves, self.weights.tolist(), strict=True):
                panels = max(1, math.ceil(curve.length * curve.max_speed() / (2 * self.noise)))
                edges = np.linspace(curve.low, curve.high, panels + 1)
                half = (edges[1:] - edges[:-1])[:, None] / 2
                u = (edges[:-1, None] + half * (reference[None] + 1)).ravel()
                du = (half * reference_weights[None]).ravel()
                all_points.append(curve.point(torch.from_numpy(u)))
                all_log_weights.append(torch.from_numpy(np.log(curve_weight * du / curve.length)))
            self._nodes = torch.cat(all_points), torch.cat(all_log_weights)
        return self._nodes

    def quadrature_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [N] (float64) at points x [N, 2] by the quadrature described in the class docstring."""
        self._require_density()
        x = self._points(x)
        nodes, log_weights = self.quadrature_nodes()
        variance = self.noise**2
        # -|x - node|^2 / (2 sigma^2) = (x . node - |node|^2 / 2 - |x|^2 / 2) / sigma^2: one matrix product
        # per chunk, and the |x|^2 term comes out of the log-sum-exp.
        offsets = log_weights - 0.5 * nodes.square().sum(-1) / variance
        out = torch.empty(len(x), dtype=torch.float64)
        chunk = max(1, 2**22 // len(nodes))
        for start in range(0, len(x), chunk):
            block = x[start : start + chunk]
            logits = torch.addmm(offsets, block, nodes.T, alpha=1.0 / variance)
            squared_norms = block.square().sum(-1)
            out[start : start + chunk] = torch.logsumexp(logits, dim=1) - 0.5 * squared_norms / variance
        return out - math.log(2 * math.pi * variance)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [N] (float64) at points x [N, 2]; raises NotImplementedError when ``noise`` = 0."""
        return self.quadrature_log_prob(x)

    def _require_density(self) -> None:
        if not self.has_density:
            raise NotImplementedError(
                f"the {self.name!r} toy dataset has no density with noise = 0: all of its mass lies on curves"
            )

    def __repr__(self) -> str:
        return f"NoisyCurves(name={self.name!r}, curves={len(self.curves)}, noise={self.noise:g})"


class Circles(NoisyCurves):
    """Concentric circles of radii r_c, u = the angle, uniform on [0, 2 pi). The density has a closed
    form: averaging N(x; r (cos u, sin u), sigma^2 I) over u gives, with rho = |x|,

        p(x) = sum_c w_c / (2 pi sigma^2) exp(-(rho^2 + r_c^2) / (2 sigma^2)) I_0(r_c rho / sigma^2),

    I_0 the modified Bessel function of the first kind; it is evaluated as exp(-(rho - r_c)^2 / (2 sigma^2))
    * i0e(r_c rho / sigma^2) so that nothing overflows.
    """

    def __init__(self, name: str, radii: Sequence[float], noise: float) -> None:
        self.radii = torch.as_tensor(radii, dtype=torch.float64)
        super().__init__(name, [_circle(float(radius)) for radius in self.radii], noise)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [N] (float64) at points x [N, 2], in closed form."""
        self._require_density()
        rho = self._points(x).norm(dim=-1, keepdim=True)
        variance = self.noise**2
        per_circle = (
            self.weights.log()
            - (rho - self.radii) ** 2 / (2 * variance)
            + torch.special.i0e(self.radii * rho / variance).log()
        )
        return torch.logsumexp(per_circle, dim=-1) - math.log(2 * math.pi * variance)


def _circle(radius: float) -> Curve:
    def point(u: torch.Tensor) -> torch.Tensor:
        return radius * torch.stack([torch.cos(u), torch.sin(u)], dim=-1)

    return Curve(point, 0.0, 2 * math.pi)


def _check_non_negative(label: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    return value


def _check_positive(label: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------
# The named toy datasets.
# --------------------------------------------------------------------------------------------------

MOONS_SCALE = 4.0 / 3.0
"""scikit-learn's moons span [-1, 2] x [-0.5, 1]; centred at (0.5, 0.25) and scaled by 4/3 they span
[-2, 2] x [-1, 1] (before noise), with mean 0 and a per-coordinate variance of about 0.9."""

SWISS_ROLL_SCALE = 5.0
"""(t cos t, t sin t) for t in [1.5 pi, 4.5 pi] spans about [-9.4, 12.6] x [-14.1, 7.9]; divided by 5 it
spans about [-1.9, 2.5] x [-2.8, 1.6] (the scaling used by FFJORD's toy data)."""

CIRCLES_RADIUS = 2.0
"""The radius of the outer circle; the inner one has radius ``factor`` times this."""


def mog1d(
    means: Sequence[float] = (-3.0, 0.0, 4.0),
    stds: Sequence[float] = (0.5, 1.0, 0.3),
    weights: Sequence[float] = (0.3, 0.5, 0.2),
) -> GaussianMixture:
    """A one-dimensional mixture sum_k w_k N(mu_k, s_k^2); labels are component indices.

    The default has three components of different widths and weights, so a sampler must get both the
    positions and the relative masses (and the narrow component at 4) right.
    """
    means = torch.as_tensor(means, dtype=torch.float64)
    if means.ndim != 1:
        raise ValueError(f"mog1d means must be a flat list of numbers, got shape {list(means.shape)}")
    return GaussianMixture(means, stds, weights, name="mog1d")


def mog2d(num_components: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
    """K equally weighted Gaussians N(mu_k, std^2 I) with means evenly spaced on a circle:
    mu_k = radius (cos 2 pi k / K, sin 2 pi k / K), k = 0..K-1; labels are k."""
    try:
        num_components = operator.index(num_components)
    except TypeError:
        raise ValueError(f"num_components must be an integer, got {num_components!r}") from None
    if num_components < 1:
        raise ValueError(f"num_components must be at least 1, got {num_components}")
    radius = _check_positive("radius", radius)
    std = _check_positive("std", std)
    angles = 2 * math.pi * torch.arange(num_components, dtype=torch.float64) / num_components
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return GaussianMixture(means, torch.full((num_components,), std), name="mog2d")


def moons(noise: float = 0.05) -> NoisyCurves:
    """Two interleaving half circles (scikit-learn's ``make_moons``, centred and scaled by 4/3), each
    drawn with probability 1/2 and a uniform angle u in [0, pi]:

        upper moon (label 0):  gamma_0(u) = 4/3 (cos u - 1/2, sin u - 1/4)
        lower moon (label 1):  gamma_1(u) = -gamma_0(u)

    plus N(0, noise^2 I). Radius 4/3 each; the data spans about [-2, 2] x [-1, 1] and has mean 0.
    The density is computed by quadrature (see :class:`NoisyCurves`).
    """

    def upper(u: torch.Tensor) -> torch.Tensor:
        return MOONS_SCALE * torch.stack([torch.cos(u) - 0.5, torch.sin(u) - 0.25], dim=-1)

    def lower(u: torch.Tensor) -> torch.Tensor:
        return -upper(u)

    return NoisyCurves("moons", [Curve(upper, 0.0, math.pi), Curve(lower, 0.0, math.pi)], noise)


def swiss_roll(noise: float = 0.25) -> NoisyCurves:
    """The 2-D swiss roll (the (x, z) plane of scikit-learn's ``make_swiss_roll``), unlabelled:

        t ~ Uniform[1.5 pi, 4.5 pi],  x = (t cos t, t sin t) / 5 + N(0, noise^2 I).

    One and a half turns of a spiral whose radius t / 5 grows from 0.94 to 2.83; neighbouring arms are
    2 pi / 5 = 1.26 apart. The density is computed by quadrature (see :class:`NoisyCurves`).
    """

    def spiral(t: torch.Tensor) -> torch.Tensor:
        return t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=-1) / SWISS_ROLL_SCALE

    return NoisyCurves("swiss_roll", [Curve(spiral, 1.5 * math.pi, 4.5 * math.pi)], noise, labelled=False)


def circles(factor: float = 0.5, noise: float = 0.05) -> Circles:
    """Two concentric circles (scikit-learn's ``make_circles``, scaled by 2), each drawn with probability
    1/2 and a uniform angle: the outer one (label 0) of radius 2, the inner one (label 1) of radius
    2 * factor, plus N(0, noise^2 I). The density is exact (see :class:`Circles`)."""
    factor = float(factor)
    if not 0 < factor < 1:
        raise ValueError(f"factor (inner radius / outer radius) must lie in (0, 1), got {factor!r}")
    return Circles("circles", [CIRCLES_RADIUS, CIRCLES_RADIUS * factor], noise)


_TOY_DATASETS: dict[str, Callable[..., ToyDataset]] = {
    "mog1d": mog1d,
    "mog2d": mog2d,
    "moons": moons,
    "swiss_roll": swiss_roll,
    "circles": circles,
}


def toy_dataset_names() -> tuple[str, ...]:
    """The names :func:`make_toy_dataset` understands."""
    return tuple(_TOY_DATASETS)


def make_toy_dataset(name: str, **options: object) -> ToyDataset:
    """Build a toy dataset by name, e.g. ``make_toy_dataset("moons", noise=0.1)``.

    Args:
        name: one of :func:`toy_dataset_names`.
        options: keyword arguments of that dataset's builder (:func:`mog1d`, :func:`mog2d`, :func:`moons`,
            :func:`swiss_roll`, :func:`circles`).

    Raises:
        ValueError: for an unknown name, an unknown option (the message lists the allowed ones) or a
            bad option value.
    """
    if name not in _TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(_TOY_DATASETS)}")
    builder = _TOY_DATASETS[name]
    allowed = list(inspect.signature(builder).parameters)
    unknown = [option for option in options if option not in allowed]
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for toy dataset {name!r}; allowed: {', '.join(allowed)}"
        )
    try:
        return builder(**options)
    except TypeError as error:  # e.g. a string where a number belongs
        raise ValueError(f"toy dataset {name!r}: {error}") from None
