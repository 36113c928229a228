"""Anomaly thresholds on energies: a quantile at a target false-positive rate, the best F1 given
labels, and peaks-over-threshold (POT) for targets too extreme for an empirical quantile.

POT (Pickands–Balkema–de Haan; SPOT, Siffer et al., KDD 2017): above a high initial threshold
t, the excesses Y = E − t of a wide class of distributions follow a generalised Pareto
distribution GPD(ξ, σ) with survival (1 + ξy/σ)^(−1/ξ). Fitted by maximum likelihood to the
N_t excesses among n energies, the threshold with tail probability p is

    z_p = t + σ/ξ · ((p·n / N_t)^(−ξ) − 1)        (ξ ≠ 0),    t − σ·log(p·n / N_t)   (ξ = 0).

The fit follows Grimshaw (1993): with θ = ξ/σ, the likelihood is maximised over σ and ξ in
closed form for each θ (ξ(θ) = mean log(1 + θY)), leaving a one-dimensional search over θ.
numpy only: the runtime calibrates without torch or scipy.
"""

from __future__ import annotations

import math

import numpy as np

from aeserve.errors import InputError
from aeserve.manifest import THRESHOLD_METHODS, Threshold

__all__ = ["METHODS", "quantile_threshold", "f1_threshold", "pot_threshold", "fit_gpd", "rates"]

METHODS = THRESHOLD_METHODS


def _finite_energies(energies: np.ndarray) -> np.ndarray:
    energies = np.asarray(energies, np.float64).reshape(-1)
    if energies.size == 0:
        raise InputError("no energies to calibrate on")
    return np.nan_to_num(energies, nan=np.inf)


def _check_fpr(target_fpr: float) -> None:
    if not 0.0 < target_fpr < 1.0:
        raise InputError(f"target false-positive rate must be in (0, 1), got {target_fpr}")


def rates(energies: np.ndarray, labels: np.ndarray | None, threshold: float) -> dict[str, float]:
    """The false-positive rate on normal rows (label 0, or all rows without labels) and, given
    anomalies (label 1), the recall (true-positive rate) at ``threshold`` (anomaly: energy > it)."""
    flagged = _finite_energies(energies) > threshold
    labels = np.zeros(flagged.size) if labels is None else np.asarray(labels)
    out = {"realised_fpr": float(flagged[labels == 0].mean()) if (labels == 0).any() else float("nan")}
    if (labels == 1).any():
        out["recall"] = float(flagged[labels == 1].mean())
    return out


def quantile_threshold(energies: np.ndarray, target_fpr: float) -> Threshold:
    """The (1 − target_fpr) quantile of normal rows' energies: about that share of them lies above."""
    _check_fpr(target_fpr)
    energies = _finite_energies(energies)
    value = float(np.quantile(energies, 1.0 - target_fpr))
    return Threshold(value=value, method="quantile", provenance={"target_fpr": target_fpr, "rows": int(energies.size)})


def f1_threshold(energies: np.ndarray, labels: np.ndarray) -> Threshold:
    """The threshold with the best F1 on labelled rows (1 = anomaly): halfway between the energy
    it flags last and the next one below. Refused when the labels hold one class only."""
    energies, labels = _finite_energies(energies), np.asarray(labels).reshape(-1)
    classes = set(np.unique(labels).tolist())
    if not classes <= {0, 1}:
        raise InputError(f"labels must be 0 (normal) or 1 (anomaly), got {sorted(classes)[:5]}")
    if classes != {0, 1}:
        raise InputError(f"the f1 method needs labels of both classes (0 = normal, 1 = anomaly); "
                         f"these hold only {classes.pop() if classes else 'nothing'} — use --method quantile or pot")
    order = np.argsort(-energies, kind="stable")
    sorted_energies, hits = energies[order], labels[order] == 1
    true_pos = np.cumsum(hits)  # flagging the top k rows, k = 1..n
    k = np.arange(1, energies.size + 1)
    f1 = 2 * true_pos / (k + hits.sum())
    last = np.flatnonzero(np.r_[sorted_energies[1:] < sorted_energies[:-1], True])  # ends of tied runs
    best = last[np.argmax(f1[last])]
    below = sorted_energies[best + 1] if best + 1 < energies.size else sorted_energies[best] - 1.0
    value = float((sorted_energies[best] + below) / 2)
    return Threshold(value=value, method="f1", provenance={"f1": float(f1[best]), "rows": int(energies.size),
                                                           "anomalies": int(hits.sum())})


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (ξ, σ) of a generalised Pareto distribution for positive ``excesses``."""
    y = np.asarray(excesses, np.float64)
    y = y[y > 0]
    if y.size < 2:
        raise InputError(f"peaks-over-threshold needs at least 2 excesses, got {y.size}")
    n, y_max, y_mean = y.size, y.max(), y.mean()

    def profile(theta: float) -> float:
        """Log-likelihood maximised over (ξ, σ) with ξ/σ = θ; θ → 0 is the exponential limit."""
        if abs(theta) < 1e-12 / y_mean:
            return -n * math.log(y_mean) - n
        xi = float(np.mean(np.log1p(theta * y)))
        return -n * math.log(xi / theta) - n * (1.0 + xi) if xi / theta > 0 else -math.inf

    # θ in (−1/y_max, ∞): a log-spaced grid on both sides of 0, then golden-section refinement
    negative = -(1.0 - np.logspace(-8, -0.001, 60)) / y_max
    positive = np.logspace(-6, 4, 120) / y_mean
    grid = np.r_[negative, 0.0, positive]
    values = np.array([profile(t) for t in grid])
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        lo, hi = (lo, b) if profile(a) >= profile(b) else (a, hi)
    theta = (lo + hi) / 2
    if profile(theta) < values[i]:
        theta = grid[i]
    if abs(theta) < 1e-12 / y_mean:
        return 0.0, float(y_mean)
    xi = float(np.mean(np.log1p(theta * y)))
    return xi, float(xi / theta)


def pot_threshold(energies: np.ndarray, target_fpr: float, initial_quantile: float = 0.98) -> Threshold:
    """Peaks-over-threshold at ``target_fpr``: a GPD fitted to the energies above their
    ``initial_quantile`` (at least 20 of them), extrapolated to the target (module docstring)."""
    _check_fpr(target_fpr)
    energies = _finite_energies(energies)
    n = energies.size
    q = min(initial_quantile, 1.0 - 20.0 / n) if n > 40 else 0.5
    t = float(np.quantile(energies, q))
    excesses = energies[energies > t] - t
    if excesses.size < 10:
        raise InputError(f"peaks-over-threshold needs more rows: {n} energies leave {excesses.size} above the "
                         f"initial threshold (10 at least)")
    if not np.isfinite(excesses).all():
        raise InputError("peaks-over-threshold: some energies are infinite; calibrate on rows the model can score")
    xi, sigma = fit_gpd(excesses)
    ratio = target_fpr * n / excesses.size
    value = t - sigma * math.log(ratio) if abs(xi) < 1e-9 else t + sigma / xi * (ratio ** -xi - 1.0)
    if target_fpr * n >= excesses.size:  # the target lies below the initial threshold: the data resolve it
        value = float(np.quantile(energies, 1.0 - target_fpr))
    return Threshold(value=float(value), method="pot", provenance={
        "target_fpr": target_fpr, "rows": int(n), "initial_threshold": t, "initial_quantile": q,
        "excesses": int(excesses.size), "gpd_shape": xi, "gpd_scale": sigma})
