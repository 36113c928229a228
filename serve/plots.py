"""Pictures of a detector: energy histogram, ROC/PR, the latent map (the seed's VAE
"bubbles"), reconstructions, training curves. matplotlib (headless Agg), no torch.

Every plot is a registered function ``(Figure, PlotData) -> None``; ``render`` draws one
to a PNG of a fixed pixel size (``SIZE`` at ``DPI``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.atomic import atomic_path
from aeserve.errors import BackendUnavailable, InputError
from aeserve.evaluation import auroc, average_precision, pr_curve, roc_curve
from aeserve.readers import CheckedRows
from aeserve.serve.model import Model

__all__ = ["PlotData", "PLOTS", "render", "render_png_bytes", "load_plot_data", "SIZE", "DPI"]

SIZE = (8.0, 5.0)  # inches
DPI = 100          # -> 800 x 500 pixels


@dataclass
class PlotData:
    """A model, the rows to picture, their energies and (optionally) labels (1 = anomaly)."""

    model: Model
    rows: np.ndarray            # (n, features) raw
    energies: np.ndarray        # (n,)
    labels: np.ndarray | None   # (n,) 0/1, or None

    @property
    def has_both_classes(self) -> bool:
        """Labels are given and hold normal and anomalous rows: ROC, PR and AUROC are defined."""
        return self.labels is not None and len(np.unique(self.labels)) == 2


def load_plot_data(model: Model, source: str | Path, labels: str | None = None,
                   max_rows: int = 20000) -> PlotData:
    """Read rows (and a label column) from ``source`` and score them."""
    from aeserve.tables import read_model_rows

    rows, label_values = read_model_rows(source, model.bundle.manifest.input, labels)  # a series': its windows
    rows = rows[:max_rows]
    if label_values is not None:
        label_values = label_values[:max_rows]
        if not np.isin(label_values, (0, 1)).all():
            raise InputError(f"{source}: label column {labels!r} must hold 0 (normal) and 1 (anomaly)")
    return PlotData(model, rows, model.energy(CheckedRows(rows))["energy"], label_values)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BackendUnavailable("plots need matplotlib: pip install 'aeserve[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour_values(data: PlotData) -> tuple[np.ndarray, str]:
    if data.labels is not None:
        return data.labels, "label (1 = anomaly)"
    return np.log10(np.maximum(data.energies, 1e-12)), "log10 energy"


def plot_energy(fig, data: PlotData) -> None:
    """Histogram of energies (log scale) with the bundle's threshold."""
    ax = fig.add_subplot(1, 1, 1)
    values = np.log10(np.maximum(data.energies, 1e-12))
    bins = np.linspace(values.min(), values.max() + 1e-9, 50)
    if data.labels is None:
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8, label="rows")
    else:
        ax.hist(values[data.labels == 0], bins=bins, alpha=0.6, label="normal", color="tab:blue")
        ax.hist(values[data.labels == 1], bins=bins, alpha=0.6, label="anomaly", color="tab:red")
    threshold = data.model.threshold
    flagged = float((data.energies > threshold).mean())
    ax.axvline(math.log10(max(threshold, 1e-12)), color="black", linestyle="--",
               label=f"threshold {threshold:.4g} ({flagged:.1%} flagged)")
    ax.set_xlabel("log10 energy F(y)")
    ax.set_ylabel("rows")
    ax.set_title(f"Energy of {len(values):,} rows ({data.model.kind})")
    ax.legend()


def plot_roc(fig, data: PlotData) -> None:
    """ROC and precision-recall curves with AUROC and average precision (needs labels)."""
    if not data.has_both_classes:
        raise InputError("the roc plot needs --labels naming a 0/1 column with both classes")
    fpr, tpr, _ = roc_curve(data.energies, data.labels)
    recall, precision = pr_curve(data.energies, data.labels)
    score = auroc(data.energies[data.labels == 0], data.energies[data.labels == 1])
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(fpr, tpr, color="tab:red")
    ax1.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax1.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC, AUROC {score:.3f}")
    ax2.plot(recall, precision, color="tab:purple")
    ax2.axhline(float(data.labels.mean()), color="grey", linestyle=":")
    ax2.set(xlabel="recall", ylabel="precision",
            title=f"PR, average precision {average_precision(data.energies, data.labels):.3f}")


def _projection(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and 2-D basis (latent, 2): identity for 2-D codes, else the first two PCA axes."""
    centre = codes.mean(axis=0)
    if codes.shape[1] <= 2:
        return centre, np.eye(codes.shape[1], 2)
    _, _, vt = np.linalg.svd(codes - centre, full_matrices=False)
    return centre, vt[:2].T


def plot_latent(fig, data: PlotData) -> None:
    """Codes in 2-D (PCA when latent > 2); a VAE's rows as the seed's bubbles: ellipses of
    centre μ and radii √v (its posterior's 1-σ region), coloured by label or energy."""
    from matplotlib.patches import Ellipse

    ax = fig.add_subplot(1, 1, 1)
    rows = data.rows[:2000]
    colour, colour_label = _colour_values(data)
    colour = colour[:2000]
    codes = data.model.encode_all(CheckedRows(rows))
    mu, logvar = next(iter(codes.values())), codes.get("logvar")
    centre, basis = _projection(mu)
    points = (mu - centre) @ basis  # (n, 2)
    if points.shape[1] == 1:
        points = np.c_[points, np.zeros(len(points))]
    cmap = __import__("matplotlib").colormaps["coolwarm"]
    norm = __import__("matplotlib").colors.Normalize(colour.min(), colour.max() + 1e-12)
    if logvar is not None:
        for point, lv, c in zip(points, np.exp(logvar), colour):
            cov = basis.T @ np.diag(lv) @ basis  # the posterior's covariance, projected
            eigval, eigvec = np.linalg.eigh(cov)
            angle = math.degrees(math.atan2(eigvec[1, 1], eigvec[0, 1]))
            ax.add_patch(Ellipse(point, 2 * math.sqrt(eigval[1]), 2 * math.sqrt(eigval[0]), angle=angle,
                                 facecolor=cmap(norm(c)), edgecolor="none", alpha=0.15))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=colour, cmap=cmap, norm=norm, s=8)
    fig.colorbar(scatter, ax=ax, label=colour_label)
    axes = "PCA 1 / PCA 2 of" if mu.shape[1] > 2 else "z1 / z2,"
    ax.set(xlabel="latent axis 1", ylabel="latent axis 2",
           title=f"Latent map ({axes} {mu.shape[1]}-D codes)" + (": bubbles = N(μ, v), 1σ" if logvar is not None else ""))
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")


def plot_reconstructions(fig, data: PlotData, count: int = 6) -> None:
    """The lowest- and highest-energy rows beside their reconstructions: side by side as
    images when the row is a square picture (e.g. 8x8 digits), else as feature profiles."""
    order = np.argsort(data.energies)
    picks = np.r_[order[: count // 2], order[-(count - count // 2):]]
    if data.model.encoding is not None:
        raise InputError("the reconstructions plot draws numeric rows; for a table of typed columns, "
                         "aeserve score --explain K names each row's unusual columns and their expected values")
    rows = data.rows[picks]
    rebuilt = data.model.reconstruct(CheckedRows(rows))
    side = int(round(math.sqrt(rows.shape[1])))
    square = side * side == rows.shape[1] and side > 2
    if not square:  # profiles in the model's own units, so every feature is visible
        prep = data.model.bundle.manifest.preprocessing
        shift, scale = np.asarray(prep.shift), np.asarray(prep.scale)
        rows, rebuilt = (rows - shift) / scale, (rebuilt - shift) / scale
    for i, (row, rec, index) in enumerate(zip(rows, rebuilt, picks)):
        tag = f"row {index}, F={data.energies[index]:.3g}"
        if square:  # top row: inputs; bottom row: their reconstructions
            for j, (image, what) in enumerate(((row, "input"), (rec, "rebuilt"))):
                ax = fig.add_subplot(2, count, j * count + i + 1)
                ax.imshow(image.reshape(side, side), cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{tag}\n{what}" if j == 0 else what, fontsize=7)
        else:
            ax = fig.add_subplot(2, math.ceil(count / 2), i + 1)
            ax.plot(row, label="input", color="tab:blue")
            ax.plot(rec, label="rebuilt", color="tab:orange", linestyle="--")
            ax.set_title(tag, fontsize=8)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.legend(fontsize=6)
    fig.suptitle("Lowest- and highest-energy rows and their reconstructions"
                 + ("" if square else " (preprocessed units)"))


def plot_training(fig, data: PlotData) -> None:
    """Train and validation energy per epoch, from the manifest's training record."""
    training = data.model.bundle.manifest.training
    history = training.history if training is not None else {}
    ax = fig.add_subplot(1, 1, 1)
    for key, colour in (("train_energy", "tab:blue"), ("val_energy", "tab:orange")):
        values = history.get(key, [])
        ax.plot(range(1, len(values) + 1), values, label=key.replace("_", " "), color=colour)
    best = training.best_epoch if training is not None else None
    if best:
        ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best}")
    ax.set(xlabel="epoch", ylabel="mean energy (loss functional)", yscale="log", title="Training")
    ax.legend()


PLOTS: dict[str, Callable] = {"energy": plot_energy, "roc": plot_roc, "latent": plot_latent,
                              "reconstructions": plot_reconstructions, "training": plot_training}


def render_png_bytes(what: str, data: PlotData) -> bytes:
    """Draw plot ``what`` and return the PNG bytes (SIZE at DPI)."""
    if what not in PLOTS:
        raise InputError(f"unknown plot {what!r}; choose from {', '.join(PLOTS)}")
    plt = _pyplot()
    fig = plt.figure(figsize=SIZE, dpi=DPI)
    try:
        PLOTS[what](fig, data)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def render(what: str, data: PlotData, out: str | Path) -> Path:
    """Write plot ``what`` to the PNG file ``out``, atomically."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: plots are written as .png")
    png = render_png_bytes(what, data)
    with atomic_path(out) as tmp:
        tmp.write_bytes(png)
    return out
