"""Rebuild the ready-made bundles in this folder, with fixed seeds: ``python models/build.py``.

- ``breast-cancer-vae``: a tabular VAE on scikit-learn's breast-cancer data, trained on 70% of the
  benign rows; malignant rows are the anomalies.
- ``digits-conv-ae``: a convolutional AE on scikit-learn's 8x8 digits, trained on 70% of the zeros;
  every other digit is an anomaly.

``held_out(name)`` gives the rows neither bundle saw (normal and anomalous, with labels); the test
suite checks each bundle's AUROC on them, and ``samples/`` holds a few of them as CSV files to
score. Needs ``aeserve[train,cpu]`` and scikit-learn; scoring the bundles needs ``aeserve[cpu]`` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUNDLES = ("breast-cancer-vae", "digits-conv-ae")
SEED = 0


def _data(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows, labels 1 = anomaly, feature names)."""
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "breast-cancer-vae":
        d = load_breast_cancer()
        return (d.data.astype(np.float32), (d.target == 0).astype(np.int64),
                [n.replace(" ", "_") for n in d.feature_names])
    d = load_digits()
    return (d.data.astype(np.float32) / 16.0, (d.target != 0).astype(np.int64),  # pixels in [0, 1]
            [f"px{i}" for i in range(64)])


def _split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training rows (70% of the normal ones) and of every other row."""
    normal = np.flatnonzero(labels == 0)
    normal = normal[np.random.default_rng(SEED).permutation(normal.size)]
    train = np.sort(normal[: int(round(0.7 * normal.size))])
    return train, np.setdiff1d(np.arange(labels.size), train)


def held_out(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The rows bundle ``name`` never saw, their labels (1 = anomaly) and the feature names."""
    rows, labels, names = _data(name)
    _, rest = _split(labels)
    return rows[rest], labels[rest], names


def build(name: str) -> Path:
    """Train bundle ``name`` into this folder (replacing it) and write its sample CSV."""
    from aeserve.tables import Table, write_table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    rows, labels, names = _data(name)
    train, _ = _split(labels)
    table = Table(rows[train], names, f"{name}.csv")
    if name == "breast-cancer-vae":
        config = ModelConfig(kind="vae", n_features=rows.shape[1], hidden=(32, 16), latent=4)
    else:
        config = ModelConfig(kind="ae", n_features=rows.shape[1], arch="conv", image_shape=(1, 8, 8),
                             channels=(8, 16), hidden=(32,), latent=4)
    out = HERE / name
    train_bundle(table, out, config, FitConfig(epochs=300, patience=20, seed=SEED), val_fraction=0.2, force=True)
    test_rows, test_labels, _ = held_out(name)
    pick = np.r_[np.flatnonzero(test_labels == 0)[:10], np.flatnonzero(test_labels == 1)[:10]]
    (HERE / "samples").mkdir(exist_ok=True)
    write_table(HERE / "samples" / f"{name}.csv",
                {**{n: test_rows[pick, i] for i, n in enumerate(names)}, "label": test_labels[pick]})
    return out


if __name__ == "__main__":
    import aeserve
    from aeserve.evaluation import auroc

    for bundle in BUNDLES:
        path = build(bundle)
        rows, labels, _ = held_out(bundle)
        energies = aeserve.load(path).energy(rows)["energy"]
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"{bundle}: {size / 1e6:.2f} MB, held-out AUROC "
              f"{auroc(energies[labels == 0], energies[labels == 1]):.4f} on {labels.size} rows")
