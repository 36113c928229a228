"""``aeserve.Detector``: a scikit-learn outlier detector around ``train_bundle`` and the runtime.

    from aeserve import Detector
    detector = Detector(kind="vae", latent=4, epochs=100).fit(X_train)   # array, DataFrame or pyarrow table
    detector.predict(X_new)              # +1 normal, -1 anomaly (scikit-learn's convention)
    detector.score_samples(X_new)        # -energy: higher is more normal
    detector.p_values(X_new)             # conformal p-values against the held-out validation energies
    detector.save("models/rows-vae")     # a bundle: aeserve score / serve / aeserve.load run it

Conventions (scikit-learn's ``OutlierMixin``, with PyOD's attributes beside them):

- ``score_samples(X) = -F(y)``, the negated energy; ``decision_function(X) = score_samples(X) -
  offset_`` with ``offset_ = -threshold_``, so a row is an anomaly (``predict`` -1) exactly when
  its energy exceeds ``threshold_``, as ``aeserve score`` flags it.
- ``threshold_``: with ``contamination="auto"`` the bundle's own threshold (the ``quantile`` of
  the validation energies held out at training); with a number, PyOD's rule: the energy that
  that share of the training rows exceeds.
- ``decision_scores_`` (energies of the training rows, higher = more anomalous), ``labels_`` (0/1
  on the training rows) and ``predict_proba`` (columns [normal, anomaly]: p and 1 − p, p the
  conformal p-value) as PyOD users know them.

The fitted model is the bundle ``train_bundle`` writes, kept in a private directory and scored
with the torch reference backend, so ``save(directory)`` gives a bundle whose ``backend="torch"``
scores are the estimator's bit for bit (and its ONNX graphs, exported and checked by ``save``,
agree within the export's parity tolerance). Pickling a fitted Detector (scikit-learn's
convention for persistence) carries the bundle's files, safetensors and JSON, as bytes; the
bundle format itself never pickles anything.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from aeserve.errors import InputError

__all__ = ["Detector", "KIND_PARAMETERS", "MIN_ROWS"]

#: batches of fewer rows are padded to this many, so that a row's score does not depend on its batch
MIN_ROWS = 64

#: the kinds' own options, each a constructor parameter (None: the kind's default; giving one
#: to a kind that does not own it is an error, as ``aeserve train`` says)
KIND_PARAMETERS = ("sparsity", "noise", "mask", "contraction", "beta", "energy", "free_samples",
                   "infer_steps", "infer_lr", "distance_weight", "latent_weight", "free_beta", "free_sigma")


class Detector(OutlierMixin, BaseEstimator):
    """An energy-based autoencoder outlier detector with scikit-learn's API (see the module doc).

    Parameters: ``kind`` (ae, dae, cae, vae, lvm); the layers (``hidden``, ``latent``,
    ``activation``, ``members``: an ensemble); the fit (``epochs``, ``batch_size``, ``lr``,
    ``patience``, ``weight_decay``, ``random_state``); the data (``val_fraction`` held out for
    early stopping, the threshold and the p-values; ``scaling`` standard or robust; for a mixed
    table ``categorical``, ``min_category_count``, ``max_categories``, and ``log``: numeric columns
    read on a log scale inside the bundle, names or 'auto', ``aeserve.transforms``); the threshold
    (``contamination``, ``quantile``); each kind's own options (``KIND_PARAMETERS``: None keeps
    the kind's default); ``verbose`` (1: one line per epoch on stderr)."""

    def __init__(self, kind: str = "vae", *, hidden=(256, 64), latent: int = 8, activation: str = "relu",
                 members: int = 1, epochs: int = 100, batch_size: int = 128, lr: float = 1e-3, patience: int = 10,
                 weight_decay: float = 0.0, random_state: int | None = 0, val_fraction: float = 0.1,
                 scaling: str = "standard", contamination="auto", quantile: float = 0.99, categorical=(),
                 min_category_count: int = 5, max_categories: int = 100, log=(), sparsity=None, noise=None, mask=None,
                 contraction=None, beta=None, energy=None, free_samples=None, infer_steps=None, infer_lr=None,
                 distance_weight=None, latent_weight=None, free_beta=None, free_sigma=None, verbose: int = 0):
        self.kind = kind
        self.hidden = hidden
        self.latent = latent
        self.activation = activation
        self.members = members
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.val_fraction = val_fraction
        self.scaling = scaling
        self.contamination = contamination
        self.quantile = quantile
        self.categorical = categorical
        self.min_category_count = min_category_count
        self.max_categories = max_categories
        self.log = log
        self.sparsity = sparsity
        self.noise = noise
        self.mask = mask
        self.contraction = contraction
        self.beta = beta
        self.energy = energy
        self.free_samples = free_samples
        self.infer_steps = infer_steps
        self.infer_lr = infer_lr
        self.distance_weight = distance_weight
        self.latent_weight = latent_weight
        self.free_beta = free_beta
        self.free_sigma = free_sigma
        self.verbose = verbose

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train on the rows of ``X`` (``y`` is ignored: training is unsupervised); returns self."""
        from aeserve.train.config import ModelConfig
        from aeserve.train.fit import FitConfig
        from aeserve.train.mixed import table_options
        from aeserve.train.pipeline import train_bundle

        self._check_contamination()
        table = self._training_table(X)
        if len(table.values) < 3:
            raise ValueError(f"Detector needs at least 3 rows (n_samples = {len(table.values)}): some are held out "
                             "for early stopping, the threshold and the p-values")
        if table.specs:  # a mixed table: always named columns
            self.n_features_in_ = len(table.columns)
            self.feature_names_in_ = np.asarray(table.columns, dtype=object)
        kind_options = {name: getattr(self, name) for name in KIND_PARAMETERS if getattr(self, name) is not None}
        config = ModelConfig(kind=self.kind, n_features=table.values.shape[1], hidden=tuple(self.hidden),
                             latent=self.latent, activation=self.activation, members=self.members,
                             **table_options(table.specs), **kind_options)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else \
            int(check_random_state(self.random_state).randint(2**31 - 1))  # None or a RandomState: drawn
        fit_config = FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                               patience=self.patience, weight_decay=self.weight_decay)
        self._close()
        self._directory = tempfile.TemporaryDirectory(prefix="aeserve-detector-")
        path = Path(self._directory.name) / "bundle"
        train_bundle(table, path, config, fit_config,
                     quantile=self.quantile, val_fraction=self.val_fraction, scaling=self.scaling, export=False,
                     name="detector", on_epoch=self._progress if self.verbose else None)
        self._open(path)
        self.decision_scores_ = self._energies(table.values, encoded=True).astype(np.float64)
        if self.contamination == "auto":
            self.threshold_ = float(self.model_.threshold)
        else:
            self.threshold_ = float(np.percentile(self.decision_scores_, 100.0 * (1.0 - self.contamination)))
        self.offset_ = -self.threshold_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def _check_contamination(self) -> None:
        if isinstance(self.contamination, str) and self.contamination == "auto":
            return
        if not isinstance(self.contamination, (int, float)) or not 0.0 < float(self.contamination) <= 0.5:
            raise ValueError(f"contamination must be 'auto' or a number in (0, 0.5], got {self.contamination!r}")

    def _training_table(self, X):
        """The rows to train on: a mixed table (text, booleans, missing cells) as ``typed_table``
        encodes it, else float32 rows checked by scikit-learn (names kept from a DataFrame)."""
        from aeserve.tables import Table, typed_table

        if not _is_array(X):
            typed = typed_table(X, "Detector.fit", categorical=tuple(self.categorical),
                                min_category_count=self.min_category_count, max_categories=self.max_categories,
                                log=self.log)
            if typed is not None:
                return typed
        elif self.categorical or self.log:
            raise ValueError("categorical and log name columns of a DataFrame or pyarrow table (log: or 'auto'); "
                             "an array has no names")
        values = validate_data(self, _plain(X), dtype=np.float32, reset=True)
        names = list(getattr(self, "feature_names_in_", [f"x{i}" for i in range(values.shape[1])]))
        return Table(np.ascontiguousarray(values, np.float32), [str(n) for n in names], "Detector.fit")

    def _progress(self, epoch: int, train_energy: float, val_energy: float) -> None:
        import sys

        print(f"epoch {epoch}: train energy {train_energy:.4g}, validation energy {val_energy:.4g}", file=sys.stderr)

    # -- the fitted bundle ---------------------------------------------------------------------
    def _open(self, path: Path) -> None:
        import aeserve

        self.model_ = aeserve.load(path, backend="torch")
        self.bundle_path_ = path

    def _close(self) -> None:
        model = self.__dict__.pop("model_", None)
        if model is not None:
            model.close()
        directory = self.__dict__.pop("_directory", None)
        if directory is not None:
            directory.cleanup()

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("model_", "_directory", "bundle_path_")}
        if "model_" in self.__dict__:  # the bundle's files (safetensors, JSON) as bytes
            root = self.bundle_path_
            state["_bundle_files"] = {p.relative_to(root).as_posix(): p.read_bytes()
                                      for p in sorted(root.rglob("*")) if p.is_file()}
        return state

    def __setstate__(self, state):
        files = state.pop("_bundle_files", None)
        self.__dict__.update(state)
        if files is not None:
            self._directory = tempfile.TemporaryDirectory(prefix="aeserve-detector-")
            path = Path(self._directory.name) / "bundle"
            for rel, data in files.items():
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                (path / rel).write_bytes(data)
            self._open(path)

    def __del__(self):
        with contextlib.suppress(Exception):
            self._close()

    def save(self, directory, *, force: bool = False, export: bool = True) -> Path:
        """Write the fitted model as a bundle at ``directory`` (``aeserve score``, ``serve`` and
        ``aeserve.load`` run it) with ONNX graphs checked against torch unless ``export=False``;
        the threshold is this estimator's ``threshold_``. Returns the path."""
        import dataclasses

        from aeserve.bundle import Bundle
        from aeserve.manifest import Threshold
        from aeserve.train.pipeline import replace_directory

        check_is_fitted(self, "model_")
        target = Path(directory)
        if target.exists() and not force:
            raise InputError(f"{target}: already exists; replace it with force=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        built = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(self.bundle_path_, built, dirs_exist_ok=True)
            bundle = Bundle.open(built)
            if self.threshold_ != bundle.threshold:
                how = {"method": "quantile", "provenance": {"contamination": float(self.contamination),
                                                            "on": "training rows (Detector)"}}
                bundle.write(dataclasses.replace(bundle.manifest, threshold=Threshold(value=self.threshold_, **how)))
            if export:
                from aeserve.export.onnx import export_onnx

                kept = bundle.kept_rows()
                export_onnx(built, check_rows=kept[1] if kept is not None else None)
            replace_directory(built, target, force)
        except BaseException:
            shutil.rmtree(built, ignore_errors=True)
            raise
        return target

    # -- scoring -----------------------------------------------------------------------------
    def _rows(self, X):
        """``X`` as the model takes it: checked float32 rows, or a mixed model's table."""
        check_is_fitted(self, "model_")
        if self.model_.encoding is not None:
            if _is_array(X):
                raise ValueError(f"this Detector was fitted on a table of typed columns "
                                 f"({', '.join(self.model_.features[:5])}, ...): pass a DataFrame or pyarrow table")
            return X
        return validate_data(self, _plain(X), dtype=np.float32, reset=False)

    def _energies(self, X, encoded: bool = False) -> np.ndarray:
        """F(y) per row (n,) float32. Fewer than ``MIN_ROWS`` rows are padded to that many: float32
        GEMMs of a few rows sum in another order than those of many, and a row's score must not
        depend on the rows it comes with (scikit-learn checks it)."""
        from aeserve.readers import CheckedRows

        rows = self._rows(X) if not encoded else X
        if self.model_.encoding is not None and not encoded:
            rows = self.model_.encoding.encode_rows(rows, "X")
        rows = np.ascontiguousarray(rows, np.float32)
        n = len(rows)
        if 0 < n < MIN_ROWS:
            rows = np.concatenate([rows, np.repeat(rows[-1:], MIN_ROWS - n, axis=0)])
        return self.model_.energy(CheckedRows(rows))["energy"][:n]

    def score_samples(self, X) -> np.ndarray:
        """-F(y) per row (n,) float64: higher is more normal (scikit-learn's sign)."""
        return -self._energies(X).astype(np.float64)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_`` (n,): negative for anomalies (energy above ``threshold_``)."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for normal rows, -1 for anomalies (n,) int."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def p_values(self, X) -> np.ndarray:
        """Conformal p-values (n,): (1 + #{held-out energies >= e}) / (n_held_out + 1)."""
        energies = self._energies(X)  # checks that the detector is fitted
        return self.model_.p_values(energies)

    def score_frame(self, X):
        """The runtime's score columns for ``X`` (energy, its terms, p_value, anomaly at
        ``threshold_``), as ``aeserve.load(...).score`` gives them: for a DataFrame, a DataFrame
        on its index, its columns taken by name."""
        check_is_fitted(self, "model_")
        if hasattr(X, "columns") and hasattr(X, "index"):
            return self.model_.score(X, self.threshold_)
        return self.model_.score(self._rows(X), self.threshold_)

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): [p, 1 − p], p the conformal p-value: how typical of the held-out normal rows a
        row is (PyOD's column order: normal, anomaly); not a posterior probability of anomaly."""
        p = self.p_values(X)
        return np.stack([p, 1.0 - p], axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _is_array(X) -> bool:
    """Whether ``X`` is rows without column names (an array, a list of lists, a sparse matrix:
    scikit-learn refuses the last with its own message)."""
    from scipy import sparse

    if sparse.issparse(X):
        return True
    return not (hasattr(X, "columns") or hasattr(X, "column_names") or isinstance(X, dict))


def _plain(X):
    """A pyarrow table as a DataFrame (scikit-learn validates that); anything else as it is."""
    return X.to_pandas() if hasattr(X, "column_names") and hasattr(X, "to_pandas") else X
