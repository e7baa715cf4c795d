"""Property-based tests (hypothesis): random config documents, YAML texts and dotted overrides at the
config loader, random arrays, lengths and options at ``make_schedule``. Each gives a valid object or a
clear one-line error (ConfigError / ScheduleError), never another exception.

Strings never hold ':' where a schedule could read them: ``package.module:function`` imports a
module, and a fuzzer must not import arbitrary modules (schedules given as code have their own tests).
Run with ``--hypothesis-show-statistics`` to see how many examples each property ran.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddpmlab.config import SECTIONS, Config, ConfigError, load_config
from ddpmlab.schedules import NoiseSchedule, ScheduleError, make_schedule, schedule_names

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 300))  # per property; FUZZ_EXAMPLES=3000 for a longer run
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

FIELDS = sorted({f for cls in SECTIONS.values() for f in cls.__dataclass_fields__})
NAMES = ["name", *SECTIONS, *FIELDS, "means", "hidden", "linear", "cosine", "mog1d", "mnist5k", "ddim"]
TEXT = st.text(alphabet=st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), max_size=12)
WORDS = st.one_of(st.sampled_from(NAMES), TEXT)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-5, 2000), st.floats(), WORDS,
    st.sampled_from(["1e-3", "1e3", "nan", "-inf", "3.0", "0x10", "1_000", "", " "]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(WORDS, inner, max_size=4),
    max_leaves=12,
)
SECTION = st.dictionaries(st.one_of(st.sampled_from(FIELDS), WORDS, st.integers(0, 3)), VALUES, max_size=6)
DOCUMENTS = st.dictionaries(
    st.one_of(st.sampled_from(["name", *SECTIONS]), WORDS), st.one_of(SECTION, VALUES), max_size=6
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "config.yaml"


def _clear(error: BaseException) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


@FUZZ
@given(document=DOCUMENTS)
def test_random_config_documents(document):
    try:
        config = Config.from_dict(document)
    except ConfigError as error:
        _clear(error)
        return
    assert Config.from_dict(config.to_dict()).to_dict() == config.to_dict()


@FUZZ
@given(document=DOCUMENTS)
def test_random_config_files(document, scratch):
    scratch.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        config = load_config(scratch)
    except ConfigError as error:
        _clear(error)
        return
    assert isinstance(config, Config)


YAML_PIECES = st.sampled_from([
    "train:", "  steps: 3", "\tsteps: 3", "- a", "[", "]", "{", "}", "&a", "*a", "!!python/name:os.system",
    "!tag", "? [1, 2]", ": x", "'", '"', "---", "...", "%YAML 1.1", "data: {name: mog1d}", "steps: 1e400",
    "lr: .nan", "name:", "  ", "#", "\\x00", "<<: *a", "|", ">",
])


@FUZZ
@given(lines=st.lists(st.one_of(YAML_PIECES, TEXT), max_size=8))
def test_random_yaml_texts(lines, scratch):
    scratch.write_text("\n".join(lines))
    try:
        load_config(scratch)
    except ConfigError as error:
        _clear(error)


KEYS = st.one_of(
    st.builds("{}.{}".format, st.sampled_from(["name", *SECTIONS, "trian"]), st.sampled_from(FIELDS)),
    st.sampled_from(["name", "train", "train..steps", ".x", "data.means", "model.hidden", "train.steps.x"]),
    TEXT,
)
OVERRIDES = st.lists(
    st.one_of(st.builds("{}={}".format, KEYS, st.one_of(TEXT, YAML_PIECES, st.just("[1, 2]"))), TEXT),
    max_size=5,
)


@FUZZ
@given(overrides=OVERRIDES)
def test_random_dotted_overrides(overrides):
    try:
        config = load_config(None, overrides)
    except ConfigError as error:
        _clear(error)
        return
    assert isinstance(config, Config)


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.float16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    elements=None,
)
BETAS = st.one_of(
    ARRAYS,
    ARRAYS.map(torch.from_numpy),
    st.lists(st.one_of(st.floats(), st.integers(), st.none(), TEXT, st.lists(st.floats(), max_size=2)),
             max_size=8),
    st.floats(), st.integers(), st.none(), st.dictionaries(TEXT, st.floats(), max_size=2),
)
LENGTHS = st.one_of(st.integers(-3, 3000), st.integers(), st.floats(), st.booleans(), st.none(), TEXT)


def _check_schedule(schedule: NoiseSchedule) -> None:
    betas = schedule.betas
    assert betas.dtype == torch.float64 and betas.ndim == 1 and len(betas) >= 1
    assert bool(((betas > 0) & (betas < 1)).all())
    assert bool(torch.isfinite(schedule.alphas_cumprod).all())


@FUZZ
@given(betas=BETAS, length=LENGTHS)
def test_make_schedule_with_random_arrays(betas, length):
    try:
        schedule = make_schedule(betas, length)
    except ScheduleError as error:
        _clear(error)
        return
    _check_schedule(schedule)


OPTIONS = st.dictionaries(
    st.sampled_from(["beta_start", "beta_end", "s", "max_beta", "steepness", "bogus"]),
    st.one_of(st.floats(), st.integers(-2, 2), TEXT, st.none(), st.lists(st.floats(), max_size=2)),
    max_size=3,
)


@FUZZ
@given(name=st.one_of(st.sampled_from(schedule_names()), TEXT), length=LENGTHS, options=OPTIONS)
def test_make_schedule_with_random_names_lengths_and_options(name, length, options):
    try:
        schedule = make_schedule(name, length, **options)
    except ScheduleError as error:
        _clear(error)
        return
    _check_schedule(schedule)
    assert len(schedule.betas) == length and math.isfinite(float(schedule.alphas_cumprod[-1]))


@pytest.mark.parametrize("length", [10**6 + 1, 10**12, 2**70])
def test_absurd_lengths_are_refused_before_any_allocation(length):
    with pytest.raises(ScheduleError, match="at most 1,000,000"):
        make_schedule("linear", length)
    with pytest.raises(ConfigError, match="at most 1,000,000"):
        load_config(None, [f"diffusion.timesteps={length}"])
