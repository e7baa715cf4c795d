"""Reading files that may be hostile as plain data, and one-line messages.

Config files and dataset files come from anywhere (a course page, a shared drive, a run directory
someone sent). Reading them must never run code, so this module reads only plain data:

- YAML (:func:`read_plain_yaml`): ``yaml.SafeLoader`` (no ``!!python/...`` objects), which also
  refuses any tag it does not know, aliases (``*name``: a few lines of them can expand into billions
  of entries, the "billion laughs") and duplicate keys (the last one would win silently);
- pickles (:func:`load_plain_pickle`): a restricted unpickler that builds dicts, lists, tuples,
  strings, bytes, numbers and numpy arrays, and refuses every other global (where a pickle's code
  would come from), so a planted payload raises instead of running.

It also checks plain values against declared types (:func:`typed_value`: what a config's sections
use) and writes messages on one printable line (:func:`one_line`).

Checkpoints are read by ``torch.load(weights_only=True)`` (see :mod:`ddpmlab.training.checkpoint`),
which is the same idea for PyTorch's format.
"""

from __future__ import annotations

import codecs
import difflib
import math
import pickle
import re
from typing import IO, Any

import numpy as np
import yaml

__all__ = [
    "PlainDataError",
    "FlowList",
    "read_plain_yaml",
    "write_plain_yaml",
    "load_plain_pickle",
    "typed_value",
    "did_you_mean",
    "short_repr",
    "one_line",
]


class PlainDataError(ValueError):
    """A file that is not plain data. ``refused`` is true when it is readable but holds something
    refused on purpose (a tag, an alias, a duplicate key, a pickled global), false for a syntax error."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


# --------------------------------------------------------------------------------------------------
# YAML.
# --------------------------------------------------------------------------------------------------


class _Refused(yaml.MarkedYAMLError):
    """Something the plain loader refuses on purpose."""


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also refuses unknown tags, aliases and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_undefined(self, node):  # type: ignore[override]
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        raise _Refused(
            None, None, f"the tag {tag} is not allowed (plain data only: numbers, strings, lists, mappings)",
            node.start_mark,
        )

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader's own error follows
            if duplicate:
                raise _Refused(None, None, f"duplicate key {short_repr(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep)


_PlainLoader.add_constructor(None, _PlainLoader.construct_undefined)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where it is."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return " ".join(f"{error.problem}{where}".split())
    return one_line(error)


def read_plain_yaml(text: str) -> Any:
    """The plain data of one YAML document: dicts, lists, strings, numbers, booleans, None (and
    dates, which YAML also reads).

    Raises:
        PlainDataError: a syntax error, or (``refused``) a tag, an alias or a duplicate key; the
            message is one line with the line and column.
    """
    try:
        return yaml.load(text, Loader=_PlainLoader)
    except _Refused as error:
        raise PlainDataError(_yaml_problem(error), refused=True) from None
    except yaml.YAMLError as error:
        raise PlainDataError(_yaml_problem(error)) from None
    except RecursionError:
        raise PlainDataError("nested too deeply") from None


class FlowList(list):
    """A list that :func:`write_plain_yaml` writes on one line, ``[a, b, ...]``."""


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper, with :class:`FlowList` on one line."""


_Dumper.add_representer(
    FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def write_plain_yaml(data: Any) -> str:
    """``data`` as YAML (``yaml.safe_dump`` in the order given, long lines not wrapped)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1 << 30)


# --------------------------------------------------------------------------------------------------
# Pickles.
# --------------------------------------------------------------------------------------------------


def _numpy_core(name: str) -> Any:
    """A function of numpy's core (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    core = getattr(np, "_core", None) or np.core
    module, _, attribute = name.rpartition(".")
    return getattr(getattr(core, module), attribute)


# The globals a pickle of numpy arrays and scalars needs (as numpy 1 and 2 write them; protocol 2
# writes bytes as _codecs.encode(text, "latin1")), and nothing else.
_NUMPY_GLOBALS = {
    ("_codecs", "encode"): lambda: codecs.encode,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_core("multiarray.scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_core("multiarray.scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray._reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray._reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_core("numeric._frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_core("numeric._frombuffer"),
}


class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain data and numpy arrays; any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        make = _NUMPY_GLOBALS.get((module, name))
        if make is None:
            raise PlainDataError(
                f"it holds a pickled {module}.{name}, which could run code; only plain data is read",
                refused=True,
            )
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise PlainDataError("it holds a persistent reference; only plain data is read", refused=True)


def load_plain_pickle(file: IO[bytes], encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (``encoding`` decodes Python 2 strings, as in CIFAR-10's batches) allowing
    only plain data: dicts, lists, tuples, sets, strings, bytes, numbers, booleans, None and numpy
    arrays of numbers (arrays of Python objects are refused too).

    Raises:
        PlainDataError: a global other than numpy's array builders (``refused``), or a broken pickle.
    """
    try:
        content = _PlainUnpickler(file, encoding=encoding).load()
    except PlainDataError:
        raise
    except Exception as error:  # a broken pickle raises many types
        raise PlainDataError(one_line(error)) from None
    _check_arrays(content)
    return content


def _check_arrays(content: Any, depth: int = 0) -> None:
    """Refuse numpy arrays of Python objects anywhere in ``content``."""
    if depth > 100:
        raise PlainDataError("nested too deeply")
    if isinstance(content, np.ndarray):
        if content.dtype.hasobject:
            raise PlainDataError("it holds an array of Python objects; only arrays of numbers are read")
    elif isinstance(content, dict):
        for value in content.values():
            _check_arrays(value, depth + 1)
    elif isinstance(content, (list, tuple, set, frozenset)):
        for value in content:
            _check_arrays(value, depth + 1)


# --------------------------------------------------------------------------------------------------
# Typed values.
# --------------------------------------------------------------------------------------------------


_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "list": "a list of numbers",
    "None": "null",
}


def typed_value(where: str, declared: str, value: Any) -> Any:
    """``value`` checked against a declared type (``int | None``, ``float``, ``str``, ``bool``,
    ``dict[...]``, ``list[float]``, as a dataclass field spells it), with the conversions a YAML file
    needs: number strings (YAML 1.1 reads 1e-3 as a string) and whole floats to ints, ints to floats.
    Floats must be finite.

    Raises:
        PlainDataError: ``<where> must be <what>; got <value>``.
    """
    kinds = [part.strip().split("[")[0] for part in declared.split("|")]
    if value is None:
        if "None" in kinds:
            return None
    elif "bool" in kinds:
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool):
        pass  # true/false where a number or a name is expected
    elif "int" in kinds or "float" in kinds:
        number = _number(value, where, integer="int" in kinds)
        if number is not None:
            return number
    elif "str" in kinds and isinstance(value, str):
        return value
    elif "dict" in kinds and isinstance(value, dict):
        return value
    elif "list" in kinds and isinstance(value, list):
        numbers = [_number(item, where, integer=False) for item in value]
        if None not in numbers:
            return numbers
    what = " or ".join(_KIND_WORDS[kind] for kind in kinds if kind in _KIND_WORDS)
    raise PlainDataError(f"{where} must be {what}; got {short_repr(value)}")


def _number(value: Any, where: str, integer: bool) -> int | float | None:
    """``value`` (a number or a number string) as an int (``integer``: whole floats too) or as a finite
    float; None when it is not one. Raises PlainDataError for NaN, infinity or a float overflow."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if integer:
        return value if isinstance(value, int) else (int(value) if value.is_integer() else None)
    try:
        number = float(value)
    except OverflowError:
        raise PlainDataError(f"{where} must be a finite number; got {short_repr(value)}") from None
    if not math.isfinite(number):
        raise PlainDataError(f"{where} must be a finite number; got {number!r}")
    return number


# --------------------------------------------------------------------------------------------------
# One-line messages.
# --------------------------------------------------------------------------------------------------


def did_you_mean(word: Any, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to ``word``, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ (or a huge nested structure)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(error: BaseException) -> str:
    """An exception as one printable line: ``strerror: filename`` for OS errors; ddpmlab's own
    messages whole (they are one line by construction: a line break in one comes from a name in it,
    e.g. a hostile file name); any other message's first line (its type's name when it has none).
    Terminal escape sequences are removed and other control characters shown escaped (``\\n``)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    elif type(error).__module__.startswith("ddpmlab.") and str(error).strip():
        text = str(error).strip()
    else:
        lines = str(error).strip().splitlines()
        text = lines[0] if lines else type(error).__name__
    text = _ANSI.sub("", text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
