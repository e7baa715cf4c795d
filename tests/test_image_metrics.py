"""Image metrics on features: closed forms, independent computations, synthetic sets with known answers.

Frechet distance against the closed form between Gaussians (and a second, SVD-based formula for
covariances of fewer vectors than dimensions), KID against a brute-force loop and the linear kernel's
closed form, both against torchmetrics with a custom feature module (skipped when it is not
installed); precision / recall on sets whose answer is known and against a brute-force computation;
nearest neighbours and memorisation on a planted copy; floors and the report.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from ddpmlab.metrics import (
    INCEPTION_NAME,
    FeatureStats,
    class_accuracy,
    compare_features,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    memorisation_report,
    nearest_neighbours,
    package_versions,
    plot_closest_pairs,
    precision_recall,
    real_floor,
)


def gaussian(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


def random_cov(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def closed_form_fd(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """|m1 - m2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) with SciPy's general (Schur) matrix square root."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root).real)


# --------------------------------------------------------------------------------------------------
# Frechet distance.
# --------------------------------------------------------------------------------------------------


def test_fd_of_stats_matches_the_closed_form_for_diagonal_covariances() -> None:
    # Commuting covariances: sqrt(S1 S2) = diag(sqrt(a b)), so FD = |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 4.0, 16), rng.uniform(0.1, 4.0, 16)
    m1, m2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    value = frechet_distance(FeatureStats(m1, np.diag(a), 100), FeatureStats(m2, np.diag(b), 100))
    assert value == pytest.approx(expected, rel=1e-12)


def test_fd_of_stats_matches_scipy_sqrtm_for_full_covariances() -> None:
    d = 24
    s1, s2 = random_cov(d, 1), random_cov(d, 2)
    m1, m2 = np.random.default_rng(3).normal(size=(2, d))
    value = frechet_distance(FeatureStats(m1, s1, 10), FeatureStats(m2, s2, 10))
    assert value == pytest.approx(closed_form_fd(m1, s1, m2, s2), rel=1e-10)
    assert frechet_distance(FeatureStats(m2, s2, 10), FeatureStats(m1, s1, 10)) == pytest.approx(
        value, rel=1e-10
    )


def test_fd_of_large_gaussian_samples_approaches_the_closed_form() -> None:
    d = 3
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.25])
    s1, s2 = random_cov(d, 4), random_cov(d, 5)
    expected = closed_form_fd(m1, s1, m2, s2)
    x, y = gaussian(200_000, m1, s1, 6), gaussian(200_000, m2, s2, 7)
    # The plug-in estimate's error at this N is ~1e-2 (sampling) + ~1e-5 (bias).
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.03)
    # FeatureStats and raw features give the same number.
    assert frechet_distance(FeatureStats.from_features(x), y) == pytest.approx(
        frechet_distance(x, y), rel=1e-12
    )


@pytest.mark.parametrize(("n", "d"), [(500, 16), (100, 256)])  # the second covariance has rank 99 < 256
def test_fd_of_a_set_with_itself_is_zero(n: int, d: int) -> None:
    x = torch.from_numpy(np.random.default_rng(8).gamma(1.0, size=(n, d)))  # >= 0, like pooled activations
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x.float(), x[torch.randperm(n)]) == pytest.approx(0.0, abs=1e-6)


def test_fd_with_fewer_vectors_than_dimensions_matches_the_svd_formula() -> None:
    # With centred data A [n1, D], B [n2, D]: S_a S_b has the nonzero eigenvalues of (A B^T)^T (A B^T) / c,
    # c = (n1 - 1)(n2 - 1), so Tr((S_a S_b)^{1/2}) is the nuclear norm of A B^T over sqrt(c): an
    # independent formula, exact for rank-deficient covariances where sqrtm struggles.
    rng = np.random.default_rng(9)
    x, y = rng.gamma(1.0, size=(60, 200)), rng.gamma(1.2, size=(80, 200))
    a, b = x - x.mean(0), y - y.mean(0)
    trace_root = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(59 * 79)
    cov_a, cov_b = a.T @ a / 59, b.T @ b / 79
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_feature_stats_round_trip_and_checks(tmp_path) -> None:
    x = np.random.default_rng(10).normal(size=(50, 6))
    stats = FeatureStats.from_features(x, network="judge")
    assert stats.n == 50 and stats.dim == 6
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-12)
    loaded = FeatureStats.load(stats.save(tmp_path / "stats" / "real.npz"))
    assert (loaded.n, loaded.network) == (50, "judge")
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    with pytest.raises(ValueError, match="different feature networks"):
        frechet_distance(loaded, FeatureStats(stats.mean, stats.cov, 50, network="inception"))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(x, x[:, :5])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 6), np.nan), x)


# --------------------------------------------------------------------------------------------------
# Kernel distance.
# --------------------------------------------------------------------------------------------------


def brute_force_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    m, d = x.shape

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return (u @ v / d + coef0) ** degree

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * cross / m**2


def test_kid_of_whole_sets_matches_a_brute_force_loop() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(7, 3))
    # subset_size = N: every subset is the whole set, so every value is the full-set estimate.
    result = kernel_inception_distance(x, y, subsets=3, subset_size=7)
    assert result.mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)
    assert result.std == pytest.approx(0.0, abs=1e-12)
    assert (result.subsets, result.subset_size) == (3, 7)


def test_kid_with_a_linear_kernel_estimates_the_squared_mean_difference() -> None:
    # With k(x, y) = x.y the population MMD^2 is |mu_x - mu_y|^2, and the estimator is unbiased.
    rng = np.random.default_rng(12)
    shift = np.array([1.0, -0.5, 0.0])
    x, y = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) + shift
    result = kernel_inception_distance(x, y, subsets=1, subset_size=4000, degree=1, gamma=1.0, coef0=0.0)
    assert result.mean == pytest.approx(float(shift @ shift), abs=0.1)  # ~3 standard errors


def test_kid_is_about_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    same = kernel_inception_distance(x, y, subsets=20, subset_size=500)
    shifted = kernel_inception_distance(x, y + 0.3, subsets=20, subset_size=500)
    assert abs(same.mean) < 3 * same.std
    assert shifted.mean > 10 * (abs(same.mean) + same.std)
    # A set against itself: not exactly 0, since the within-set sums skip the pairs (i, i) that the cross
    # sum keeps; the difference, 2 (mean k(x, x') - mean k(x, x)) / m, is O(1/m) and negative.
    itself = kernel_inception_distance(x, x, subsets=2, subset_size=1000)
    assert -0.1 * shifted.mean < itself.mean < 0
    # The seed decides the subsets.
    assert kernel_inception_distance(x, y, 5, 300, seed=1) == kernel_inception_distance(x, y, 5, 300, seed=1)
    assert kernel_inception_distance(x, y, 5, 300, seed=1) != kernel_inception_distance(x, y, 5, 300, seed=2)


def test_kid_rejects_bad_subsets() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="subset_size=min"):
        kernel_inception_distance(x, x, subset_size=11)
    with pytest.raises(ValueError, match="subsets must be positive"):
        kernel_inception_distance(x, x, subsets=0, subset_size=5)


# --------------------------------------------------------------------------------------------------
# Parity with torchmetrics (an independent implementation), through a custom feature module.
# --------------------------------------------------------------------------------------------------


class _Identity(torch.nn.Module):
    """A 'feature network' returning its input, so that torchmetrics measures our features directly."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fd_matches_torchmetrics() -> None:
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(14)
    x = torch.from_numpy(rng.gamma(1.0, size=(400, 8)))
    y = torch.from_numpy(rng.gamma(1.3, size=(300, 8)) + 0.2)
    metric = fid_module.FrechetInceptionDistance(feature=_Identity(8))
    metric.update(x, real=True)
    metric.update(y, real=False)
    assert frechet_distance(x, y) == pytest.approx(float(metric.compute()), rel=1e-9)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
def test_kid_matches_torchmetrics() -> None:
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(15)
    x = torch.from_numpy(rng.gamma(1.0, size=(200, 8)))
    y = torch.from_numpy(rng.gamma(1.3, size=(200, 8)))
    # subset_size = N makes torchmetrics' random subsets whole sets, so both compute the same numbers.
    metric = kid_module.KernelInceptionDistance(feature=_Identity(8), subsets=3, subset_size=200)
    metric.update(x, real=True)
    metric.update(y, real=False)
    mean, std = metric.compute()
    ours = kernel_inception_distance(x, y, subsets=3, subset_size=200)
    assert ours.mean == pytest.approx(float(mean), rel=1e-9)
    assert ours.std == pytest.approx(float(std), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Precision and recall.
# --------------------------------------------------------------------------------------------------


def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    cross = np.sqrt(((fake[:, None] - real[None]) ** 2).sum(-1))  # [N_g, N_r]
    precision = (cross <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cross <= radii(fake)[:, None]).any(axis=0).mean()
    return float(precision), float(recall)


def test_precision_recall_on_a_hand_computed_case() -> None:
    # k = 1: every real point's radius is 1; both fakes have radius 9.5 (their distance).
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    np.testing.assert_allclose(knn_radii(real, k=2).numpy(), [2.0, 1.0, 1.0, 2.0])


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_precision_recall_match_a_brute_force_computation(batch_size: int | None) -> None:
    rng = np.random.default_rng(16)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.4, 1.2, size=(45, 5))
    expected = brute_force_precision_recall(real, fake, k=3)
    assert 0.1 < expected[0] < 0.99 and 0.1 < expected[1] < 0.99  # a case where both can fail
    assert precision_recall(real, fake, k=3, batch_size=batch_size) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_of_identical_disjoint_and_nested_supports() -> None:
    rng = np.random.default_rng(17)
    real = rng.normal(size=(500, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, rng.normal(size=(400, 8)) + 100.0) == (0.0, 0.0)
    # One set a subset of the other: two far-apart clusters, and the points of one of them. Points
    # shared by both sets are inside (distance 0); the other cluster is 40 away from every ball.
    centres = np.where(rng.random(1000) < 0.5, -20.0, 20.0)[:, None]
    two_modes = rng.normal(size=(1000, 8)) + centres
    one_mode = two_modes[centres[:, 0] > 0]
    share = len(one_mode) / len(two_modes)
    assert precision_recall(two_modes, one_mode) == (1.0, share)  # realistic, but half the modes missing
    assert precision_recall(one_mode, two_modes) == (share, 1.0)  # everything covered, half unrealistic


def test_precision_recall_check_k() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(np.zeros((3, 2)), np.ones((10, 2)), k=3)


# --------------------------------------------------------------------------------------------------
# Nearest neighbours and memorisation.
# --------------------------------------------------------------------------------------------------


def test_nearest_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(18)
    queries, references = rng.normal(size=(70, 12)), rng.normal(size=(90, 12))
    found = nearest_neighbours(queries, references, batch_size=16)
    d = np.sqrt(((queries[:, None] - references[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(found.indices.numpy(), d.argmin(axis=1))
    np.testing.assert_allclose(found.distances.numpy(), d.min(axis=1), rtol=1e-12)


def planted_copy_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images [N, 8, 8, 1]: 300 training, 100 held-out, 40 samples of which sample 3 is train[17]."""
    rng = np.random.default_rng(19)
    images = rng.integers(0, 256, size=(440, 8, 8, 1), dtype=np.uint8)
    train, heldout, samples = images[:300], images[300:400], images[400:].copy()
    samples[3] = train[17]
    return train, heldout, samples


def test_memorisation_finds_and_flags_a_planted_copy(tmp_path) -> None:
    train, heldout, samples = planted_copy_images()
    report = memorisation_report(samples, train, heldout, quantile=0.05)
    assert report.distances[3] == 0.0 and report.indices[3] == 17
    assert report.flagged[3] and report.threshold > 0
    assert report.fraction >= 1 / len(samples)
    assert report.heldout_fraction == pytest.approx(0.05, abs=0.02)  # the floor is q by construction
    summary = report.summary()
    assert summary["min_distance"] == 0.0 and (summary["n_samples"], summary["n_train"]) == (40, 300)
    json.dumps(summary)
    # Pixel distances are in 0..255 units: the same as NumPy's on the flattened images.
    expected = np.sqrt(((samples[5].astype(float) - train[report.indices[5]].astype(float)) ** 2).sum())
    assert report.distances[5] == pytest.approx(expected, rel=1e-12)

    path = plot_closest_pairs(
        samples,
        train,
        report.distances,
        report.indices,
        tmp_path / "pairs.png",
        num=4,
        threshold=report.threshold,
    )
    with Image.open(path) as picture:
        assert picture.width > picture.height > 0


def test_memorisation_rejects_bad_inputs() -> None:
    train, heldout, samples = planted_copy_images()
    with pytest.raises(ValueError, match="quantile"):
        memorisation_report(samples, train, heldout, quantile=1.0)
    with pytest.raises(ValueError, match="different dimensions"):
        nearest_neighbours(samples[:, :4], train)
    with pytest.raises(ValueError, match="uint8"):
        plot_closest_pairs(samples.astype(np.float32), train, np.zeros(40), np.zeros(40, dtype=int), "x.png")


# --------------------------------------------------------------------------------------------------
# Accuracy, floors, the report.
# --------------------------------------------------------------------------------------------------


def test_class_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0], [0.0, 5.0]])
    assert class_accuracy(logits, torch.tensor([0, 1, 1, 1])) == 0.75
    assert class_accuracy(np.array([3, 1, 2]), np.array([3, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels must be"):
        class_accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="predictions must be"):
        class_accuracy(torch.tensor([0.5, 1.0]), torch.tensor([0, 1]))


def test_real_floor_compares_two_disjoint_seeded_halves() -> None:
    real = torch.arange(100, dtype=torch.float64)[:, None].repeat(1, 3)
    seen = []

    def metric(a: torch.Tensor, b: torch.Tensor) -> float:
        seen.append((set(a[:, 0].tolist()), set(b[:, 0].tolist())))
        return float(len(a) + len(b))

    assert real_floor(metric, real, 30, seed=0) == 60.0
    held, reference = seen[-1]
    assert len(held) == len(reference) == 30 and not held & reference
    real_floor(metric, real, 30, seed=0)
    assert seen[-1] == seen[0]  # the seed decides the split
    real_floor(metric, real, 30, seed=1)
    assert seen[-1] != seen[0]
    assert real_floor(metric, real, 30, reference_size=70) == 100.0
    with pytest.raises(ValueError, match="needs 101 real vectors"):
        real_floor(metric, real, 30, reference_size=71)


def test_compare_features_reports_each_metric_beside_its_floor() -> None:
    rng = np.random.default_rng(20)
    real = rng.gamma(1.0, size=(700, 8))
    good, bad = rng.gamma(1.0, size=(200, 8)), rng.gamma(1.0, size=(200, 8)) * 1.5 + 0.3
    result = compare_features(good, real, "judge (8)", kid_subsets=10)
    json.dumps(result)
    assert (result["n"], result["n_reference"], result["feature_network"], result["fd_label"]) == (
        200,
        500,
        "judge (8)",
        "FD",
    )
    assert result["kid_subset_size"] == 200 and result["versions"]["torch"] == torch.__version__
    # Samples of the real distribution score like real data; shifted ones are well above the floors.
    assert result["fd"] < 3 * result["fd_floor"] + 0.05
    worse = compare_features(bad, real, INCEPTION_NAME, kid_subsets=10)
    assert worse["fd_label"] == "FID"
    assert worse["fd_floor"] == result["fd_floor"] and worse["kid_floor"] == result["kid_floor"]
    assert worse["fd"] > 10 * worse["fd_floor"] and worse["kid"] > 10 * abs(worse["kid_floor"])
    assert worse["precision"] < worse["precision_floor"]
    with pytest.raises(ValueError, match="must be larger than the samples"):
        compare_features(good, real[:202], "judge")


def test_extract_features_batches_any_network() -> None:
    class MeanPixels:
        name = "mean pixels"

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            return images.float().mean(dim=(1, 2))  # [B, C]

    images = np.random.default_rng(21).integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    features = extract_features(images, MeanPixels(), batch_size=3)
    assert features.dtype == torch.float32 and features.shape == (10, 3)
    np.testing.assert_allclose(features.numpy(), images.mean(axis=(1, 2)), rtol=1e-6)
    assert extract_features(images[..., 0], MeanPixels()).shape == (10, 1)  # grey [N, H, W]
    with pytest.raises(ValueError, match="uint8"):
        extract_features(images.astype(np.float32), MeanPixels())


def test_package_versions_name_the_numeric_packages() -> None:
    versions = package_versions()
    assert {"python", "torch", "numpy", "scipy"} <= set(versions)
