"""Metrics: distances between generated samples and their data.

- :mod:`ddpmlab.metrics.toy`: exact distances for low-dimensional data (Wasserstein, sliced
  Wasserstein, Kolmogorov-Smirnov, energy distance), their noise floors, and :func:`toy_metrics`.
"""

from ddpmlab.metrics.toy import (
    energy_distance,
    ks_statistic,
    noise_floor,
    sliced_wasserstein,
    toy_metrics,
    wasserstein_1d,
    wasserstein_1d_to_cdf,
)

__all__ = [
    "wasserstein_1d",
    "wasserstein_1d_to_cdf",
    "ks_statistic",
    "sliced_wasserstein",
    "energy_distance",
    "noise_floor",
    "toy_metrics",
]
