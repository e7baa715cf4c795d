"""Noise schedules: named builders, derived quantities, custom schedules, validation, respacing."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from ddpmlab.schedules import (
    MAX_BETA,
    NoiseSchedule,
    ScheduleError,
    make_schedule,
    respace,
    respaced_timesteps,
    schedule_names,
    structure_timesteps,
)

NAMES = ("linear", "cosine", "quadratic", "sigmoid")
SPACINGS = ("trailing", "linspace", "leading")
FLOAT_FIELDS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "snr",
    "log_snr",
)


def nichol_cosine_f(tau: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal (2021) eq. 17, written independently of the library."""
    return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


# --------------------------------------------------------------------------------------------------
# Named schedules.
# --------------------------------------------------------------------------------------------------


def test_schedule_names_are_the_four_documented_ones():
    assert set(schedule_names()) == set(NAMES)


def test_linear_endpoints_at_T_1000_are_ho_et_al():
    betas = make_schedule("linear", 1000).betas
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    # linear: constant increments
    steps = betas.diff()
    assert torch.allclose(steps, torch.full_like(steps, (0.02 - 1e-4) / 999), rtol=1e-9, atol=0)


@pytest.mark.parametrize("T", [100, 250, 500, 2000, 4000])
def test_linear_endpoints_scale_with_1000_over_T(T):
    betas = make_schedule("linear", T).betas
    scale = 1000 / T
    assert betas.shape == (T,)
    assert betas[0].item() == pytest.approx(1e-4 * scale, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02 * scale, rel=1e-12)


@pytest.mark.parametrize("T", [1000, 100, 4000])
def test_cosine_matches_nichol_dhariwal_formula_where_not_clipped(T):
    schedule = make_schedule("cosine", T)
    betas = schedule.betas
    assert bool((betas <= MAX_BETA).all()) and MAX_BETA == 0.999
    f0 = nichol_cosine_f(0.0)
    expected = torch.tensor([nichol_cosine_f((t + 1) / T) / f0 for t in range(T)], dtype=torch.float64)
    # once a beta is clipped, alpha_bar departs from the formula from that step on
    clipped = (betas >= MAX_BETA).nonzero()
    first_clipped = int(clipped[0]) if clipped.numel() else T
    assert first_clipped >= T - 1, "only the last step, where f -> 0, should need clipping"
    torch.testing.assert_close(
        schedule.alphas_cumprod[:first_clipped], expected[:first_clipped], rtol=1e-12, atol=1e-15
    )
    # and the betas themselves are 1 - f((t+1)/T) / f(t/T)
    expected_betas = torch.tensor(
        [min(1 - nichol_cosine_f((t + 1) / T) / nichol_cosine_f(t / T), 0.999) for t in range(T)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(betas, expected_betas, rtol=1e-10, atol=1e-14)


def test_cosine_s_option_changes_the_offset():
    default = make_schedule("cosine", 1000)
    other = make_schedule("cosine", 1000, s=0.02)
    expected = nichol_cosine_f(1 / 1000, s=0.02) / nichol_cosine_f(0.0, s=0.02)
    assert other.alphas_cumprod[0].item() == pytest.approx(expected, rel=1e-12)
    assert not torch.allclose(default.betas, other.betas)


def test_quadratic_square_roots_are_linear():
    betas = make_schedule("quadratic", 1000).betas
    roots = betas.sqrt()
    torch.testing.assert_close(roots, torch.linspace(1e-2, math.sqrt(0.02), 1000, dtype=torch.float64))


@pytest.mark.parametrize("name", ["quadratic", "sigmoid", "linear"])
@pytest.mark.parametrize("T", [50, 1000])
def test_beta_ramps_are_increasing_inside_unit_interval(name, T):
    betas = make_schedule(name, T).betas
    assert bool((betas > 0).all()) and bool((betas < 1).all())
    assert bool((betas.diff() > 0).all())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, T):
    schedule = make_schedule(name, T)
    ab = schedule.alphas_cumprod
    assert ab.shape == (T,)
    assert bool((ab.diff() < 0).all())
    assert 0 < ab[-1].item() < ab[0].item() < 1
    assert schedule.name == name
    assert schedule.num_timesteps == len(schedule) == T


def test_linear_alpha_bar_end_value_is_about_4e_minus_5():
    # documented in make_schedule's example; known value for Ho et al.'s schedule
    assert make_schedule("linear", 1000).alphas_cumprod[-1].item() == pytest.approx(4.036e-5, rel=1e-3)


# --------------------------------------------------------------------------------------------------
# Derived quantities.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_derived_quantities_match_formulas_recomputed_in_python(name):
    schedule = make_schedule(name, 200)
    betas = schedule.betas.tolist()
    ab, prod = [], 1.0
    for beta in betas:
        prod *= 1 - beta
        ab.append(prod)
    ab_prev = [1.0] + ab[:-1]
    post_var = [b * (1 - p) / (1 - a) for b, a, p in zip(betas, ab, ab_prev, strict=True)]
    coef1 = [b * math.sqrt(p) / (1 - a) for b, a, p in zip(betas, ab, ab_prev, strict=True)]
    coef2 = [(1 - p) * math.sqrt(1 - b) / (1 - a) for b, a, p in zip(betas, ab, ab_prev, strict=True)]
    expected = {
        "alphas": [1 - b for b in betas],
        "alphas_cumprod": ab,
        "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": [math.sqrt(a) for a in ab],
        "sqrt_one_minus_alphas_cumprod": [math.sqrt(1 - a) for a in ab],
        "posterior_variance": post_var,
        "posterior_mean_coef1": coef1,
        "posterior_mean_coef2": coef2,
        "snr": [a / (1 - a) for a in ab],
        "log_snr": [math.log(a / (1 - a)) for a in ab],
    }
    for key, values in expected.items():
        torch.testing.assert_close(
            getattr(schedule, key), torch.tensor(values, dtype=torch.float64), rtol=1e-10, atol=1e-14, msg=key
        )


def test_posterior_variance_is_zero_at_t0_and_below_beta_elsewhere():
    schedule = make_schedule("linear", 1000)
    assert schedule.posterior_variance[0].item() == 0.0
    assert bool((schedule.posterior_variance[1:] < schedule.betas[1:]).all())
    assert bool((schedule.posterior_variance[1:] > 0).all())


@pytest.mark.parametrize("name", NAMES)
def test_log_variance_clipped_at_t0_uses_posterior_variance_1(name):
    schedule = make_schedule(name, 1000)
    log_var = schedule.posterior_log_variance_clipped
    assert log_var[0].item() == pytest.approx(math.log(schedule.posterior_variance[1].item()), rel=1e-14)
    torch.testing.assert_close(log_var[1:], schedule.posterior_variance[1:].log(), rtol=0, atol=0)
    assert bool(torch.isfinite(log_var).all())


def test_single_step_schedule_is_well_defined():
    schedule = make_schedule([0.3])
    assert schedule.num_timesteps == 1
    assert schedule.posterior_variance.item() == 0.0
    assert schedule.posterior_log_variance_clipped.item() == pytest.approx(math.log(0.3))


@pytest.mark.parametrize("name", NAMES)
def test_all_tensors_float64_and_timesteps_int64(name):
    schedule = make_schedule(name, 100)
    for key in FLOAT_FIELDS:
        value = getattr(schedule, key)
        assert value.dtype == torch.float64, key
        assert value.shape == (100,), key
        assert value.device.type == "cpu", key
    assert schedule.timesteps.dtype == torch.int64
    assert torch.equal(schedule.timesteps, torch.arange(100))
    assert schedule.num_train_timesteps == 100 and not schedule.is_respaced


def test_float32_betas_are_promoted_to_float64():
    schedule = NoiseSchedule(torch.full((10,), 0.1, dtype=torch.float32))
    assert schedule.betas.dtype == torch.float64
    assert schedule.alphas_cumprod.dtype == torch.float64


@pytest.mark.parametrize("attribute", ["betas", "alphas_cumprod", "name", "timesteps", "posterior_variance"])
def test_schedule_is_frozen(attribute):
    schedule = make_schedule("linear", 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(schedule, attribute, getattr(schedule, attribute))
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(schedule, attribute)


def test_repr_mentions_name_steps_and_respacing():
    schedule = make_schedule("cosine", 1000)
    assert repr(schedule) == "NoiseSchedule(name='cosine', T=1000)"
    assert repr(respace(schedule, 50)) == "NoiseSchedule(name='cosine', T=50, respaced from 1000)"


# --------------------------------------------------------------------------------------------------
# Custom schedules.
# --------------------------------------------------------------------------------------------------


def torch_alpha_bar(tau):
    return torch.exp(-6.0 * tau) * (1 - 0.5 * tau)


def math_alpha_bar(tau):
    return math.exp(-6.0 * tau) * (1 - 0.5 * tau)


def math_alpha_bar_with_branch(tau):
    # max() of a tensor is ambiguous: only works one float at a time
    return max(math.exp(-6.0 * tau), 1e-4) * (1 - 0.5 * tau)


@pytest.mark.parametrize("fn", [torch_alpha_bar, math_alpha_bar, math_alpha_bar_with_branch])
@pytest.mark.parametrize("T", [10, 1000])
def test_custom_alpha_bar_callable(fn, T):
    schedule = make_schedule(fn, T)
    expected = torch.tensor(
        [math_alpha_bar((t + 1) / T) / math_alpha_bar(0.0) for t in range(T)], dtype=torch.float64
    )
    torch.testing.assert_close(schedule.alphas_cumprod, expected, rtol=1e-12, atol=1e-15)
    assert schedule.name == fn.__name__


def test_custom_callable_need_not_start_at_one():
    schedule = make_schedule(lambda tau: 0.5 * (1.0 - tau) + 1e-3, 100)
    f = lambda tau: 0.5 * (1.0 - tau) + 1e-3  # noqa: E731
    assert schedule.alphas_cumprod[0].item() == pytest.approx(f(0.01) / f(0.0), rel=1e-12)
    assert schedule.name == "<lambda>"


def test_custom_callable_respects_max_beta():
    schedule = make_schedule(lambda tau: 1.0 - tau + 1e-12, 100, max_beta=0.5)
    assert schedule.betas.max().item() == pytest.approx(0.5)
    assert bool((schedule.betas <= 0.5).all())


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor", "tuple"])
def test_explicit_betas(kind):
    raw = [0.1, 0.2, 0.3]
    spec = {"list": raw, "numpy": np.array(raw), "tensor": torch.tensor(raw), "tuple": tuple(raw)}[kind]
    schedule = make_schedule(spec, num_timesteps=1000)  # num_timesteps is ignored for explicit betas
    assert schedule.num_timesteps == 3
    assert schedule.name == "custom"
    torch.testing.assert_close(schedule.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))
    if kind == "tensor":  # float32 input rounded once, then everything in float64
        assert schedule.betas.dtype == torch.float64


def test_schedule_from_module_path(tmp_path, monkeypatch):
    module_name = "ddpmlab_test_user_schedule_a"
    (tmp_path / f"{module_name}.py").write_text(
        "import math\n\ndef my_alpha_bar(tau):\n    return math.cos(tau * math.pi / 2 * 0.95) ** 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    schedule = make_schedule(f"{module_name}:my_alpha_bar", 100)
    f = lambda tau: math.cos(tau * math.pi / 2 * 0.95) ** 2  # noqa: E731
    expected = torch.tensor([f((t + 1) / 100) / f(0.0) for t in range(100)], dtype=torch.float64)
    torch.testing.assert_close(schedule.alphas_cumprod, expected, rtol=1e-12, atol=1e-15)
    assert schedule.name == f"{module_name}:my_alpha_bar"
    monkeypatch.delitem(sys.modules, module_name, raising=False)


def test_schedule_from_package_module_path(tmp_path, monkeypatch):
    package = tmp_path / "ddpmlab_test_pkg_b"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "schedules.py").write_text("import torch\n\ndef f(tau):\n    return 1 - 0.999 * tau\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    schedule = make_schedule("ddpmlab_test_pkg_b.schedules:f", 10)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(1 - 0.999, rel=1e-12)
    for name in ("ddpmlab_test_pkg_b", "ddpmlab_test_pkg_b.schedules"):
        monkeypatch.delitem(sys.modules, name, raising=False)


# --------------------------------------------------------------------------------------------------
# Invalid input.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "betas, message",
    [
        ([0.1, 0.0, 0.2], r"every beta must lie in \(0, 1\), but beta\[1\] = 0"),
        ([0.1, 1.0], r"every beta must lie in \(0, 1\), but beta\[1\] = 1"),
        ([-0.1, 0.2], r"beta\[0\] = -0.1"),
        ([0.1, 1.5], r"beta\[1\] = 1.5"),
        ([0.1, float("nan")], r"NaN or infinity"),
        ([0.1, float("inf")], r"NaN or infinity"),
        ([], r"at least one timestep"),
        (["a", "b"], r"array of numbers"),
    ],
)
def test_invalid_betas_refused(betas, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule(betas)
    with pytest.raises(ScheduleError, match=message):
        NoiseSchedule(betas)


def test_schedule_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda tau: 0.5 + 0.4 * tau, r"strictly decreasing"),
        (lambda tau: torch.ones_like(tau), r"strictly decreasing"),
        (lambda tau: torch.full_like(tau, float("nan")), r"NaN or infinity"),
        (lambda tau: 0.5 - tau, r"positive on \[0, 1\)"),
    ],
)
def test_invalid_alpha_bar_function_refused(fn, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule(fn, 100)


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ScheduleError, match=r"unknown schedule 'cosin'") as info:
        make_schedule("cosin", 1000)
    for name in NAMES:
        assert name in str(info.value)
    assert "package.module:function" in str(info.value)


@pytest.mark.parametrize(
    "path, message",
    [
        ("ddpmlab_no_such_module_xyz:f", r"cannot import module 'ddpmlab_no_such_module_xyz'"),
        ("math:no_such_function", r"module 'math' has no function 'no_such_function'"),
        ("math:pi", r"module 'math' has no function 'pi'"),  # exists but is not callable
        (":f", r"must look like 'package.module:function'"),
        ("math:", r"must look like 'package.module:function'"),
    ],
)
def test_bad_module_path_refused(path, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule(path, 100)


@pytest.mark.parametrize("T", [0, -5, 10.0, True, "100"])
def test_bad_num_timesteps_refused(T):
    with pytest.raises(ScheduleError, match="num_timesteps must be a positive integer"):
        make_schedule("linear", T)


def test_unknown_option_refused():
    with pytest.raises(ScheduleError, match=r"schedule 'linear'.*beta_middle"):
        make_schedule("linear", 1000, beta_middle=0.01)


def test_too_short_linear_schedule_refused_rather_than_clipped():
    # 0.02 * 1000 / 20 = 1: the last beta would destroy the signal entirely
    with pytest.raises(ScheduleError, match=r"T = 20 is too small for beta_end = 0.02"):
        make_schedule("linear", 20)


@pytest.mark.parametrize(
    "timesteps, message",
    [([0, 1], r"shape \[3\]"), ([0, 2, 1], "strictly increasing"), ([0, 1, 1], "strictly increasing")],
)
def test_bad_timesteps_refused(timesteps, message):
    with pytest.raises(ScheduleError, match=message):
        NoiseSchedule(torch.full((3,), 0.1), timesteps=torch.tensor(timesteps))


# --------------------------------------------------------------------------------------------------
# Respacing.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("K", [1, 10, 50, 100, 250, 999])
def test_respace_keeps_alpha_bar_at_kept_steps(name, spacing, K):
    full = make_schedule(name, 1000)
    short = respace(full, K, spacing)
    kept = short.timesteps
    assert short.num_timesteps == K and short.num_train_timesteps in (1000, int(kept[-1]) + 1)
    assert kept.dtype == torch.int64
    assert torch.equal(kept, torch.tensor(respaced_timesteps(1000, K, spacing)))
    assert bool((kept.diff() > 0).all()) and int(kept[0]) >= 0 and int(kept[-1]) <= 999
    # exact up to float64 round-off: alpha_bar goes through betas = 1 - ratio and back (absolute error
    # ~1e-16, which is a relative 2e-8 at cosine's alpha_bar_999 ~ 2e-9)
    torch.testing.assert_close(short.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-12, atol=1e-15)
    # the betas are recomputed from the kept alpha_bar: beta'_i = 1 - ab[s_i] / ab[s_{i-1}]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), full.alphas_cumprod[kept[:-1]]])
    torch.testing.assert_close(short.betas, 1 - full.alphas_cumprod[kept] / previous, rtol=1e-12, atol=0)
    assert short.name == name
    if spacing == "trailing":
        assert int(kept[-1]) == 999
        assert short.is_respaced == (K != 1000)


@pytest.mark.parametrize(
    "T, K, spacing, expected",
    [
        (1000, 10, "trailing", [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]),
        (1000, 10, "leading", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]),
        (1000, 10, "linspace", [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]),
        (1000, 4, "trailing", [249, 499, 749, 999]),
        (10, 3, "trailing", [2, 6, 9]),  # 10, 6.67, 3.33 -> round -> 10, 7, 3 -> minus one
        (10, 3, "linspace", [0, 4, 9]),  # 0, 4.5, 9 with round-half-to-even
        (10, 3, "leading", [0, 3, 6]),
        (1000, 1, "trailing", [999]),
        (1000, 1, "leading", [0]),
    ],
)
def test_respaced_timesteps_known_values(T, K, spacing, expected):
    assert respaced_timesteps(T, K, spacing) == expected


def test_trailing_50_of_1000_are_the_every_20th_from_999():
    assert respaced_timesteps(1000, 50) == list(range(19, 1000, 20))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_respace_to_T_is_identity(name, spacing):
    full = make_schedule(name, 100)
    same = respace(full, 100, spacing)
    assert torch.equal(same.betas, full.betas)
    assert torch.equal(same.alphas_cumprod, full.alphas_cumprod)
    assert torch.equal(same.timesteps, torch.arange(100))
    assert not same.is_respaced
    # an explicit list of every index is the identity too
    listed = respace(full, list(range(100)))
    torch.testing.assert_close(listed.betas, full.betas, rtol=1e-12, atol=0)


@pytest.mark.parametrize("spacing", ["linspace", "leading"])
@pytest.mark.parametrize("T", [1000, 100])
def test_every_K_gives_K_distinct_valid_steps_linspace_and_leading(spacing, T):
    for K in range(1, T + 1):
        steps = respaced_timesteps(T, K, spacing)
        assert len(steps) == K and steps == sorted(set(steps)) and 0 <= steps[0] and steps[-1] < T, K


@pytest.mark.parametrize("T", [1000, 100])
def test_every_K_gives_K_distinct_valid_steps_trailing(T):
    failures = []
    for K in range(1, T + 1):
        try:
            steps = respaced_timesteps(T, K, "trailing")
        except ScheduleError:
            failures.append(K)
            continue
        assert len(steps) == K and steps == sorted(set(steps)) and steps[0] >= 0 and steps[-1] == T - 1, K
    assert not failures, f"trailing spacing fails for K in {failures[:10]}... ({len(failures)} values of K)"


@pytest.mark.parametrize("K", [20, 50, 100, 200, 250, 500])
def test_trailing_is_even_from_the_end_for_divisors(K):
    steps = respaced_timesteps(1000, K, "trailing")
    assert steps == list(range(1000 // K - 1, 1000, 1000 // K))


def test_respace_explicit_list():
    full = make_schedule("cosine", 1000)
    short = respace(full, [999, 0, 500, 250])  # any order: sorted
    assert short.timesteps.tolist() == [0, 250, 500, 999]
    torch.testing.assert_close(
        short.alphas_cumprod, full.alphas_cumprod[[0, 250, 500, 999]], rtol=1e-12, atol=1e-15
    )
    assert short.betas[0].item() == pytest.approx(full.betas[0].item(), rel=1e-12)
    assert short.num_train_timesteps == 1000 and short.is_respaced


def test_respace_of_a_respaced_schedule_keeps_original_indices():
    full = make_schedule("linear", 1000)
    once = respace(full, 100)
    twice = respace(once, 10)
    assert twice.timesteps.tolist() == once.timesteps[respaced_timesteps(100, 10)].tolist()
    assert twice.timesteps.tolist() == list(range(99, 1000, 100))
    torch.testing.assert_close(
        twice.alphas_cumprod, full.alphas_cumprod[twice.timesteps], rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize(
    "steps, message",
    [
        (0, r"num_steps must be between 1 and 100, got 0"),
        (101, r"num_steps must be between 1 and 100, got 101"),
        ([], r"distinct indices in \[0, 100\)"),
        ([5, 5, 6], r"distinct indices"),
        ([-1, 5], r"distinct indices"),
        ([5, 100], r"distinct indices"),
    ],
)
def test_respace_bad_steps_refused(steps, message):
    with pytest.raises(ScheduleError, match=message):
        respace(make_schedule("linear", 100), steps)


def test_unknown_spacing_refused():
    with pytest.raises(
        ScheduleError, match=r"unknown spacing 'uniform'; choose one of trailing, linspace, leading"
    ):
        respace(make_schedule("linear", 100), 10, "uniform")


# --------------------------------------------------------------------------------------------------
# structure_timesteps.
# --------------------------------------------------------------------------------------------------


def brute_force_first_below(schedule: NoiseSchedule, threshold: float):
    for index in range(schedule.num_timesteps):
        if schedule.alphas_cumprod[index].item() < threshold:
            return int(schedule.timesteps[index])
    return None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("respaced", [False, True])
def test_structure_timesteps_against_brute_force(name, respaced):
    schedule = make_schedule(name, 1000)
    if respaced:
        schedule = respace(schedule, 37, "linspace")
    thresholds = (0.9, 0.5, 0.1, 0.01, 1e-3, 1e-9)
    result = structure_timesteps(schedule, thresholds)
    assert list(result) == list(thresholds)
    for threshold in thresholds:
        assert result[threshold] == brute_force_first_below(schedule, threshold), threshold
    # 1e-9 is never reached by these schedules
    assert result[1e-9] is None


def test_structure_timesteps_default_thresholds_and_ordering():
    linear = structure_timesteps(make_schedule("linear", 1000))
    cosine = structure_timesteps(make_schedule("cosine", 1000))
    assert list(linear) == [0.5, 0.1, 0.01]
    assert linear[0.5] < linear[0.1] < linear[0.01]
    # the cosine schedule keeps the data structured for longer (Nichol & Dhariwal's motivation)
    assert cosine[0.5] > linear[0.5] and cosine[0.1] > linear[0.1]
