"""The runtime model: numpy in, numpy out, on any backend; no torch unless asked for."""

from __future__ import annotations

import os

import numpy as np

from aeserve.batches import auto_batch_size, row_batches
from aeserve.bundle import GRAPH_INPUTS, Bundle, code_columns
from aeserve.columns import TableEncoding
from aeserve.conformal import benjamini_hochberg, check_alpha, p_values
from aeserve.errors import BundleError, InputError
from aeserve.manifest import CONTRIBUTIONS
from aeserve.readers import CheckedRows, check_finite
from aeserve.serve.backends import create_backend

__all__ = ["Model", "load", "row_batches", "auto_batch_size"]

class Model:
    """A loaded bundle. Every method takes rows (n, width) and returns arrays with n rows.

    Inputs are validated (width, dtype, finite values; ``CheckedRows`` only for width) and
    split into batches of ``batch_size`` here alone; methods are safe to call from several
    threads at once.
    """

    def __init__(self, bundle: Bundle, backend, batch_size: int | None = None):
        batch_size = auto_batch_size(bundle) if batch_size is None else batch_size
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.bundle = bundle
        self.backend = backend
        self.batch_size = batch_size
        self.features = bundle.features
        self.latent_size = bundle.latent_size
        self.threshold = bundle.threshold
        self.terms = bundle.energy_terms
        self.kind = bundle.kind
        self.code_names = code_columns(self.latent_size)
        #: the encoder graph's outputs, the code first: ("z",), or a VAE's ("mu", "logvar")
        self.encoder_outputs = bundle.manifest.encoder_outputs
        #: a mixed table's columns and encoding (None for numeric rows): methods then take tables
        self.encoding = TableEncoding.of(bundle.manifest.input)
        #: a series bundle's window (None otherwise): methods take windows (n, channels x size),
        #: channel-major; the file verbs and the server cut series into them
        self.window = bundle.manifest.input.window
        #: the held-out validation energies, sorted (n,) float64: the reference of ``p_value``
        #: (None for a bundle trained before they were kept)
        self.reference = bundle.held_out_energies()

    def preload(self) -> "Model":
        """Load every graph now rather than at its first call (backends that load lazily), so
        that files changing on disk later cannot reach this model; returns the model."""
        self.backend.preload()
        return self

    def close(self) -> None:
        """Free what the backend holds (sessions, TensorRT engines, device memory)."""
        self.backend.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Model(kind={self.kind!r}, features={len(self.features)}, latent={self.latent_size}, "
                f"backend={self.backend.describe()!r})")

    @property
    def backend_name(self) -> str:
        """Name of the backend in use (``auto`` resolved)."""
        return self.backend.name

    @property
    def backend_reason(self) -> str:
        """Why this backend was chosen (``auto``'s reasoning, or "asked for")."""
        return self.backend.reason

    # -- plumbing ------------------------------------------------------------------------
    def _input_rows(self, data) -> np.ndarray:
        """The bundle's input rows, checked: numeric rows as ``_rows`` takes them; a mixed bundle's
        as a table (pyarrow, pandas, dict of columns), encoded here, or ``CheckedRows`` already
        encoded (by a reader or the server)."""
        if self.encoding is None and _is_table(data):  # columns by name, the others ignored
            from aeserve.columns import as_arrow_table

            if self.bundle.manifest.input.image:
                raise InputError("rows: an image bundle takes pixel rows (an array), not a table")
            table = as_arrow_table(data, self.features)
            data = np.stack([np.asarray(table.column(n).to_numpy(zero_copy_only=False), dtype=np.float32)
                             for n in self.features], axis=1)
        if self.encoding is None or isinstance(data, CheckedRows):
            return self._rows(data, self.features, "rows", width=self.bundle.n_features)
        if isinstance(data, np.ndarray):
            shown = ", ".join(self.features[:6]) + (", ..." if len(self.features) > 6 else "")
            raise InputError(f"rows: this bundle takes a table of typed columns ({shown}): "
                             "pass a pyarrow Table, a pandas DataFrame or a dict of columns")
        return self.encoding.encode_rows(data, "rows")

    def _rows(self, data, names: list[str], what: str, width: int | None = None) -> np.ndarray:
        """``data`` as float32 (n, width), checked; ``CheckedRows`` (checked by a reader or the
        request decoder) are taken as they are, their width alone checked. ``width`` defaults
        to one value per name."""
        width = len(names) if width is None else width
        if isinstance(data, CheckedRows):
            if data.values.ndim != 2 or data.values.shape[1] != width:
                raise InputError(f"{what}: expected shape (rows, {width}), got {data.values.shape}")
            return data.values
        array = np.asarray(data)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != width:
            raise InputError(f"{what}: expected shape (rows, {width}), got {tuple(np.shape(data))}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InputError(f"{what}: expected numbers, got dtype {array.dtype}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        check_finite(array, names, what)
        return array

    def _run(self, graph: str, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        batches = [{GRAPH_INPUTS[graph]: x[rows]} for rows in row_batches(len(x), self.batch_size)]
        if len(batches) > 1:
            parts = self.backend.run_batches(graph, batches, outputs)  # several in flight (OpenVINO)
        else:
            parts = [self.backend.run(graph, feeds, outputs) for feeds in batches]
        if not parts:
            return [np.empty((0,), np.float32) for _ in (outputs or [None])]
        return [np.concatenate(outputs) for outputs in zip(*parts)]

    # -- public API ----------------------------------------------------------------------
    def encode(self, rows) -> np.ndarray:
        """Codes z (n, latent); for a VAE the mean μ."""
        return self._run("encoder", self._input_rows(rows))[0]

    def encode_all(self, rows) -> dict[str, np.ndarray]:
        """Every encoder output by name, each (n, latent): {"z"}, or a VAE's {"mu", "logvar"}."""
        return dict(zip(self.encoder_outputs, self._run("encoder", self._input_rows(rows))))

    def encode_distribution(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(μ, log v), each (n, latent), from an encoder whose outputs are mu and logvar (a VAE's)."""
        if tuple(self.encoder_outputs) != ("mu", "logvar"):
            raise InputError(f"encode_distribution needs an encoder with outputs mu and logvar (a vae bundle); "
                             f"this {self.kind} bundle's encoder gives {', '.join(self.encoder_outputs)}")
        outputs = self.encode_all(rows)
        return outputs["mu"], outputs["logvar"]

    def decode(self, codes):
        """Rows (n, features) in raw units from codes (n, latent); a mixed bundle's as named
        columns (numbers, booleans, category names)."""
        rows = self._run("decoder", self._rows(codes, self.code_names, "codes"), ["y_tilde"])[0]
        return rows if self.encoding is None else self.encoding.decode(rows)

    def reconstruct(self, rows):
        """decode(encode(rows)): ỹ in raw units (a VAE decodes μ); a mixed bundle's as named columns."""
        return self.decode(self.encode(rows))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` new rows: z = m + L ε, ε ~ N(0, I) seeded; the VAE's prior, else fitted codes."""
        if n < 0:
            raise InputError(f"cannot sample {n} rows")
        latent = self.bundle.manifest.latent
        mean = np.asarray(latent.mean, dtype=np.float64)
        chol = np.asarray(latent.cholesky, dtype=np.float64).reshape(mean.size, mean.size)
        eps = np.random.default_rng(seed).standard_normal((n, mean.size))
        return self.decode((mean + eps @ chol.T).astype(np.float32))

    def energy(self, rows) -> dict[str, np.ndarray]:
        """Per-row energy F(y) and its terms (which sum to it), each (n,); for a DataFrame, a
        DataFrame on its index."""
        return _aligned(rows, self._energy(rows), self.features)

    def _energy(self, rows) -> dict[str, np.ndarray]:
        names = ["energy", *self.terms]
        return dict(zip(names, self._run("energy", self._input_rows(rows), names)))

    def explain(self, rows, k: int | None = None) -> dict[str, np.ndarray]:
        """``energy`` and its terms, plus ``contributions`` (n, features): each feature's exact term
        of the reconstruction cost C (they sum to ``reconstruction``; an image's per-pixel map).
        With ``k``: ``top_features`` (n, k) feature names, largest term first, and ``top_shares``
        (n, k), each term's share of C; a mixed bundle's are per column, with ``top_explanations``.
        For a DataFrame, a DataFrame on its index (``_aligned`` names the columns)."""
        return _aligned(rows, self._explain(rows, k), self.features)

    def _explain(self, rows, k: int | None) -> dict[str, np.ndarray]:
        if CONTRIBUTIONS not in self.bundle.graph("energy").outputs:
            raise BundleError(f"{self.bundle.path}: its energy graph has no per-feature {CONTRIBUTIONS} output "
                              f"(exported by an older aeserve); re-export: aeserve export {self.bundle.path}")
        names = ["energy", *self.terms, CONTRIBUTIONS]
        encoded = self._input_rows(rows)
        result = dict(zip(names, self._run("energy", encoded, names)))
        if k is not None:
            contributions = result[CONTRIBUTIONS]  # (n, features), or (n, columns) for a mixed table
            k = max(1, min(int(k), contributions.shape[1]))
            top = np.argsort(-contributions, axis=1, kind="stable")[:, :k]  # (n, k)
            total = np.maximum(contributions.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
            result["top_features"] = np.asarray(self.features, dtype=object)[top]
            result["top_shares"] = (np.take_along_axis(contributions, top, axis=1) / total).astype(np.float32)
            if self.encoding is not None:
                result["top_explanations"] = self._explain_columns(encoded, top)
        return result

    def _explain_columns(self, encoded: np.ndarray, top: np.ndarray) -> np.ndarray:
        """A mixed bundle's text for each of the ``top`` columns (n, k) of each row, naming the
        observed and the expected value: ``Home = 'other' (p 0.01); expected 'owner' (p 0.83)``."""
        from aeserve.serve.explain import describe_columns

        rebuilt, slot_p = self._run("decoder", self._run("encoder", encoded)[0], ["y_tilde", "slot_p"])
        return describe_columns(self.encoding, encoded, rebuilt, slot_p, top)

    def p_values(self, energies: np.ndarray) -> np.ndarray:
        """Conformal p-values (n,) float64 of ``energies``: (1 + #{held-out energies >= e}) / (n + 1)
        (``aeserve.conformal``); small means unlike the validation rows held out at training."""
        return p_values(self.reference_energies(), energies)

    def reference_energies(self) -> np.ndarray:
        """The held-out validation energies (n,) float64 sorted, or BundleError when the bundle keeps none."""
        if self.reference is None:
            raise BundleError(f"{self.bundle.path}: this bundle keeps no held-out validation energies "
                              "(it was trained before bundles kept them), so it has no p-values; retrain it")
        return self.reference

    def score(self, rows, threshold: float | None = None, *, explain: bool = False,
              k: int | None = None, fdr: float | None = None) -> dict[str, np.ndarray]:
        """``energy``, its terms, ``p_value`` (the conformal p-value against the held-out
        validation energies, when the bundle keeps them) and ``anomaly`` (uint8: 1 where energy >
        threshold, the manifest's by default; with ``fdr``, 1 for the rows Benjamini–Hochberg
        discovers among these rows at that false-discovery rate); with ``explain``, also what
        ``explain(rows, k)`` adds (contributions, top k features). For a pandas DataFrame, a
        DataFrame on its index (see ``_aligned``)."""
        if fdr is not None and threshold is not None:
            raise InputError("give a threshold or a false-discovery rate, not both")
        result = self._explain(rows, k) if explain else self._energy(rows)
        if self.reference is not None or fdr is not None:  # without held-out energies, fdr is refused here
            result["p_value"] = self.p_values(result["energy"])
        if fdr is not None:
            flagged = benjamini_hochberg(self.reference, result["energy"], check_alpha(fdr))
        else:
            flagged = result["energy"] > (self.threshold if threshold is None else float(threshold))
        result["anomaly"] = flagged.astype(np.uint8)
        return _aligned(rows, result, self.features)


def _is_frame(data) -> bool:
    """Whether ``data`` is a pandas DataFrame (duck-typed: pandas is not imported for the test)."""
    return hasattr(data, "columns") and hasattr(data, "dtypes") and hasattr(data, "index")


def _is_table(data) -> bool:
    """Whether ``data`` holds named columns: a DataFrame, a pyarrow table or batch, a dict."""
    return _is_frame(data) or hasattr(data, "column_names") or isinstance(data, dict)


def _aligned(rows, result: dict[str, np.ndarray], features: list[str]):
    """``result`` as it is, or for a pandas DataFrame ``rows`` a DataFrame on its index: one column
    per 1-D output; ``contributions`` as contribution_<feature>; the top K as feature_i, share_i
    (and a mixed bundle's explanation_i), i = 1..K, as ``aeserve score --explain`` writes them."""
    if not _is_frame(rows):
        return result
    import pandas as pd

    columns: dict[str, np.ndarray] = {}
    prefixes = {"top_features": "feature", "top_shares": "share", "top_explanations": "explanation"}
    for name, values in result.items():
        if values.ndim == 1:
            columns[name] = values
        elif name == CONTRIBUTIONS:
            columns.update({f"contribution_{f}": values[:, j] for j, f in enumerate(features)})
        else:
            columns.update({f"{prefixes.get(name, name)}_{i + 1}": values[:, i] for i in range(values.shape[1])})
    return pd.DataFrame(columns, index=rows.index)


def load(path: str | os.PathLike, backend: str = "auto", batch_size: int | None = None,
         **backend_options) -> Model:
    """Open and verify the bundle at ``path`` and run it on ``backend``.

    ``backend``: ``auto`` (TensorRT plans for this GPU, else onnxruntime with CUDA; on a CPU the
    fastest installed CPU backend, measured once per machine and bundle), ``tensorrt``,
    ``onnxruntime``, ``openvino`` or ``torch`` (the reference, from the weights; imports torch).
    ``device``: auto, cpu or cuda; ``hint`` (OpenVINO): throughput or latency.
    ``batch_size`` defaults to ``auto_batch_size(bundle)``.
    """
    bundle = Bundle.open(path)
    return Model(bundle, create_backend(backend, bundle, **backend_options), batch_size=batch_size)
