"""Value transforms a mixed table's numeric columns take inside the graphs (``--log``).

A heavy-tailed amount (an income, a debt, a price) standardised as it is puts most rows within
a small fraction of one standard deviation and a few rows tens of deviations out: its squared
error (the seed's C for real values) is then near zero for most rows and dwarfs every other
column's term for the few, which are not necessarily the anomalies. Read through the signed log
g(y) = sign(y)·log(1 + |y|), its error is on the value's order of magnitude instead.

The transform is recorded per column in the manifest (``ColumnSpec.transform``) and applied in
every graph (``aeserve.train.mixed.MixedTable``), so the runtime still hands the graphs raw
numbers and every backend gives the same energy. ``--log auto`` picks the columns with no
negative value in training whose sample skewness exceeds ``LOG_SKEW``; ``ValueShape`` holds the
moments that decide it, merged exactly across blocks, so a table read whole and the same table
streamed in shards choose the same columns. numpy only: the runtime imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from aeserve.errors import InputError

__all__ = ["LOG_SKEW", "signed_log", "signed_exp", "ValueShape", "parse_log", "with_log", "shapes_of_rows"]

#: ``--log auto`` takes a numeric column whose training values are all >= 0 and whose sample
#: skewness g1 exceeds this (measured on the mixed tables of benchmarks/quality.py)
LOG_SKEW = 1.0


def signed_log(x: np.ndarray) -> np.ndarray:
    """g(x) = sign(x)·log(1 + |x|) (``aeserve.train.mixed.signed_log``, the graphs' own, in numpy)."""
    return np.sign(x) * np.log1p(np.abs(x))


def signed_exp(t: np.ndarray) -> np.ndarray:
    """g⁻¹(t) = sign(t)·(e^|t| − 1)."""
    return np.sign(t) * np.expm1(np.abs(t))


@dataclass
class ValueShape:
    """Count, mean, second and third central sums and the minimum of a column's present values,
    in float64, merged exactly (Pébay's pairwise update): the same skewness as one pass."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    low: float = float("inf")

    def update(self, values: np.ndarray) -> None:
        """Add a block of present values (1-D)."""
        values = np.asarray(values, np.float64).ravel()
        if len(values):
            centred = values - values.mean()
            self.merge(ValueShape(len(values), float(values.mean()), float((centred ** 2).sum()),
                                  float((centred ** 3).sum()), float(values.min())))

    def merge(self, other: "ValueShape") -> None:
        """Fold ``other`` (the shape of other values of the column) into this one."""
        if other.count == 0:
            return
        a, b = self.count, other.count
        n = a + b
        delta = other.mean - self.mean
        self.m3 = (self.m3 + other.m3 + delta ** 3 * a * b * (a - b) / n ** 2
                   + 3.0 * delta * (a * other.m2 - b * self.m2) / n)
        self.m2 = self.m2 + other.m2 + delta ** 2 * a * b / n
        self.mean += delta * b / n
        self.count, self.low = n, min(self.low, other.low)

    @property
    def skew(self) -> float:
        """Sample skewness g1 = m3 / m2^1.5 (population moments); 0 for a constant column."""
        if self.count < 2 or self.m2 <= 0.0:
            return 0.0
        return (self.m3 / self.count) / (self.m2 / self.count) ** 1.5

    @property
    def wants_log(self) -> bool:
        """``--log auto``'s rule: no negative value, skewness above ``LOG_SKEW``."""
        return self.count > 2 and self.low >= 0.0 and self.skew > LOG_SKEW


def parse_log(option) -> str | tuple[str, ...]:
    """``--log``'s value: 'auto', or column names (a comma-separated string or a sequence);
    () for none."""
    if option is None or option == "" or option == ():
        return ()
    if isinstance(option, str):
        if option.strip().lower() == "auto":
            return "auto"
        return tuple(name.strip() for name in option.split(",") if name.strip())
    return tuple(option)


def with_log(specs: Sequence, log, shapes: Mapping[str, ValueShape] | None = None) -> tuple:
    """``specs`` with ``transform="log"`` on the columns ``log`` names, or (``log == "auto"``) on
    every numeric column whose ``shapes`` entry wants it. Naming an unknown or non-numeric
    column is an InputError."""
    log = parse_log(log)
    if not log:
        return tuple(specs)
    kinds = {spec.name: spec.type for spec in specs}
    if log == "auto":
        chosen = {name for name, shape in (shapes or {}).items() if kinds.get(name) == "numeric" and shape.wants_log}
    else:
        unknown = [name for name in log if name not in kinds]
        if unknown:
            raise InputError(f"--log: no column(s) {', '.join(map(repr, unknown))} among the training columns")
        other = [f"{name!r} is {kinds[name]}" for name in log if kinds[name] != "numeric"]
        if other:
            raise InputError(f"--log takes numeric columns: {', '.join(other)}")
        chosen = set(log)
    return tuple(replace(spec, transform="log") if spec.name in chosen else spec for spec in specs)


def shapes_of_rows(values: np.ndarray, specs: Sequence) -> dict[str, ValueShape]:
    """Each numeric column's ``ValueShape`` from encoded rows (value_j, then missing_j, per column):
    its present cells."""
    n = len(specs)
    shapes = {}
    for j, spec in enumerate(specs):
        if spec.type == "numeric":
            shapes[spec.name] = shape = ValueShape()
            shape.update(values[values[:, n + j] == 0, j])
    return shapes
