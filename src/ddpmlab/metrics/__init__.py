"""Metrics: distances between generated samples and their data.

- :mod:`ddpmlab.metrics.toy`: exact distances for low-dimensional data (Wasserstein, sliced
  Wasserstein, Kolmogorov-Smirnov, energy distance), their noise floors, and :func:`toy_metrics`.

Images are compared through features [N, D] made by a feature network (:mod:`.features`):

- :mod:`ddpmlab.metrics.distances`: :func:`frechet_distance` (FID on Inception features), with
  cacheable :class:`FeatureStats`, and :func:`kernel_inception_distance` (KID).
- :mod:`ddpmlab.metrics.manifold`: :func:`precision_recall` with k-NN manifolds.
- :mod:`ddpmlab.metrics.memorisation`: :func:`nearest_neighbours`, :func:`memorisation_report`,
  :func:`plot_closest_pairs`.
- :mod:`ddpmlab.metrics.summary`: :func:`real_floor`, :func:`compare_features` (every metric beside
  its real-vs-real floor, N, network and versions), :func:`class_accuracy`, :func:`class_coverage`.
- :mod:`ddpmlab.metrics.reading`: :func:`reading_accuracy` (exact-string and per-character accuracy of
  a reader's readings of text-conditional samples), :func:`edit_distance`.
- :mod:`ddpmlab.metrics.inception`: :func:`load_inception`, the standard FID network from a local
  weights file (optional extra ``ddpmlab[metrics]``).
"""

from ddpmlab.metrics.distances import FeatureStats, KIDResult, frechet_distance, kernel_inception_distance
from ddpmlab.metrics.features import FeatureNetwork, as_uint8_images, extract_features
from ddpmlab.metrics.inception import (
    INCEPTION_FILE,
    INCEPTION_NAME,
    INCEPTION_SHA256,
    INCEPTION_URL,
    FeatureNetworkError,
    InceptionFeatures,
    find_inception_weights,
    inception_input,
    inception_weights_dir,
    load_inception,
)
from ddpmlab.metrics.manifold import PrecisionRecall, knn_radii, precision_recall
from ddpmlab.metrics.memorisation import (
    MemorisationReport,
    NearestNeighbours,
    memorisation_report,
    nearest_neighbours,
    plot_closest_pairs,
)
from ddpmlab.metrics.reading import edit_distance, reading_accuracy
from ddpmlab.metrics.summary import (
    class_accuracy,
    class_coverage,
    compare_features,
    package_versions,
    real_floor,
)
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
    # toy data
    "wasserstein_1d",
    "wasserstein_1d_to_cdf",
    "ks_statistic",
    "sliced_wasserstein",
    "energy_distance",
    "noise_floor",
    "toy_metrics",
    # image features
    "FeatureNetwork",
    "as_uint8_images",
    "extract_features",
    "FeatureStats",
    "frechet_distance",
    "KIDResult",
    "kernel_inception_distance",
    "PrecisionRecall",
    "precision_recall",
    "knn_radii",
    "NearestNeighbours",
    "nearest_neighbours",
    "MemorisationReport",
    "memorisation_report",
    "plot_closest_pairs",
    "class_accuracy",
    "class_coverage",
    "reading_accuracy",
    "edit_distance",
    "package_versions",
    "real_floor",
    "compare_features",
    # the FID network
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "INCEPTION_SHA256",
    "INCEPTION_NAME",
    "FeatureNetworkError",
    "InceptionFeatures",
    "inception_weights_dir",
    "find_inception_weights",
    "inception_input",
    "load_inception",
]
