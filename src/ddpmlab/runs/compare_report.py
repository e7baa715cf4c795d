"""The report of ``ddpmlab compare`` (:func:`write_compare_report`): one folder with

- ``report.md`` and ``index.html`` (static, no script, pictures referenced relatively): the entries side
  by side, one column each, their sample grids above their numbers, every metric beside its
  real-vs-real floor; the training curves; the training budget and size of each run; the config keys
  that differ; the command and the package versions;
- ``NN-label.png`` (each entry's grid: one row per class for labelled entries, at most 10 x 10) and
  ``NN-label.npz`` (its samples: ``images`` uint8 [N, H, W, C] and ``labels``, as ``ddpmlab sample``
  writes them: ``ddpmlab evaluate --samples`` measures them again);
- ``training_curves.png`` (the loss of every run against step, from metrics.jsonl; left out when no run
  has one) and ``report.json`` (every number).

Both documents are made from one list of blocks (:func:`report_blocks`), so they say the same.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmlab.runs.compare import Comparison

__all__ = ["Picture", "grid_order", "report_blocks", "to_markdown", "to_html", "write_compare_report"]

GRID_SIDE = 10  # at most this many rows and columns of samples per grid


@dataclass(frozen=True)
class Picture:
    """An image in a document, by its path relative to the report folder."""

    path: str
    alt: str


def grid_order(labels: Any, num_classes: int | None, count: int) -> tuple[list[int], int]:
    """(indices of the samples to show, grid rows): one row per class (up to 10 of each, classes
    0..9) when the samples have class labels, else the first <= 100 in rows of 10."""
    if num_classes and torch.is_tensor(labels):
        rows = min(num_classes, GRID_SIDE)
        per_class = min(GRID_SIDE, count // num_classes)
        if per_class >= 1:
            chosen = [torch.nonzero(labels == c).flatten()[:per_class].tolist() for c in range(rows)]
            return [i for indices in chosen for i in indices], rows
    shown = min(count, GRID_SIDE * GRID_SIDE)
    return list(range(shown)), -(-shown // GRID_SIDE)


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _kid(result: dict[str, Any]) -> str:
    return f"{result['kid']:.4g} +- {result['kid_std']:.2g}"


def _memorised(space: str):
    def value(result: dict[str, Any]) -> Any:
        return result["memorisation"][space]["fraction_flagged"]

    def floor(result: dict[str, Any]) -> Any:
        return result["memorisation"][space]["heldout_fraction_flagged"]

    return value, floor


def _coverage(key: str, floor: bool, histogram: bool = False):
    def read(result: dict[str, Any]) -> Any:
        found = result.get("class_coverage_floor" if floor else "class_coverage")
        if found is None:
            return None
        return " ".join(str(n) for n in found["class_histogram"]) if histogram else found[key]

    return read


def _metric_table(rows: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(title, value of a result, floor of a result) for each metric row of the report."""
    first = rows[0]["result"]
    metrics = [
        (first["fd_label"], lambda r: r["fd"], lambda r: r["fd_floor"]),
        ("KID", _kid, lambda r: r["kid_floor"]),
        ("precision", lambda r: r["precision"], lambda r: r["precision_floor"]),
        ("recall", lambda r: r["recall"], lambda r: r["recall_floor"]),
    ]
    if any("class_accuracy" in row["result"] for row in rows):
        metrics.append(
            ("class accuracy", lambda r: r.get("class_accuracy"), lambda r: r.get("class_accuracy_floor"))
        )
    if any("read_exact" in row["result"] for row in rows):  # text runs read by a reader
        metrics += [
            ("read exactly", lambda r: r.get("read_exact"), lambda r: r.get("read_exact_floor")),
            ("read per character", lambda r: r.get("read_chars"), lambda r: r.get("read_chars_floor")),
        ]
    covered = [row["result"]["class_coverage"] for row in rows if "class_coverage" in row["result"]]
    if covered:
        classes = len(covered[0]["class_histogram"])
        metrics += [
            (
                f"classes covered (effective number, of {classes})",
                _coverage("effective_classes", False),
                _coverage("effective_classes", True),
            ),
            (
                "classes never predicted",
                _coverage("classes_missing", False),
                _coverage("classes_missing", True),
            ),
            ("predicted class histogram", _coverage("", False, True), _coverage("", True, True)),
        ]
    for space in ("features", "pixels"):
        metrics.append((f"closer than real ({space})", *_memorised(space)))
    return metrics


def _metric_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Each metric's row: the entries' values, then the real-vs-real floor (one column when every entry
    has the same floor; otherwise each value carries its own)."""
    table = []
    for title, value, floor in _metric_table(rows):
        values = [_number(value(row["result"])) for row in rows]
        floors = [floor(row["result"]) for row in rows]
        shown = {_number(f) for f in floors if f is not None}
        if len(shown) <= 1:
            table.append([title, *values, shown.pop() if shown else "n/a"])
        else:
            cells = [v if f is None else f"{v} (floor {_number(f)})" for v, f in zip(values, floors)]
            table.append([title, *cells, "in each cell"])
    return table


def _sampling_text(row: dict[str, Any]) -> str:
    used = row["sampling"]
    parts = [f"{used['sampler']}, {used['steps']} steps"]
    if "eta" in used:
        parts.append(f"eta {used['eta']:g}")
    if "guidance" in used:
        parts.append(f"classifier-free w = {used['guidance']:g}")
    if "classifier" in used:
        parts.append(
            f"classifier {used['classifier']} (step {row['classifier']['step']}), s = "
            f"{used['classifier_scale']:g}"
        )
    return "; ".join(parts)


def _entry_rows(rows: list[dict[str, Any]], grids: list[str]) -> list[list[Any]]:
    """The rows about each entry itself: grid, run, sampling, labels, cost."""
    return [
        ["samples", *[Picture(grid, row["label"]) for grid, row in zip(grids, rows)], ""],
        ["run (step)", *[f"{row['run']} ({row['step']})" for row in rows], ""],
        ["sampling", *[_sampling_text(row) for row in rows], ""],
        ["labels asked for", *[row["labels"] or "none" for row in rows], ""],
        ["network evaluations per image (NFE)", *[str(row["nfe"]) for row in rows], ""],
        ["classifier gradients per image", *[str(row["classifier_gradients"]) for row in rows], ""],
        ["seconds per image (wall)", *[_number(row["seconds_per_image"]) for row in rows], ""],
    ]


def _budget_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    items = [
        ("steps trained", "steps"),
        ("train.steps (limit)", "steps_limit"),
        ("minutes trained", "minutes"),
        ("train.minutes (limit)", "minutes_limit"),
        ("batch size (global)", "batch_size"),
        ("images seen", "images_seen"),
        ("parameters", "parameters"),
    ]
    return [[title, *[_number(run[key]) for run in runs]] for title, key in items]


def _config_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def report_blocks(
    comparison: Comparison, grids: list[str], curves: str | None, command: str, versions: dict[str, str]
) -> list[tuple]:
    """The report as blocks: ("h1" | "h2" | "p", text), ("code", text), ("table", header, rows) with
    cells of text or :class:`Picture`, ("picture", Picture)."""
    rows, context = comparison.rows, comparison.context
    first = rows[0]["result"]
    labels = [row["label"] for row in rows]
    real = "; ".join(f"{r['images']} of {r['data']} ({', '.join(r['runs'])})" for r in context["real_sets"])
    blocks: list[tuple] = [
        ("h1", f"Comparison of {len(rows)} entries"),
        ("code", command),
        (
            "p",
            f"N = {context['num']} samples per entry, seed {context['seed']} (every entry starts from the "
            f"same noise), features {context['feature_network']} ({context['fd_label']}); reference: real "
            f"images ({real}), of which N are held out for each real-vs-real floor.",
        ),
        ("h2", "Samples and metrics"),
        ("table", ["", *labels, "real vs real (floor)"], _entry_rows(rows, grids) + _metric_rows(rows)),
    ]
    if any("class_coverage" in row["result"] for row in rows):
        blocks.append(
            (
                "p",
                "Classes covered: exp of the entropy of the classes the feature network predicts "
                "for the samples (the number of classes if all are predicted equally often); it "
                "applies to unconditional samples too, where class accuracy does not.",
            )
        )
    blocks.append(("h2", "Training curves"))
    if curves:
        blocks.append(("picture", Picture(curves, "training loss against step")))
    else:
        blocks.append(("p", "No run has a metrics.jsonl with losses."))
    names = [run["run"] for run in comparison.runs]
    blocks += [
        ("h2", "Training budget and model size"),
        ("table", ["", *names], _budget_rows(comparison.runs)),
    ]
    blocks.append(("h2", "Config keys that differ"))
    if comparison.differences:
        table = [[row["key"], *[_config_value(v) for v in row["values"]]] for row in comparison.differences]
        blocks.append(("table", ["key", *names], table))
    else:
        blocks.append(
            ("p", "None: " + ("one run." if len(names) == 1 else "the runs share every config key."))
        )
    blocks += [("h2", "Versions"), ("p", ", ".join(f"{k} {v}" for k, v in versions.items()))]
    blocks.append(("p", f"Every number: report.json. Samples of each entry: its .npz ({first['n']} images)."))
    return blocks


def _md_cell(cell: Any) -> str:
    if isinstance(cell, Picture):
        return f"![{cell.alt.replace(']', '')}]({cell.path})"
    return str(cell).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    """The blocks as Markdown."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"{'#' if kind == 'h1' else '##'} {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "code":
            out.append(f"```bash\n{block[1]}\n```")
        elif kind == "picture":
            out.append(_md_cell(block[1]))
        else:
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
    "td img,p img{image-rendering:pixelated;max-width:100%}pre{background:#f4f4f4;padding:.5em;"
    "white-space:pre-wrap}"
)


def _html_cell(cell: Any, tag: str = "td") -> str:
    if isinstance(cell, Picture):
        inner = f'<img src="{html.escape(cell.path)}" alt="{html.escape(cell.alt)}">'
    else:
        inner = html.escape(str(cell))
    return f"<{tag}>{inner}</{tag}>"


def to_html(blocks: list[tuple], title: str = "ddpmlab compare") -> str:
    """The blocks as one static HTML page (no script; images by relative path)."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "picture":
            body.append(f"<p>{_html_cell(block[1], 'span')}</p>")
        else:
            header = "".join(_html_cell(cell, "th") for cell in block[1])
            rows = "".join("<tr>" + "".join(_html_cell(cell) for cell in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _slug(index: int, label: str) -> str:
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_.")[:60] or "entry")


def _json_ready(row: dict[str, Any], grid: str, samples: str) -> dict[str, Any]:
    kept = {key: value for key, value in row.items() if key not in ("images", "sample_labels")}
    return {**kept, "grid": grid, "samples": samples}


def write_compare_report(
    comparison: Comparison, folder: str | Path, command: str, versions: dict[str, str] | None = None
) -> dict[str, Path]:
    """Write the report folder (module docstring); returns the paths of report.md, index.html and
    report.json."""
    from ddpmlab.export import grid_scale, save_grid, save_npz
    from ddpmlab.metrics import package_versions
    from ddpmlab.plots import plot_training_curves

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    versions = versions or package_versions()
    grids, entries = [], []
    for index, row in enumerate(comparison.rows, 1):
        images, labels = row["images"], row["sample_labels"]
        name = _slug(index, row["label"])
        shown, rows = grid_order(labels, row["num_classes"], len(images))
        save_grid(images[shown], folder / f"{name}.png", rows=rows, scale=grid_scale(images))
        save_npz(folder / f"{name}.npz", images=images, labels=None if labels is None else np.asarray(labels))
        grids.append(f"{name}.png")
        entries.append(_json_ready(row, f"{name}.png", f"{name}.npz"))
    curves = None
    if comparison.curves:
        curves = plot_training_curves(comparison.curves, folder / "training_curves.png").name
    blocks = report_blocks(comparison, grids, curves, command, versions)
    paths = {"md": folder / "report.md", "html": folder / "index.html", "json": folder / "report.json"}
    paths["md"].write_text(to_markdown(blocks))
    paths["html"].write_text(to_html(blocks))
    report = {
        "command": command,
        "versions": versions,
        "context": comparison.context,
        "entries": entries,
        "runs": comparison.runs,
        "config_differences": comparison.differences,
        "training_curves": curves,
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    return paths
