"""Config: defaults, YAML, dotted overrides, validation with clear messages."""

from __future__ import annotations

import re

import pytest
import yaml

from ddpmlab.config import Config, ConfigError, load_config, parse_overrides


def test_defaults_are_valid_and_round_trip():
    config = Config()
    again = Config.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


def test_yaml_file_name_and_open_sections(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "data:\n  name: mog1d\n  means: [-1, 1]\nmodel:\n  type: mlp\n  hidden: 64\ntrain:\n  lr: 1e-3\n"
    )
    config = load_config(path)
    assert config.name == "exp"
    assert config.data.options == {"means": [-1, 1]}
    assert config.model.options == {"hidden": 64}
    assert config.train.lr == pytest.approx(1e-3) and isinstance(
        config.train.lr, float
    )  # YAML reads 1e-3 as str
    assert config.to_dict()["data"]["means"] == [-1, 1]  # options flatten back into their section


def test_dotted_overrides_parse_yaml_values(tmp_path):
    config = load_config(
        None,
        [
            "data.means=[-3,0,4]",
            "train.steps=3000",
            "diffusion.schedule=cosine",
            "sample.clip_x0=null",
            "train.tensorboard=false",
            "name=x",
        ],
    )
    assert config.data.options["means"] == [-3, 0, 4]
    assert config.train.steps == 3000
    assert config.diffusion.schedule == "cosine"
    assert config.sample.clip_x0 is None and config.train.tensorboard is False and config.name == "x"
    assert parse_overrides(["a.b=hello world"]) == {"a.b": "hello world"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.stpes=3"], r"unknown key\(s\) stpes in train \(did you mean steps\?\); allowed: .*steps"),
        (["trian.steps=3"], "unknown config section"),
        (["train.steps=-1"], "train.steps must be a positive integer"),
        (["train.precision=fp8"], "train.precision must be one of fp32, bf16, fp16"),
        (["diffusion.prediction=noise"], "diffusion.prediction must be one of eps, x0, v"),
        (["sample.sampler=euler"], "sample.sampler must be one of ddpm, ddim"),
        (["train.lr=fast"], "train.lr must be a number"),
        (["train.steps=null"], "at least one of steps, epochs or minutes"),
        (["train.ema_decay=1.0"], r"train.ema_decay must be in \[0, 1\)"),
        (["nokey"], "must look like section.key=value"),
    ],
)
def test_bad_values_are_refused_clearly(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_shipped_configs_load():
    from pathlib import Path

    import ddpmlab

    folder = Path(ddpmlab.__file__).parent / "configs"
    paths = sorted(folder.glob("*.yaml"))
    assert paths, "no configs shipped"
    for path in paths:
        assert load_config(path).name == path.stem


def test_declared_types_with_the_conversions_yaml_needs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 1e3\n  lr: 1e-3\n  batch_size: 64.0\nsample:\n  guidance: 3\n")
    config = load_config(path)
    assert config.train.steps == 1000 and isinstance(config.train.steps, int)  # YAML 1.1: 1e3 is a string
    assert config.train.batch_size == 64 and isinstance(config.train.batch_size, int)
    assert config.sample.guidance == 3.0 and isinstance(config.sample.guidance, float)
    for override, message in [
        ("train.batch_size=64.5", "train.batch_size must be an integer; got 64.5"),
        ("train.compile=yes please", "train.compile must be true or false"),
        ("train.device=3", "train.device must be a string; got 3"),
        ("train.minutes=.inf", "train.minutes must be a finite number; got inf"),
        ("diffusion.schedule_options=[1]", "diffusion.schedule_options must be a mapping"),
        ("data.options=[1]", "data.options must be a mapping"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])


def test_an_empty_section_takes_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\nsample:\n")
    assert load_config(path, ["train.steps=5"]).train.steps == 5


def test_unreadable_config_files_are_one_line(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read .*b.yaml: 'utf-8' codec"):
        load_config(binary)
    deep = tmp_path / "deep.yaml"
    deep.write_text("data: {means: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError, match="cannot parse .*deep.yaml: nested too deeply"):
        load_config(deep)


def test_a_module_schedule_is_recorded_as_betas_that_round_trip_exactly(tmp_path):
    (tmp_path / "sched.py").write_text("def alpha_bar(tau):\n    return 1.0001 - tau\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        config = load_config(None, ["diffusion.schedule=sched:alpha_bar", "diffusion.timesteps=20"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sched", None)
    assert len(config.diffusion.schedule) == 20
    assert config.to_yaml().count("\n") == Config().to_yaml().count("\n")  # the betas on one line
    again = Config.from_dict(yaml.safe_load(config.to_yaml()))
    assert again.diffusion.schedule == config.diffusion.schedule  # floats survive YAML exactly
    with pytest.raises(ConfigError, match="diffusion.schedule's betas must lie in \\(0, 1\\); got 1.5"):
        Config.from_dict({"diffusion": {"timesteps": 2, "schedule": [0.1, 1.5]}})
    assert load_config(None, ["diffusion.schedule=cosine"]).diffusion.schedule == "cosine"  # names stay
