"""The package's layering, checked by reading every import of src/ddpmlab with ``ast`` (imports inside
functions included): no import cycle between modules, no import from a higher layer than the
importing module's (the layer table is the one in docs/architecture.md, read from there), and no
private name (``_x``) imported from another module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    """ddpmlab's modules by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((SOURCE / "ddpmlab").rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every ddpmlab import of module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:  # `from ddpmlab import distributed`: the module itself
                    found.append((submodule, None, node.lineno))
                elif base in MODULES:
                    found.append((base, alias.name, node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name) if target != name} for name in MODULES}


def _layer_table() -> dict[str, int]:
    """``docs/architecture.md``'s table under '## Layers': | layer | modules |, modules as `name`."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|(.*)\|", line)
        if match:
            for module in re.findall(r"`([\w.]+)`", match.group(2)):
                table[module] = int(match.group(1))
    return table


def _layer(module: str, table: dict[str, int]) -> int:
    """The layer of a module: that of its longest listed prefix (``runs.sampling`` is ``runs``)."""
    relative = module.removeprefix("ddpmlab").lstrip(".") or "ddpmlab"
    parts = relative.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in table:
            return table[key]
    raise KeyError(module)


def test_every_module_has_a_layer():
    table = _layer_table()
    assert table, "docs/architecture.md has no layer table under '## Layers'"
    missing = []
    for module in MODULES:
        try:
            _layer(module, table)
        except KeyError:
            missing.append(module)
    assert not missing, f"modules missing from the layer table of docs/architecture.md: {missing}"


def test_no_import_from_a_higher_layer():
    table = _layer_table()
    upward = [
        f"{name} (layer {_layer(name, table)}) imports {target} (layer {_layer(target, table)})"
        for name, targets in _edges().items()
        for target in targets
        if _layer(target, table) > _layer(name, table)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = _edges()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            if target.startswith(node + "."):
                continue  # a package importing its own submodules (its __init__ re-exports them)
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_imported_across_modules():
    private = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {imported} from {target}"
        for name in MODULES
        for target, imported, line in _imports(name)
        if imported and imported.startswith("_") and not imported.startswith("__") and target != name
    ]
    assert not private, "\n".join(private)


MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_no_source_file_over_the_line_limit():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in MODULES.values()}
    long = {path: lines for path, lines in sizes.items() if lines > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_the_line_limit():
    """Functions (docstrings included) of at most MAX_FUNCTION_LINES lines: one job each."""
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_the_checker_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The cycle finder and the layer lookup on a made-up graph (a test of the test)."""
    table = {"low": 0, "high": 1}
    assert _layer("ddpmlab.high.part", table) == 1 and _layer("ddpmlab.low", table) == 0
    monkeypatch.setattr(
        f"{__name__}._edges", lambda: {"ddpmlab.a": {"ddpmlab.b"}, "ddpmlab.b": {"ddpmlab.a"}}
    )
    monkeypatch.setattr(f"{__name__}.MODULES", {"ddpmlab.a": None, "ddpmlab.b": None})
    with pytest.raises(AssertionError, match="ddpmlab.a -> ddpmlab.b -> ddpmlab.a"):
        test_no_import_cycle()
