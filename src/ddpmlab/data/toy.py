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
from collections.abc import Callable, Sequence

import torch

from ddpmlab.data.curves import Circles, Curve, NoisyCurves
from ddpmlab.data.distributions import (
    GaussianMixture,
    OptimalDenoiser,
    ToyDataset,
    check_count,
    check_positive,
)

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
    num_components = check_count(num_components, "num_components")
    radius = check_positive("radius", radius)
    std = check_positive("std", std)
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
