"""Noisy curves: points on plane curves blurred by Gaussian noise (moons, swiss roll, circles), with
their densities (by quadrature, or exact for circles). See :mod:`ddpmlab.data.toy`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddpmlab.data.distributions import ToyDataset, check_count, check_non_negative

__all__ = ["Curve", "NoisyCurves", "Circles"]


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
        self.noise = check_non_negative("noise", noise)
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
        n = check_count(n)
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
