"""The bad inputs ``ddpmlab`` must refuse in one line: the table of ``tests/test_bad_inputs.py`` and of
``docs/trust.md`` ("Bad input"), both made from :data:`CASES`.

Every case runs ``ddpmlab.cli.main(argv)`` in a workspace (:func:`build_workspace`: tiny trained runs,
broken run directories, bad config files, bad data folders) and must print exactly one line on stderr,
starting with ``ddpmlab: error:``, return 2 and leave every file of the workspace byte-identical.

``python tests/bad_inputs.py`` rewrites the table in docs/trust.md from the messages it gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from ddpmlab.training.checkpoint import DIGEST_KEY, content_digest

ROOT = Path(__file__).resolve().parent.parent
TRUST = ROOT / "docs" / "trust.md"
TABLE_START = "<!-- bad-input table: made by `python tests/bad_inputs.py`; do not edit by hand -->"
TABLE_END = "<!-- end of the bad-input table -->"
MARKER = "PWNED"  # what every planted payload would write, if it ever ran

TOY = ["model.hidden=16", "model.num_blocks=1", "model.time_dim=16", "train.steps=4", "train.batch_size=32",
       "train.log_every=2", "train.progress=false", "train.tensorboard=false", "train.warmup_steps=1",
       "diffusion.timesteps=100", "sample.num=16", "sample.steps=4", "sample.batch_size=16"]
UNET = ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_levels=[1]",
        "model.num_groups=4", "model.num_heads=2", "train.steps=2", "train.batch_size=4", "train.log_every=1",
        "train.warmup_steps=1", "train.progress=false", "train.tensorboard=false", "train.minutes=null",
        "train.checkpoint_every=2", "train.sample_every=null", "diffusion.timesteps=50", "sample.steps=3",
        "sample.batch_size=8"]
TEXT = ["data.charset=abcd", "data.length=2", "data.num_items=8", "data.height=16", "data.width=32",
        "model.text_token_dim=8", "model.patch_size=1", *UNET]


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (run in the workspace), what kind of input it is, a part of the
    message it must give, and an optional patch (``no_gpu``: a machine without CUDA; ``read_only``: the
    folder ``locked`` is read-only, as chmod makes it for any user but root, for whom it is simulated)."""

    kind: str
    argv: tuple[str, ...]
    expect: str
    patch: str | None = None


def _c(kind: str, command: str, expect: str, patch: str | None = None) -> Case:
    return Case(kind, tuple(command.split()), expect, patch)


BAD = "train --dry-run --config configs"
CONFIG = f"{BAD}/mog1d.yaml"
SAMPLE = "sample --run runs/toy --out s.npz"
COND = "sample --run runs/toycond --out s.npz"
IMAGE = "sample --run runs/img --out grid.png"
TEXT_RUN = "sample --run runs/text --out g.png"
IMAGE_CONFIG = f"{BAD}/mnist5k.yaml"
FOLDER = "forward --data folder --out f.png --root"
COMPARE = "compare --features judge:runs/toy --out rep"

CASES: list[Case] = [
    # config files and values
    _c("config", f"{CONFIG} train.stpes=3", "unknown key(s) stpes in train (did you mean steps?)"),
    _c("config", f"{BAD}/trian.yaml", "unknown config section 'trian' (did you mean train?)"),
    _c("config", f"{CONFIG} train.steps=abc", "train.steps must be an integer or null; got 'abc'"),
    _c("config", f"{CONFIG} train.tensorboard=3", "train.tensorboard must be true or false; got 3"),
    _c("config", f"{CONFIG} train.lr=[1]", "train.lr must be a number; got [1]"),
    _c("config", f"{CONFIG} diffusion.timesteps=10.5", "diffusion.timesteps must be an integer; got 10.5"),
    _c("config", f"{CONFIG} train.lr=.nan", "train.lr must be a finite number"),
    _c("config", f"{CONFIG} train.grad_clip=.inf", "train.grad_clip must be a finite number"),
    _c("config", f"{CONFIG} sample.guidance=-.inf", "sample.guidance must be a finite number"),
    _c("config", f"{CONFIG} train.batch_size=-4", "train.batch_size must be a positive integer"),
    _c("config", f"{CONFIG} train.ema_decay=1.5", "train.ema_decay must be in [0, 1)"),
    _c("config", f"{CONFIG} sample.eta=-1", "sample.eta must be >= 0"),
    _c("config", f"{CONFIG} sample.sampler=euler", "sample.sampler must be one of"),
    _c("config", f"{CONFIG} sample.seed=-1", "sample.seed must be from 0 to"),
    _c("config", f"{CONFIG} diffusion.prediction=noise", "diffusion.prediction must be one of eps, x0, v"),
    _c("config", f"{CONFIG} diffusion.schedule=cosin", "unknown schedule 'cosin' (did you mean cosine?)"),
    _c("config", f"{CONFIG} diffusion.schedule=no_such_module:f", "cannot import module 'no_such_module'"),
    _c("config", f"{CONFIG} diffusion.schedule=[0.5]", "diffusion.schedule has 1 betas; diffusion.timesteps"),
    _c("config", f"{CONFIG} data.name=mog1", "unknown dataset 'mog1' (did you mean mog1d?)"),
    _c("config", f"{CONFIG} model.depth=3", "depth"),
    _c("config", f"{IMAGE_CONFIG} data.name=folder", "dataset folder needs data.root"),
    _c("config", f"{BAD}/section_list.yaml", "config section 'train' must be a mapping"),
    _c("config", f"{BAD}/tab.yaml", "cannot parse configs/tab.yaml"),
    _c("config", f"{BAD}/unclosed.yaml", "cannot parse configs/unclosed.yaml"),
    _c("config", f"{BAD}/list.yaml", "must hold a mapping of sections, not a list"),
    _c("config", f"{BAD}/python_tag.yaml", "the tag !!python/object/apply:"),
    _c("config", f"{BAD}/duplicate.yaml", "duplicate key 'steps'"),
    _c("config", f"{BAD}/alias.yaml", "aliases (*name) are not allowed"),
    _c("config", f"{BAD}/binary.yaml", "cannot read configs/binary.yaml"),
    _c("config", f"{BAD}/int_key.yaml", "keys in section train must be names"),
    _c("config", f"{BAD}/name_list.yaml", "name must be a non-empty string"),
    _c("config", f"{BAD}/nope.yaml", "config file not found: configs/nope.yaml"),
    _c("config", f"{IMAGE_CONFIG} train.eval_every=100", "train.eval_every=100 needs train.eval_features"),
    _c("config", f"{IMAGE_CONFIG} train.eval_every=-1", "train.eval_every must be >= 0"),
    _c("config", f"{IMAGE_CONFIG} train.eval_sampler=euler", "train.eval_sampler must be one of"),
    _c("config", f"{BAD}/captcha.yaml data.repeat_prob=1",
       "data.repeat_prob must be a number in [0, 1), got 1"),
    _c("config", f"{BAD}/captcha.yaml data.layout=maybe",
       "data.layout must be true or false, got 'maybe'"),
    _c("config", f"{CONFIG} train.eval_every=100 train.eval_features=inception",
       "train.eval_every measures image runs; mog1d is toy data"),
    _c("config", f"{IMAGE_CONFIG} train.eval_every=100 train.eval_features=judge:runs/toy",
       "train.eval_features=judge:runs/toy: runs/toy is not a judge run"),
    # dotted overrides
    _c("override", f"{CONFIG} trainsteps", "an override must look like section.key=value"),
    _c("override", f"{CONFIG} trian.steps=3", "unknown config section in override 'trian.steps' (did you"),
    _c("override", f"{CONFIG} train.steps.x=1", "override 'train.steps.x': 'steps' is not a section"),
    _c("override", f"{CONFIG} train..steps=1", "an override must look like section.key=value"),
    _c("override", f"{CONFIG} data.root=!!python/object/apply:os.system", "the tag !!python/object/apply"),
    _c("override", "train --config configs/mog1d.yaml train.steps=3 --dry-run model.hidden=8",
       "put dotted overrides such as model.hidden=8 after all the options"),
    _c("override", f"{SAMPLE} train.steps=3", "sample takes no key=value overrides"),
    # command-line arguments
    _c("argument", f"{SAMPLE} --num 0", "--num must be positive, got 0"),
    _c("argument", f"{SAMPLE} --num -5", "--num must be positive, got -5"),
    _c("argument", f"{SAMPLE} --num many", "argument --num/--num-samples: invalid int value: 'many'"),
    _c("argument", f"{SAMPLE} --steps 0", "--steps must be positive, got 0"),
    _c("argument", f"{SAMPLE} --steps 5000", "--steps must be at most the run's 100 timesteps"),
    _c("argument", f"{SAMPLE} --batch-size 0", "--batch-size must be positive, got 0"),
    _c("argument", f"{SAMPLE} --seed -1", "--seed must be from 0 to"),
    _c("argument", f"{COND} --guidance nan", "--guidance must be a finite number, got nan"),
    _c("argument", f"{SAMPLE} --guidance 5", "--guidance (classifier-free guidance) needs a conditional run"),
    _c("argument", f"{SAMPLE} --labels 1", "--labels: this run is unconditional"),
    _c("argument", f"{COND} --labels 99", "--labels: classes must lie in 0..2"),
    _c("argument", f"{COND} --labels two", "--labels must be 'all' or comma-separated class indices"),
    _c("argument", f"{COND} --text ab", "--text: this run is not conditioned on text"),
    _c("argument", f"{TEXT_RUN} --text z9", "outside the charset 'abcd'"),
    _c("argument", f"{TEXT_RUN} --text abcde", "'abcde' is longer than 2 characters"),
    _c("argument", f"{TEXT_RUN} --labels 1", "--labels: this run is conditioned on text"),
    _c("argument", f"{SAMPLE} --sampler ddpm --eta 0.5", "--eta applies to the ddim sampler"),
    _c("argument", f"{SAMPLE} --sampler ddim --eta -1", "--eta must be a number >= 0"),
    _c("argument", f"{SAMPLE} --sampler euler", "argument --sampler: invalid choice: 'euler'"),
    _c("argument", f"{SAMPLE} --frames 10", "--frames and --fps apply to a .gif animation"),
    _c("argument", "sample --run runs/img --out a.gif --frames 1", "--frames must be at least 2, got 1"),
    _c("argument", f"{IMAGE} --classifier-scale 2", "--classifier-scale needs --classifier"),
    _c("argument", f"{SAMPLE} --device nonsense", "unknown device 'nonsense'"),
    _c("argument", f"{SAMPLE} --device cuda", "--device cuda: no CUDA GPU is available here", "no_gpu"),
    _c("argument", "sample --run runs/toy --out no/such/s.npz", "the folder no/such does not exist"),
    _c("argument", "sample --run runs/toy --out file.txt/s.npz", "file.txt is a file, not a folder"),
    _c("argument", "sample --run runs/toy --out locked/s.npz", "--out locked/s.npz: locked is read-only",
       "read_only"),
    _c("argument", "export --run runs/img --zip locked/x.zip", "--zip locked/x.zip: locked is read-only",
       "read_only"),
    _c("argument", "sample --run runs/toy --out file.txt", "must be a .npz file"),
    _c("argument", "sample --run runs/img --out s.bmp", "--out must be a .npz file, a .png/.jpg grid"),
    _c("argument", "sample --run runs/img --out taken.png", "--out taken.png is a folder; name a file"),
    _c("argument", "export --run runs/img --zip x.tar", "--zip must name a .zip file, got x.tar"),
    _c("argument", "export --run runs/img --zip file.txt/x.zip", "file.txt is a file, not a folder"),
    _c("argument", "export --run runs/img --zip x.zip --format gif", "--format: invalid choice: 'gif'"),
    _c("argument", "export --run runs/toy --zip x.zip", "is a toy run; export writes images"),
    _c("argument", "sample --out s.npz", "the following arguments are required: --run"),
    _c("argument", "export --run runs/img --zip a.zip --diffusers d", "--diffusers: not allowed with"),
    _c("argument", "evaluate --run runs/img --features nonsense", "--features must be judge:RUN or"),
    _c("argument", "evaluate --run runs/img --features judge:runs/toy", "runs/toy is not a judge run"),
    _c("argument", "evaluate --run runs/img --features judge:runs/toy --out no/such/e.json",
       "--out no/such/e.json: the folder no/such does not exist"),
    _c("argument", "sweep --run runs/img --features judge:runs/toy --out file.txt", "file.txt is a file"),
    _c("argument", "sweep --run runs/img --features judge:runs/toy --out o --steps a,b",
       "--steps must be comma-separated numbers"),
    _c("argument", f"{COMPARE} runs/img,guidanse=3", "unknown setting 'guidanse' (did you mean guidance?)"),
    _c("argument", f"{COMPARE} runs/img,steps=0", "entry 'runs/img,steps=0': steps must be positive"),
    _c("argument", f"{COMPARE} runs/img,sampler=ddpm,eta=0.5", "eta applies to the ddim sampler"),
    _c("argument", f"{COMPARE} runs/img,classifier_scale=2", "classifier_scale needs classifier=RUN"),
    _c("argument", f"{COMPARE} runs/img,classifier=runs/clf", "classifier= guides an unconditional run"),
    _c("argument", f"{COMPARE} runs/img,label=a runs/img,label=a", "label=a names two entries"),
    _c("argument", f"{COMPARE} guidance=3,runs/img", "an entry starts with its run directory"),
    _c("argument", f"{COMPARE} runs/img --num 0", "--num must be positive, got 0"),
    _c("argument", "compare runs/img --features nonsense --out rep", "--features must be judge:RUN or"),
    _c("argument", "compare runs/img --features judge:runs/toy --out file.txt", "--out file.txt is a file"),
    _c("argument", COMPARE, "the following arguments are required: ENTRY"),
    _c("run", f"{COMPARE} runs/missing", "runs/missing is not a trained run"),
    _c("run", f"{COMPARE} runs/toy", "runs/toy is a toy run; compare measures image runs"),
    _c("argument", "import-diffusers data/empty --run runs/new", "not a diffusers UNet2DModel + scheduler"),
    _c("config", "train-judge --config configs/mog1d.yaml --dry-run", "train-judge trains model.type judge"),
    _c("config", "train-reader --config configs/mog1d.yaml --dry-run",
       "train-reader trains model.type reader"),
    _c("argument", "evaluate --run runs/text --features reader:runs/missing",
       "runs/missing is not a trained reader run"),
    _c("argument", "evaluate --run runs/text --features reader:runs/clf",
       "runs/clf is not a reader run (its model.type is classifier)"),
    _c("argument", "frobnicate", "argument COMMAND: invalid choice: 'frobnicate'"),
    _c("argument", "schedules --timesteps 0", "--timesteps must be positive, got 0"),
    _c("argument", "schedules --schedules ,", "--schedules is empty"),
    _c("argument", "schedules --out s.txt", "--out must end in one of .png"),
    _c("argument", "forward --num 0", "--num and --timesteps must be positive"),
    _c("argument", "forward --steps 0", "--steps must be from 1 to --timesteps"),
    _c("argument", "forward --data nonsense", "unknown dataset 'nonsense'"),
    # data folders
    _c("data", f"{FOLDER} data/empty", "no images (.png, .jpg, .jpeg, .bmp, .webp, .gif) found in"),
    _c("data", f"{FOLDER} data/text_only", "no images (.png, .jpg, .jpeg, .bmp, .webp, .gif) found in"),
    _c("data", f"{FOLDER} data/mixed_sizes", "have different sizes (8x8, 12x12, ...)"),
    _c("data", f"{FOLDER} data/truncated", "unreadable image: data/truncated/cut.png"),
    _c("data", f"{FOLDER} data/bomb", "image too large: data/bomb/bomb.png"),
    _c("data", f"{FOLDER} data/one_pixel --image-size 16", "image too small: data/one_pixel/dot.png is 1x1"),
    _c("data", f"{FOLDER} data/not_png", "unreadable image: data/not_png/fake.png"),
    _c("data", f"{FOLDER} data/zero_bytes", "unreadable image: data/zero_bytes/empty.png"),
    _c("data", f"{FOLDER} data/loose_and_classes", "holds both class sub-folders and loose images"),
    _c("data", f"{FOLDER} data/empty_class", "class folder data/empty_class/b holds no images"),
    _c("data", f"{FOLDER} data/missing", "image folder not found: data/missing"),
    _c("data", f"{FOLDER} file.txt", "image folder not found: file.txt (it is a file)"),
    _c("data", "forward --data cifar10 --root data/cifar_payload --out f.png", "it holds a pickled"),
    _c("data", "train --config configs/mnist5k.yaml --dry-run data.name=folder data.root=data/mixed_modes "
       "data.image_size=8", "data.conditional is true but the folder data in data/mixed_modes"),
    # run directories
    _c("run", "sample --run runs/missing --out s.npz", "runs/missing is not a trained run"),
    _c("run", "sample --run runs/empty --out s.npz", "runs/empty is not a trained run"),
    _c("run", "sample --run file.txt --out s.npz", "file.txt is not a trained run"),
    _c("run", "sample --run runs/config_only --out s.npz", "runs/config_only is not a trained run"),
    _c("run", "sample --run runs/clf --out s.npz", "model.type classifier is a noise-aware classifier"),
    _c("run", f"{IMAGE} --classifier runs/toy --labels 1", "runs/toy is not a classifier run"),
    _c("run", f"{IMAGE} --classifier runs/empty --labels 1", "runs/empty is not a trained classifier run"),
    _c("run", "sample --run runs/future --out s.npz", "has checkpoint format 99"),
    _c("run", "sample --run runs/garbage --out s.npz", "cannot read checkpoint runs/garbage/checkpoints"),
    _c("run", "sample --run runs/foreign --out s.npz", "is not a ddpmlab checkpoint"),
    _c("run", "sample --run runs/payload --out s.npz", "cannot read checkpoint runs/payload/checkpoints"),
    _c("run", "sample --run runs/code_schedule --out s.npz", "'evil_schedule:alpha_bar' names code"),
    _c("run", "sample --run runs/cifar_payload --out s.npz", "it holds a pickled"),
    _c("run", "sample --run runs/damaged_info --out g.png", "has a damaged data.info (not a data"),
    _c("run", "sample --run runs/huge_shape --out g.png", "has a damaged data.info (not a data"),
    _c("run", "train --config configs/mog1d.yaml --run runs/toy", "runs/toy already holds a trained run"),
    _c("run", "train --config configs/mog1d.yaml --run runs/empty --resume", "nothing to resume"),
    _c("run", "train --config configs/mog1d.yaml --run file.txt", "file.txt"),
    _c("run", "train --config configs/mnist5k.yaml --run runs/new train.eval_every=100 "
       "train.eval_features=judge:runs/missing", "train.eval_features=judge:runs/missing: runs/missing is"),
]

BAD_CONFIGS = {
    "trian.yaml": "trian:\n  steps: 3\n",
    "section_list.yaml": "train: [1, 2]\n",
    "tab.yaml": "train:\n\tsteps: 3\n",
    "unclosed.yaml": "train: {steps: [1, 2}\n",
    "list.yaml": "- train\n- sample\n",
    "python_tag.yaml": f"name: !!python/object/apply:os.system ['touch {MARKER}']\n",
    "duplicate.yaml": "train:\n  steps: 3\n  steps: 4\n",
    "alias.yaml": "data: &a {name: mog1d}\nmodel: *a\n",
    "int_key.yaml": "train:\n  1: 2\n",
    "name_list.yaml": "name: [1]\n",
}


class Payload:
    """Unpickling this would run code: it writes the marker file (a stand-in for anything worse)."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').write('ran')",))


# --------------------------------------------------------------------------------------------------
# The workspace.
# --------------------------------------------------------------------------------------------------


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def png_bytes(width: int, height: int, rows: bytes, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A PNG file written by hand (so that its header can claim any size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _data_folders(data: Path) -> None:
    rng = np.random.default_rng(0)
    (data / "empty").mkdir(parents=True)
    (data / "text_only").mkdir()
    (data / "text_only" / "notes.txt").write_text("no images here")
    _png(data / "mixed_sizes" / "a.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _png(data / "mixed_sizes" / "b.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    _png(data / "truncated" / "cut.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    cut = data / "truncated" / "cut.png"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    (data / "bomb").mkdir()
    (data / "bomb" / "bomb.png").write_bytes(png_bytes(100_000, 100_000, b"\x00" * 100_001))
    _png(data / "one_pixel" / "dot.png", np.zeros((1, 1, 3), dtype=np.uint8))
    _png(data / "one_pixel" / "big.png", np.zeros((16, 16, 3), dtype=np.uint8))
    (data / "not_png").mkdir()
    (data / "not_png" / "fake.png").write_text("this is not a picture")
    (data / "zero_bytes").mkdir()
    (data / "zero_bytes" / "empty.png").write_bytes(b"")
    _png(data / "loose_and_classes" / "cat" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    _png(data / "loose_and_classes" / "loose.png", np.zeros((8, 8, 3), dtype=np.uint8))
    _png(data / "empty_class" / "a" / "x.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (data / "empty_class" / "b").mkdir()
    _png(data / "mixed_modes" / "grey.png", rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    _png(data / "mixed_modes" / "rgba.png", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA")
    write_cifar_payload(data / "cifar_payload")


def write_cifar_payload(root: Path) -> None:
    """A CIFAR-10 folder whose pickled batches carry a payload."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {"data": np.zeros((1, 3072), dtype=np.uint8), "labels": [0], "payload": Payload()}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(batch))


def _edit_checkpoint(source: Path, target: Path, edit) -> None:
    """Copy the run ``source`` to ``target`` and change its checkpoint's state with ``edit(state)``."""
    shutil.copytree(source, target)
    path = target / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state.pop(DIGEST_KEY, None)
    edit(state)
    state[DIGEST_KEY] = content_digest(state)  # a consistent file: the edit, not damage, is what is tested
    torch.save(state, path)


def _broken_runs(runs: Path) -> None:
    (runs / "empty").mkdir()
    (runs / "config_only").mkdir()
    shutil.copy(runs / "toy" / "config.yaml", runs / "config_only" / "config.yaml")
    _edit_checkpoint(runs / "toy", runs / "future", lambda state: state.update(format_version=99))
    for name, content in (("garbage", b"not a checkpoint"), ("foreign", None), ("payload", Payload())):
        shutil.copytree(runs / "toy", runs / name)
        path = runs / name / "checkpoints" / "last.pt"
        if name == "garbage":
            path.write_bytes(content)
        elif name == "foreign":
            torch.save({"weights": torch.zeros(2)}, path)
        else:
            torch.save({"kind": "ddpmlab-checkpoint", "format_version": 1, "config": content}, path)
    _edit_checkpoint(runs / "toy", runs / "code_schedule",
                     lambda state: state["config"]["diffusion"].update(schedule="evil_schedule:alpha_bar"))

    def cifar_without_info(state):
        state["config"]["data"].update(name="cifar10", root="runs/cifar_payload/data", info=None)

    _edit_checkpoint(runs / "img", runs / "cifar_payload", cifar_without_info)
    _edit_checkpoint(runs / "img", runs / "damaged_info",
                     lambda state: state["config"]["data"]["info"].update(value_range=[1]))
    _edit_checkpoint(runs / "img", runs / "huge_shape",
                     lambda state: state["config"]["data"]["info"].update(shape=[3, 100_000, 100_000]))
    write_cifar_payload(runs / "cifar_payload" / "data")


def _train(argv: list[str]) -> None:
    from ddpmlab.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.getvalue()}")


def build_workspace(ws: Path) -> None:
    """Write every file the cases use into ``ws`` (the current directory while they run)."""
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        (ws / "configs").mkdir()
        for name in ("mog1d", "mnist5k", "mnist5k_classifier", "captcha"):
            shutil.copy(ROOT / "configs" / f"{name}.yaml", ws / "configs" / f"{name}.yaml")
        for name, text in BAD_CONFIGS.items():
            (ws / "configs" / name).write_text(text)
        (ws / "configs" / "binary.yaml").write_bytes(b"\xff\xfe\x00train")
        (ws / "file.txt").write_text("a regular file")
        (ws / "taken.png").mkdir()
        (ws / "locked").mkdir()
        (ws / "evil_schedule.py").write_text(f"open({MARKER!r}, 'w').write('imported')\n"
                                             "def alpha_bar(tau):\n    return 1 - tau\n")
        _data_folders(ws / "data")
        _train(["train", "--config", "configs/mog1d.yaml", "--run", "runs/toy", *TOY])
        _train(["train", "--config", "configs/mog1d.yaml", "--run", "runs/toycond", *TOY,
                "data.conditional=true"])
        _train(["train", "--config", "configs/mnist5k.yaml", "--run", "runs/img", "data.image_size=16",
                *UNET])
        _train(["train", "--config", "configs/captcha.yaml", "--run", "runs/text", *TEXT])
        _train(["train-classifier", "--config", "configs/mnist5k_classifier.yaml", "--run", "runs/clf",
                "data.image_size=16", *[o for o in UNET if not o.startswith("sample.")]])
        _broken_runs(ws / "runs")
    finally:
        os.chdir(cwd)


def snapshot(ws: Path) -> dict[str, str]:
    """Every file under ``ws`` (relative path -> sha256 of its bytes)."""
    found = {}
    for path in sorted(ws.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            found[str(path.relative_to(ws))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --------------------------------------------------------------------------------------------------
# Running a case, and the table.
# --------------------------------------------------------------------------------------------------


def run_case(case: Case, ws: Path) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``ddpmlab <case.argv>`` run in ``ws``."""
    from ddpmlab.cli import main

    patches = contextlib.ExitStack()
    if case.patch == "no_gpu":
        patches.enter_context(mock.patch("torch.cuda.is_available", return_value=False))
    if case.patch == "read_only":
        real = os.access

        def access(path, mode):
            return False if Path(path).name == "locked" and mode & os.W_OK else real(path, mode)

        patches.enter_context(mock.patch("os.access", access))
    cwd = os.getcwd()
    os.chdir(ws)
    out, err = io.StringIO(), io.StringIO()
    try:
        with patches, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(case.argv))
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue().replace(str(ws) + os.sep, "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(messages: list[str]) -> str:
    """The markdown table of the cases and their messages (one row per case)."""
    lines = [TABLE_START, "", "| # | kind | input | message (stderr) |", "|---|---|---|---|"]
    for number, (case, message) in enumerate(zip(CASES, messages), 1):
        command = _cell(" ".join(("ddpmlab", *case.argv)))
        note = {"no_gpu": " (no GPU)", "read_only": " (`locked` read-only)"}.get(case.patch or "", "")
        lines.append(f"| {number} | {case.kind} | `{command}`{note} | `{_cell(message)}` |")
    return "\n".join([*lines, "", TABLE_END])


def doc_table() -> str:
    """The table as docs/trust.md holds it now."""
    text = TRUST.read_text()
    return TABLE_START + text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0] + TABLE_END


def collect(ws: Path) -> list[str]:
    """Each case's message (stderr, stripped) in a built workspace."""
    return [run_case(case, ws)[2].strip() for case in CASES]


def main() -> None:
    """Rebuild the workspace in a temporary folder and rewrite the table in docs/trust.md."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ws = Path(folder)
        build_workspace(ws)
        table = render_table(collect(ws))
    text = TRUST.read_text()
    TRUST.write_text(text.replace(doc_table(), table))
    print(f"wrote {len(CASES)} cases into {TRUST}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
