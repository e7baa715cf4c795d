"""How well strings were read: exact-string and per-character accuracy of a reader's readings.

Per-character accuracy is 1 - the character error rate: 1 - (the summed Levenshtein distances between
readings and targets) / (the summed target lengths), at least 0. A reading with one character wrong
scores 4/5 of a 5-character string; one that drops a character (e.g. a doubled letter read once)
loses one character, not every character after it as a position-by-position comparison would.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["edit_distance", "reading_accuracy"]


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def reading_accuracy(readings: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """``{"exact": fraction read exactly, "chars": per-character accuracy}`` (see the module docstring).

    Raises:
        ValueError: different numbers of readings and targets, none, or an empty target.
    """
    if len(readings) != len(targets) or not targets:
        raise ValueError(f"{len(readings)} readings for {len(targets)} target strings")
    if not all(targets):
        raise ValueError("a target string is empty")
    exact = sum(r == t for r, t in zip(readings, targets)) / len(targets)
    errors = sum(edit_distance(r, t) for r, t in zip(readings, targets))
    chars = max(0.0, 1.0 - errors / sum(len(t) for t in targets))
    return {"exact": float(exact), "chars": float(chars)}
