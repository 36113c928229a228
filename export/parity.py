"""Parity checks: an exported graph must reproduce the torch module within tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeserve.errors import ExportError

__all__ = ["Tolerance", "compare_outputs"]


@dataclass(frozen=True)
class Tolerance:
    """|onnx − torch| ≤ atol + rtol·max|torch| for every element of an output."""

    atol: float = 1e-5
    rtol: float = 1e-4

    def limit(self, reference: np.ndarray) -> float:
        """The largest allowed absolute error for outputs like ``reference``."""
        scale = float(np.abs(reference).max()) if reference.size else 0.0
        return self.atol + self.rtol * scale


def compare_outputs(graph: str, names: list[str], got: list[np.ndarray], expected: list[np.ndarray], *,
                    tolerance: Tolerance, on: str, exact: list[np.ndarray] | None = None) -> dict[str, float]:
    """Max abs error per output; ExportError naming graph, output and error when over tolerance.

    ``exact``: the same outputs computed in float64, when given. float32 itself strays from them
    by ``max|expected − exact|``; a graph whose arithmetic amplifies rounding (the lvm's unrolled
    gradient steps on codes) cannot be held closer to torch than twice that, so the limit is
    ``tolerance.limit(expected) + 2·max|expected − exact|``, the second term ~1e-7 for most graphs."""
    errors = {}
    for i, (name, a, b) in enumerate(zip(names, got, expected)):
        if a.shape != b.shape:
            raise ExportError(f"{graph}.onnx output {name!r} on {on}: shape {a.shape}, "
                              f"torch gives {b.shape}")
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
        rounding = float(np.abs(b.astype(np.float64) - exact[i]).max()) if exact is not None and a.size else 0.0
        limit = tolerance.limit(b) + 2.0 * rounding
        if not err <= limit:
            floor = f"; float32 itself strays {rounding:.3g} from float64" if rounding else ""
            raise ExportError(f"{graph}.onnx output {name!r} on {on}: max abs error {err:.3g} "
                              f"exceeds tolerance {limit:.3g} (atol {tolerance.atol}, rtol {tolerance.rtol}{floor})")
        errors[name] = err
    return errors
