"""The measuring commands: ``evaluate``, ``sweep`` and ``compare`` (see :mod:`ddpmlab.runs.evaluate`,
:mod:`ddpmlab.runs.sweep` and :mod:`ddpmlab.runs.compare`; judges are trained by ``train-judge``, in
:mod:`ddpmlab.cli`)."""

from __future__ import annotations

from pathlib import Path

from ddpmlab.cli_checks import UsageError, check_device, check_numbers
from ddpmlab.cli_sampling import draw, names, sampling_request

__all__ = ["evaluate", "sweep", "compare"]


def _stored_samples(path: str):
    """(uint8 images, labels) of an .npz written by ``ddpmlab sample``: labels are int64 classes [N],
    N strings (``sample --text`` on a text run), or None."""
    import numpy as np
    import torch

    with np.load(path) as stored:  # no pickles: string labels are stored as a unicode array
        if "images" not in stored.files:
            raise UsageError(f"{path} holds no 'images' array (write it with sample --out x.npz)")
        images = torch.from_numpy(stored["images"])
        labels = stored["labels"] if "labels" in stored.files else None
    if labels is None or labels.ndim != 1 or len(labels) != len(images):
        return images, None
    if labels.dtype.kind == "U":
        return images, [str(text) for text in labels]
    return images, torch.from_numpy(labels) if labels.dtype.kind in "iu" else None


def evaluate(args) -> int:
    """``ddpmlab evaluate``: sample (or read samples), measure them against the run's real data. A
    text run without ``--text`` gets one sample per random string it did not train on."""
    import json
    from dataclasses import replace

    from ddpmlab.data.base import to_uint8
    from ddpmlab.export import check_destination
    from ddpmlab.runs import open_run
    from ddpmlab.runs.conditions import unseen_texts
    from ddpmlab.runs.evaluate import (
        check_network,
        evaluate_images,
        format_evaluation,
        load_feature_network,
        real_data,
    )

    for option, path in (("--out", args.out), ("--pairs", args.pairs)):
        if path:
            check_destination(path, option)
    network = load_feature_network(args.features, args.device)  # fails early, before any sampling
    if args.samples:
        run, what = open_run(args.run, args.device), f"samples from {args.samples}"
        check_network(network, run)
        images, labels = _stored_samples(args.samples)
        real = real_data(run, args.real_num, args.seed)
    else:
        run, plan, sampler, classifier, scale = sampling_request(args, default_num=1000)
        check_network(network, run)
        real = real_data(run, args.real_num, args.seed)
        if run.text_encoder is not None and args.text is None and real.texts is not None:
            plan = replace(plan, labels=unseen_texts(run, plan.num, real.texts, args.seed))
        samples, labels = draw(args, run, plan, sampler, classifier, scale)
        images, what = to_uint8(samples), repr(sampler)
    result = evaluate_images(images, labels, real, network, args.seed, args.pairs)
    result.update(run=str(run.run_dir), step=run.step, samples=what)
    if not args.samples:
        result.update(_guidance_settings(args, run, classifier, scale))
    print(format_evaluation(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _guidance_settings(args, run, classifier, scale) -> dict:
    """What steered the samples, for the JSON: the classifier-free guidance scale w the samples used
    (None for an unconditional run) and the classifier with its scale, when one guided them."""
    from ddpmlab.runs import guidance_scale

    settings: dict = {"guidance": guidance_scale(run, args.guidance)}
    if classifier is not None:
        settings.update(classifier=str(classifier.run_dir), classifier_scale=scale)
    return settings


def _numbers(text: str, kind, option: str) -> list:
    try:
        return [None if part.strip() in ("", "default") else kind(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated numbers, got {text!r}") from None


def sweep(args) -> int:
    """``ddpmlab sweep``: samplers x steps x guidance scales, each timed and measured."""
    from dataclasses import replace

    from ddpmlab.runs import open_run, plan_conditions
    from ddpmlab.runs.conditions import unseen_texts
    from ddpmlab.runs.evaluate import check_network, load_feature_network, real_data
    from ddpmlab.runs.sweep import sweep_run, write_sweep
    from ddpmlab.samplers import SAMPLERS

    samplers = names(args.sampler, "--sampler")
    unknown = [name for name in samplers if name not in SAMPLERS]
    if unknown:
        raise UsageError(f"--sampler: unknown {', '.join(unknown)}; choose from {', '.join(SAMPLERS)}")
    steps, guidances = _numbers(args.steps, int, "--steps"), _numbers(args.guidance, float, "--guidance")
    from ddpmlab.export import check_destination

    check_destination(args.out, folder=True)
    network = load_feature_network(args.features, args.device)
    run = open_run(args.run, args.device)
    check_network(network, run)
    plan = plan_conditions(run, args.num, args.labels, None)
    real = real_data(run, args.real_num, args.seed)
    if run.text_encoder is not None and real.texts is not None:  # strings the run did not train on
        plan = replace(plan, labels=unseen_texts(run, plan.num, real.texts, args.seed))
    rows = sweep_run(
        run, network, real, samplers, steps, guidances, plan.num, plan.labels, args.seed, progress=True
    )
    context = {
        "run": str(run.run_dir),
        "step": run.step,
        "N": plan.num,
        "features": args.features,
        "seed": args.seed,
    }
    paths = write_sweep(rows, args.out, context)
    print((Path(args.out) / "sweep.md").read_text())
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


def _compare_command(args) -> str:
    """The command line that makes this report again (the options spelled out, defaults included)."""
    import shlex

    words = ["ddpmlab", "compare", *args.entries, "--features", args.features, "--num", str(args.num),
             "--seed", str(args.seed), "--real-num", str(args.real_num), "--out", args.out]
    if args.device != "auto":
        words += ["--device", args.device]
    return shlex.join(words)


def compare(args) -> int:
    """``ddpmlab compare``: entries side by side, sampled alike, measured alike, in one report."""
    from ddpmlab.export import check_destination
    from ddpmlab.runs.compare import compare_entries, open_entries, parse_entry
    from ddpmlab.runs.compare_report import write_compare_report
    from ddpmlab.runs.evaluate import load_feature_network

    check_device(args.device)
    check_numbers(args)
    if args.real_num <= 0:
        raise UsageError(f"--real-num must be positive, got {args.real_num}")
    specs = [parse_entry(text) for text in args.entries]
    check_destination(args.out, folder=True)
    entries = open_entries(specs, args.num, args.device)  # every run and setting checked before sampling
    network = load_feature_network(args.features, args.device)
    comparison = compare_entries(entries, network, args.num, args.seed, args.real_num, progress=True)
    paths = write_compare_report(comparison, args.out, _compare_command(args))
    label = comparison.context["fd_label"]
    reads = any("read_exact" in row["result"] for row in comparison.rows)  # text runs and a reader
    key, title = ("read_exact", "read exact") if reads else ("class_accuracy", "class acc")
    header = f"{'precision':>9} {'recall':>7} {title:>10} {'s/image':>8}"
    print(f"{'entry':<40} {label:>10} {'floor':>8} {header}")
    for row in comparison.rows:
        result = row["result"]
        accuracy = result.get(key)
        print(
            f"{row['label'][:40]:<40} {result['fd']:>10.4g} {result['fd_floor']:>8.3g} "
            f"{result['precision']:>9.3f} {result['recall']:>7.3f} "
            f"{'n/a' if accuracy is None else f'{accuracy:.3f}':>10} {row['seconds_per_image']:>8.3g}"
        )
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0
