"""Per-column explanations of a mixed table's energy: which columns cost most, what was seen
there and what the model expected (numpy only)."""

from __future__ import annotations

import numpy as np

from aeserve.columns import TableEncoding

__all__ = ["describe_columns"]


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _describe(encoding: TableEncoding, j: int, seen: float, missing: bool, expected: float, p_missing: float,
              slot_p: np.ndarray, offset: int) -> str:
    """One column of one row: observed value (and its probability), then the expected one."""
    spec = encoding.columns[j]
    if spec.type == "categorical":
        best = int(round(expected))
        wanted = f"expected {encoding.slot_name(spec.name, np.array([best]))[0]!r} (p {slot_p[offset + best]:.2g})"
        if missing:
            return f"{spec.name} = missing (p {p_missing:.2g}); {wanted}"
        slot = int(round(seen))
        return f"{spec.name} = {encoding.slot_name(spec.name, np.array([slot]))[0]!r} " \
               f"(p {slot_p[offset + slot]:.2g}); {wanted}"
    if spec.type == "binary":
        wanted = f"expected {_bool_text(expected >= 0.5)} (p {max(expected, 1 - expected):.2g})"
        if missing:
            return f"{spec.name} = missing (p {p_missing:.2g}); {wanted}"
        return f"{spec.name} = {_bool_text(seen >= 0.5)} (p {expected if seen >= 0.5 else 1 - expected:.2g}); {wanted}"
    wanted = f"expected {expected:.4g}"
    if missing:
        return f"{spec.name} = missing (p {p_missing:.2g}); {wanted}"
    return f"{spec.name} = {seen:.4g}; {wanted}"


def describe_columns(encoding: TableEncoding, encoded: np.ndarray, rebuilt: np.ndarray, slot_p: np.ndarray,
                     top: np.ndarray) -> np.ndarray:
    """Text (n, k) for the columns ``top`` (n, k) of each row, e.g. ``Home = 'other' (p 0.01);
    expected 'owner' (p 0.83)``. ``encoded``: the rows as the graphs take them; ``rebuilt`` and
    ``slot_p``: the decoder's outputs for their codes."""
    n_columns = len(encoding.columns)
    offsets, at = {}, 0  # each categorical column's first slot in slot_p
    for j, spec in enumerate(encoding.columns):
        if spec.type == "categorical":
            offsets[j], at = at, at + spec.slots
    text = np.empty(top.shape, dtype=object)
    for i, row in enumerate(top):
        for t, j in enumerate(row):
            text[i, t] = _describe(encoding, int(j), float(encoded[i, j]), bool(encoded[i, n_columns + j]),
                                   float(rebuilt[i, j]), float(rebuilt[i, n_columns + j]), slot_p[i],
                                   offsets.get(int(j), 0))
    return text
