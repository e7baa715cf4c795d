"""Render the README's picture of each tutorial notebook.

Runs a notebook from top to bottom (full mode unless ``--small``), with this folder as its working
directory (full-mode runs go to notebooks/runs/), and saves the picture shown by its cell tagged
``readme`` as docs/images/notebook_<n>.png; ``--pictures DIR`` also keeps every picture it showed and
the executed notebook.

    python notebooks/readme_pictures.py 1 2               # full mode
    python notebooks/readme_pictures.py 3 4 5 --small     # DDPMLAB_NOTEBOOK_MODE=small
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "docs" / "images"


def pictures_of(cell) -> list[bytes]:
    """The PNG pictures a code cell showed, in order."""
    return [
        base64.b64decode(output["data"]["image/png"])
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def render(number: int, small: bool, keep: Path | None) -> Path:
    """Execute notebook ``number`` and write its README picture; returns the path written."""
    (path,) = sorted(HERE.glob(f"{number:02d}_*.ipynb"))
    notebook = nbformat.read(path, as_version=4)
    os.environ["DDPMLAB_NOTEBOOK_MODE"] = "small" if small else "full"
    os.environ.setdefault("MPLBACKEND", "Agg")
    source = str(HERE.parent / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    started = time.perf_counter()
    resources = {"metadata": {"path": str(HERE)}}
    NotebookClient(notebook, timeout=None, kernel_name="python3", resources=resources).execute()
    print(f"{path.name}: {time.perf_counter() - started:.0f} s ({'small' if small else 'full'} mode)")
    tagged = [cell for cell in notebook.cells if "readme" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1 or not pictures_of(tagged[0]):
        raise SystemExit(f"{path.name}: expected one cell tagged 'readme' that shows a picture")
    target = IMAGES / f"notebook_{number}.png"
    target.write_bytes(pictures_of(tagged[0])[-1])
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shown = [picture for cell in notebook.cells for picture in pictures_of(cell)]
        for index, picture in enumerate(shown):
            (keep / f"{path.stem}_{index:02d}.png").write_bytes(picture)
        nbformat.write(notebook, keep / path.name)  # executed, with its outputs
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="+", type=int, help="notebook numbers (1-5)")
    parser.add_argument("--small", action="store_true", help="run in small mode")
    parser.add_argument("--pictures", type=Path, help="also keep every picture and the executed notebook")
    args = parser.parse_args(argv)
    for number in args.numbers:
        print(f"wrote {render(number, args.small, args.pictures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
