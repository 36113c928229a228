"""The bundle manifest as typed records: one read (``Manifest.from_json``), one write (``to_json``).

``manifest.json`` is parsed into frozen dataclasses; a missing or ill-typed field is a
:class:`~aeserve.errors.BundleError` naming it (``threshold.value: expected a number, got
'abc'``). Older layouts are migrated on read, one ``schema_version`` step at a time
(``MIGRATIONS``), so every bundle any aeserve wrote still loads; writes are always the
current version. Nothing outside this module indexes the manifest dictionary.

Layout of schema 4::

    schema_version, name, kind
    input          features, dtype, image? (shape (C, H, W), pixels), encoding (plain | mixed),
                   columns (each: name, type numeric | binary | categorical, vocabulary, missing,
                   rows, other, transform? (log: a numeric column the graphs take through
                   sign(y)·log(1 + |y|))), window? (size, channels, stride, time_column, group_column,
                   max_gap, layout: a series bundle's graphs take windows of its channels)
    preprocessing  method, shift, scale, clip, formula
    architecture   the kind's config: kind, n_features, hidden, latent, activation, cost, arch,
                   image_shape, channels, and the kind's own options (flat)
    energy         cost, regulariser, weight, terms, formula, and kind-specific details
    latent         size, sampler, mean, cholesky (sampling: z = mean + cholesky @ eps)
    threshold      value, method, provenance (how and on what it was calibrated)
    training       data (source, rows, train_rows, val_rows, sha256), epochs_run, best_epoch,
                   stopped, settings (optimiser and fit options), history, kept_rows? (file,
                   train, validation: rows kept for int8 calibration), held_out? (file, rows:
                   the validation rows' energies, the reference of p-values)
    versions       library -> version
    graphs         precision (fp32, int8, int8-static) -> graph (encoder, decoder, energy) -> file, inputs, outputs
    exports        onnx, int8, int8_static, tensorrt (plan directory -> build record), triton
    files          path inside the bundle -> sha256
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from aeserve.errors import BundleError
from aeserve.kind_names import KNOWN_KINDS, THRESHOLD_METHODS

__all__ = [
    "SCHEMA_VERSION",
    "KNOWN_KINDS",
    "CONTRIBUTIONS",
    "THRESHOLD_METHODS",
    "MIGRATIONS",
    "COLUMN_TYPES",
    "TRANSFORMS",
    "ColumnSpec",
    "table_layout",
    "parse_table_layout",
    "ImageSpec",
    "WindowSpec",
    "InputSpec",
    "Preprocessing",
    "Architecture",
    "EnergySpec",
    "LatentSampler",
    "Threshold",
    "DataRecord",
    "KeptRows",
    "HeldOut",
    "TrainingRecord",
    "GraphRecord",
    "TensorRTCheck",
    "OnnxExport",
    "Int8Export",
    "TensorRTBuild",
    "TritonExport",
    "Exports",
    "Manifest",
]

SCHEMA_VERSION = 4
#: what a table column can be: a number, true/false, or one of a vocabulary of categories
COLUMN_TYPES = ("numeric", "binary", "categorical")
#: the energy graph's per-feature output: C's terms, (batch, features), summing to its first term
CONTRIBUTIONS = "contributions"

#: marks the one dict field of a record that collects the JSON keys it does not name
_EXTRA = {"extra": True}


def _extra(default_factory=dict):
    return field(default_factory=default_factory, metadata=_EXTRA)


@dataclass(frozen=True)
class ImageSpec:
    """Image inputs: rows are flattened (C, H, W) pixels."""

    shape: tuple[int, ...]  # (C, H, W)
    pixels: str = "value / 255, channel-major (C, H, W), flattened"


@dataclass(frozen=True)
class ColumnSpec:
    """One input column as training saw it: its type, a categorical column's vocabulary (slot i
    is ``vocabulary[i]``; one more slot, "other", takes rarer and unseen categories), and how
    many of the ``rows`` training rows had it missing (and, categorical, fell in "other")."""

    name: str
    type: str = "numeric"
    vocabulary: tuple[str, ...] = ()
    missing: int = 0
    rows: int = 0
    other: int = 0
    #: "log": a numeric column the graphs read as sign(y)·log(1 + |y|) before standardising (and
    #: decode back); None: as it is
    transform: str | None = None

    @property
    def slots(self) -> int:
        """Values the model tells apart: 1 for a number or a boolean; the vocabulary + "other"."""
        return len(self.vocabulary) + 1 if self.type == "categorical" else 1

    @property
    def may_be_missing(self) -> bool:
        """Whether training saw this column missing (then the decoder predicts its missing-indicator)."""
        return self.missing > 0


#: value transforms a numeric column may take inside the graphs (``ColumnSpec.transform``)
TRANSFORMS = ("log",)


def table_layout(columns) -> tuple[str, ...]:
    """A mixed table's columns as ``Architecture.table`` holds them: 'numeric', 'numeric:log' (read
    through the signed log), 'binary' or 'categorical:K' (K slots), with '?' when training saw the
    column missing."""
    def entry(c):
        if c.type == "categorical":
            return f"categorical:{c.slots}"
        return f"{c.type}:{c.transform}" if c.transform else c.type
    return tuple(entry(c) + ("?" if c.may_be_missing else "") for c in columns)


def parse_table_layout(layout) -> list[tuple[str, int, bool, str | None]]:
    """``table_layout``'s entries as (type, slots, seen missing, transform); ValueError for a bad entry."""
    parsed = []
    for entry in layout:
        column_type, _, detail = entry.rstrip("?").partition(":")
        categorical = column_type == "categorical"
        if column_type not in COLUMN_TYPES or (categorical and not detail.isdigit()) or \
                (not categorical and detail and not (column_type == "numeric" and detail in TRANSFORMS)):
            raise ValueError(f"bad column layout entry {entry!r}")
        parsed.append((column_type, int(detail) if categorical else 1, entry.endswith("?"),
                       None if categorical else detail or None))
    return parsed


#: how a window's values are laid out in the graphs' rows (``WindowSpec.layout``)
WINDOW_LAYOUT = "channel-major: value c*size + l is channel c at row t-(size-1-l), t the window's last row"


@dataclass(frozen=True)
class WindowSpec:
    """A series bundle's window: the graphs take rows of ``size`` consecutive rows of the
    ``channels`` (channel-major: all of channel 0's lags, oldest first, then channel 1's, ...);
    the runtime cuts a series into them, one window ending at every row. Rows are ordered by
    ``time_column`` (file order without one), each value of ``group_column`` is its own series,
    and a step in time larger than ``max_gap`` (in the time column's unit; seconds for
    timestamps) starts a new series. ``stride``: the step between training windows."""

    size: int
    channels: tuple[str, ...]
    stride: int = 1
    time_column: str | None = None
    group_column: str | None = None
    max_gap: float | None = None
    layout: str = WINDOW_LAYOUT

    @property
    def cells(self) -> tuple[str, ...]:
        """The graphs' value names, channel-major: 'temp@t-2', 'temp@t-1', 'temp@t', 'load@t-2', ..."""
        return tuple(f"{c}@t-{lag}" if lag else f"{c}@t" for c in self.channels
                     for lag in range(self.size - 1, -1, -1))

    def same_windows(self, other: "WindowSpec | None") -> bool:
        """Whether ``other`` cuts a series into the same windows (size, channels, time, groups,
        gaps): then the rows a server holds for a sequence stay valid across a reload."""
        return other is not None and (self.size, self.channels, self.time_column, self.group_column,
                                      self.max_gap) == (other.size, other.channels, other.time_column,
                                                        other.group_column, other.max_gap)


@dataclass(frozen=True)
class InputSpec:
    """What one input row is: named float32 features (or flattened image pixels); or, with
    encoding ``mixed``, a table row of typed ``columns``, which the runtime encodes as 2 values
    per column (see ``aeserve.columns``): first each column's value (a number, 0/1, or the slot
    index of its category; 0 when missing), then each column's missing flag (0/1)."""

    features: tuple[str, ...]
    dtype: str = "float32"
    image: ImageSpec | None = None
    encoding: str = "plain"
    columns: tuple[ColumnSpec, ...] = ()
    window: WindowSpec | None = None  # a series bundle: ``features`` are its window's cells

    @property
    def mixed(self) -> bool:
        """Whether rows are typed tables (text, booleans, missing cells) encoded by the runtime."""
        return self.encoding == "mixed"

    @property
    def width(self) -> int:
        """Values per row the graphs take."""
        return 2 * len(self.columns) if self.mixed else len(self.features)

    @property
    def shape(self) -> list[int | None]:
        """The graphs' input shape: [None (batch), width]."""
        return [None, self.width]


@dataclass(frozen=True)
class Preprocessing:
    """ŷ = (y − shift) / scale, clipped to [0, 1] when ``clip``; baked into every graph."""

    method: str
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    clip: bool
    formula: str

    def typical_rows(self, n: int, seed: int = 0):
        """``n`` rows like the training data, in raw units: N(0, 1) in the preprocessed space
        (N(0.5, 0.25²) clipped to [0, 1] when ``clip``), mapped back; (n, width) float32."""
        import numpy as np

        shift, scale = np.asarray(self.shift, np.float32), np.asarray(self.scale, np.float32)
        draw = np.random.default_rng(seed).standard_normal((n, shift.size)).astype(np.float32)
        if self.clip:
            draw = np.clip(0.5 + 0.25 * draw, 0.0, 1.0)
        return shift + scale * draw


@dataclass(frozen=True)
class Architecture:
    """The network: layer sizes shared by every kind, plus the kind's own options (flat in JSON)."""

    kind: str
    n_features: int
    hidden: tuple[int, ...]
    latent: int
    activation: str = "relu"
    cost: str = "mse"
    arch: str = "mlp"
    image_shape: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()
    members: int = 1  # an ensemble's members (their energies averaged in one graph)
    table: tuple[str, ...] = ()  # a mixed table's columns: numeric, binary, categorical:K ('?': seen missing)
    options: dict[str, Any] = _extra()

    @property
    def model_width(self) -> int:
        """Values the first layer takes: the input row, or a mixed table's model space (each scalar
        column, each categorical column's slots padded to the widest, each missing flag)."""
        if not self.table:
            return self.n_features
        slots = [size for column_type, size, _, _ in parse_table_layout(self.table) if column_type == "categorical"]
        return len(self.table) - len(slots) + len(slots) * max(slots, default=1) + len(self.table)

    @classmethod
    def from_flat_dict(cls, data: dict[str, Any]) -> "Architecture":
        """From the kind config's flat dict (aeserve.train.config.ModelConfig.to_dict)."""
        return _from_json(cls, data, "architecture")

    def to_flat_dict(self) -> dict[str, Any]:
        """The flat dict the kind's config reads (aeserve.train.config.ModelConfig.from_dict)."""
        return _to_json(self)


@dataclass(frozen=True)
class EnergySpec:
    """F(y) = C(y, ỹ) + R: the cost, the regulariser and its weight, the terms summing to F."""

    cost: str
    regulariser: str
    weight: float
    terms: tuple[str, ...]
    formula: str
    details: dict[str, Any] = _extra()  # corruption (dae), inference (lvm)


@dataclass(frozen=True)
class LatentSampler:
    """How ``sample`` draws codes: z = mean + cholesky @ ε, ε ~ N(0, I)."""

    size: int
    sampler: str
    mean: tuple[float, ...]
    cholesky: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Threshold:
    """The anomaly threshold on the energy, how it was calibrated and on what."""

    value: float
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line such as '0.99 quantile of 36 validation energies' or 'pot at target FPR 0.001
        on 5000 rows of val.csv; realised FPR 0.0012, recall 0.93'."""
        p = self.provenance
        if "quantile" in p:  # set at training time
            return f"{p['quantile']} quantile of {p.get('rows', '?')} {p.get('on', 'validation')} energies"
        where = f" of {p['data']}" if "data" in p else ""
        target = f" at target FPR {p['target_fpr']:g}" if "target_fpr" in p else ""
        facts = [f"realised FPR {p['realised_fpr']:.4g}" if "realised_fpr" in p else "",
                 f"recall {p['recall']:.4g}" if "recall" in p else "", f"F1 {p['f1']:.4g}" if "f1" in p else ""]
        shown = ", ".join(f for f in facts if f)
        return f"{self.method}{target} on {p.get('rows', '?')} rows{where}" + (f"; {shown}" if shown else "")


@dataclass(frozen=True)
class DataRecord:
    """The training data: file name, row counts and the float32 rows' sha256."""

    source: str
    rows: int
    train_rows: int
    val_rows: int
    sha256: str


@dataclass(frozen=True)
class KeptRows:
    """A few training and validation rows kept in the bundle (raw units, safetensors tensors
    ``train`` and ``validation``): static int8 calibrates on the first and is checked on the
    second. ``aeserve train --keep-rows 0`` keeps none."""

    file: str
    train: int
    validation: int


@dataclass(frozen=True)
class HeldOut:
    """The energies of the validation rows held out at training (safetensors tensor ``energy``,
    (rows,) float32 sorted ascending, from the fp32 model): the reference of conformal p-values
    and of ``aeserve calibrate`` without data (``aeserve.conformal``)."""

    file: str
    rows: int


@dataclass(frozen=True)
class TrainingRecord:
    """How training went: data, epochs, why it stopped, the fit settings, per-epoch energies,
    the rows kept for calibration (None when none were kept) and the held-out validation
    energies (None in bundles of aeserve 0.x before they were kept)."""

    data: DataRecord
    epochs_run: int
    best_epoch: int
    stopped: str
    settings: dict[str, Any] = field(default_factory=dict)
    history: dict[str, tuple[float, ...]] = field(default_factory=dict)
    kept_rows: KeptRows | None = None
    held_out: HeldOut | None = None


@dataclass(frozen=True)
class GraphRecord:
    """One ONNX graph: its file in the bundle and its tensor names, outputs in run order."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class TensorRTCheck:
    """Whether TensorRT's ONNX parser would take the graphs (checked at export)."""

    parser_compatible: bool
    problems: tuple[str, ...] = ()
    opset_range: tuple[int, ...] = ()


@dataclass(frozen=True)
class OnnxExport:
    """The ONNX export: opset, exporter, the parity measured against torch, the TensorRT check."""

    opset: int
    exporter: str
    parity: dict[str, Any]
    tensorrt_check: TensorRTCheck
    details: dict[str, Any] = _extra()


@dataclass(frozen=True)
class Int8Export:
    """The int8 graphs: how they were quantised and how far their energies are from fp32."""

    method: str
    weights: str
    tolerance: float
    energy_median_relative_error: float
    details: dict[str, Any] = _extra()


@dataclass(frozen=True)
class TensorRTBuild:
    """Plans built in one ``tensorrt/<dir>``: for which GPU and TensorRT, at what precision."""

    precision: str
    plans: dict[str, dict[str, Any]]
    gpu: str | None = None
    compute_capability: tuple[int, ...] = ()
    tensorrt: str | None = None
    details: dict[str, Any] = _extra()


@dataclass(frozen=True)
class TritonExport:
    """The last Triton model repository written from this bundle."""

    repository: str
    models: tuple[str, ...]
    platform: str
    max_batch_size: int


@dataclass(frozen=True)
class Exports:
    """Every export made from the bundle's weights."""

    onnx: OnnxExport | None = None
    int8: Int8Export | None = None
    int8_static: Int8Export | None = None  # OpenVINO IR quantised by NNCF on the kept rows
    tensorrt: dict[str, TensorRTBuild] = field(default_factory=dict)
    triton: TritonExport | None = None


@dataclass(frozen=True)
class Manifest:
    """The whole manifest. Change it with ``dataclasses.replace``; write it with
    ``aeserve.bundle.write_manifest`` (which records the files' sha256)."""

    schema_version: int
    name: str
    kind: str
    input: InputSpec
    preprocessing: Preprocessing
    architecture: Architecture
    energy: EnergySpec
    latent: LatentSampler
    threshold: Threshold
    versions: dict[str, Any]
    training: TrainingRecord | None = None
    graphs: dict[str, dict[str, GraphRecord]] = field(default_factory=dict)
    exports: Exports = field(default_factory=Exports)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest.json") -> "Manifest":
        """Parse a decoded manifest.json (any schema version written so far) into records."""
        if not isinstance(data, dict):
            raise BundleError(f"{source}: expected a JSON object, got {_type_name(data)}")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
            raise BundleError(f"{source}: schema_version {version!r} is not supported "
                              f"(this aeserve reads 1 to {SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            data = MIGRATIONS[version](data)
            version += 1
        try:
            manifest = _from_json(cls, data, "")
        except BundleError as exc:
            raise BundleError(f"{source}: {exc}") from None
        _check_input(manifest.input, source)
        if manifest.kind not in KNOWN_KINDS:
            raise BundleError(f"{source}: unknown kind {manifest.kind!r}; this aeserve knows {', '.join(KNOWN_KINDS)}")
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict of the current schema."""
        return _to_json(self)

    def dumps(self) -> str:
        """manifest.json's text."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    def graph(self, name: str, precision: str = "fp32") -> GraphRecord | None:
        """The record of graph ``name`` at ``precision``, or None when it was not exported."""
        return self.graphs.get(precision, {}).get(name)

    def typical_rows(self, n: int, seed: int = 0):
        """``n`` rows like the training data as the graphs take them (probes, checks, bench): the
        preprocessing's draw, or a mixed table's valid encoded rows (whole slot indices, 0/1 flags)."""
        if self.input.mixed:
            from aeserve.columns import TableEncoding

            return TableEncoding(self.input.columns).typical_rows(self.preprocessing, n, seed)
        return self.preprocessing.typical_rows(n, seed)

    @property
    def encoder_outputs(self) -> tuple[str, ...]:
        """The encoder graph's outputs: the code first (z, or a VAE's mu), then any others (logvar)."""
        record = self.graph("encoder")
        return record.outputs if record is not None else ("z",)


def _check_input(spec: InputSpec, source: str) -> None:
    """BundleError when the input section contradicts itself (a bundle is untrusted)."""
    if spec.encoding not in ("plain", "mixed"):
        raise BundleError(f"{source}: field 'input.encoding': expected plain or mixed, got {spec.encoding!r}")
    for column in spec.columns:
        if column.type not in COLUMN_TYPES:
            raise BundleError(f"{source}: column {column.name!r}: type {column.type!r} is not one of "
                              f"{', '.join(COLUMN_TYPES)}")
        if column.transform is not None and (column.transform not in TRANSFORMS or column.type != "numeric"):
            raise BundleError(f"{source}: column {column.name!r}: transform {column.transform!r} is not one of "
                              f"{', '.join(TRANSFORMS)} on a numeric column")
        if column.type == "categorical" and len(set(column.vocabulary)) != len(column.vocabulary):
            raise BundleError(f"{source}: column {column.name!r}: its vocabulary repeats a category")
    if spec.mixed and tuple(c.name for c in spec.columns) != spec.features:
        raise BundleError(f"{source}: field 'input.columns' does not name the features in order")
    window = spec.window
    if window is not None:
        if window.size < 1 or window.stride < 1 or not window.channels or len(set(window.channels)) != len(window.channels):
            raise BundleError(f"{source}: field 'input.window': size and stride must be >= 1 and the channels "
                              f"distinct, got size {window.size}, stride {window.stride}, channels {window.channels}")
        if window.layout != WINDOW_LAYOUT or spec.features != window.cells or spec.mixed or spec.image:
            raise BundleError(f"{source}: field 'input.window' does not match the features (expected the "
                              f"{window.size} x {len(window.channels)} cells of numeric channels, {WINDOW_LAYOUT})")
        if window.max_gap is not None and not window.max_gap > 0:
            raise BundleError(f"{source}: field 'input.window.max_gap' must be > 0, got {window.max_gap}")


# -- migrations ----------------------------------------------------------------------------

_TRAINING_V1_RECORD = ("data", "epochs_run", "best_epoch", "stopped", "history")


def _v1_to_v2(old: dict) -> dict:
    """Schema 1 -> 2: graphs keyed by precision; export records under ``exports``; the
    threshold's calibration facts under ``provenance``; the fit settings under
    ``training.settings``; the input shape (derivable) dropped."""
    data = copy.deepcopy(old)
    if isinstance(data.get("input"), dict):
        data["input"].pop("shape", None)
    threshold = data.get("threshold")
    if isinstance(threshold, dict) and "provenance" not in threshold:
        data["threshold"] = {"value": threshold.pop("value", None), "method": threshold.pop("method", "quantile"),
                             "provenance": threshold}
    training = data.get("training")
    if isinstance(training, dict) and "settings" not in training:
        settings = {k: training.pop(k) for k in list(training) if k not in _TRAINING_V1_RECORD}
        training["settings"] = settings
    graphs = {"fp32": data.pop("graphs", None) or {}}
    if data.get("graphs_int8"):
        graphs["int8"] = data.pop("graphs_int8")
    data.pop("graphs_int8", None)
    data["graphs"] = {precision: records for precision, records in graphs.items() if records}
    exports = {}
    for old_key, new_key in (("export", "onnx"), ("quantization", "int8"), ("tensorrt", "tensorrt")):
        if old_key in data:
            exports[new_key] = data.pop(old_key)
    data["exports"] = exports
    data["schema_version"] = 2
    return data


def _v2_to_v3(old: dict) -> dict:
    """Schema 2 -> 3: the input's columns recorded (each a number, never missing in training:
    every schema-2 bundle was trained on complete numeric rows) and its encoding, plain."""
    data = copy.deepcopy(old)
    spec = data.get("input")
    if isinstance(spec, dict) and isinstance(spec.get("features"), list):
        training = data.get("training") if isinstance(data.get("training"), dict) else {}
        rows = training.get("data", {}).get("train_rows", 0) if isinstance(training.get("data"), dict) else 0
        spec.setdefault("encoding", "plain")
        spec.setdefault("columns", [{"name": name, "type": "numeric", "rows": rows if isinstance(rows, int) else 0}
                                    for name in spec["features"]])
    data["schema_version"] = 3
    return data


def _v3_to_v4(old: dict) -> dict:
    """Schema 3 -> 4: the input may name a window (series bundles); every schema-3 bundle scores
    rows one by one, so it has none."""
    data = copy.deepcopy(old)
    data["schema_version"] = 4
    return data


#: version N -> a function taking a schema-N dict to schema N + 1
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


# -- typed conversion ----------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _fail(where: str, expected: str, value: Any) -> BundleError:
    shown = repr(value) if isinstance(value, (str, int, float, bool)) else _type_name(value)
    return BundleError(f"field {where!r}: expected {expected}, got {shown}")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` from JSON checked against the type ``hint``; BundleError naming ``where``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if dataclasses.is_dataclass(hint):
        return _from_json(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, "a number", value)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, "a whole number", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(where, "true or false", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _fail(where, "text", value)
        return value
    raise TypeError(f"no conversion for {hint!r}")  # a record declared a type this module cannot read


def _from_json(cls: type, data: Any, where: str) -> Any:
    """A ``cls`` record from a JSON object at dotted path ``where`` ("" for the root); keys it
    does not name go to its extra field, or are a BundleError."""
    if not isinstance(data, dict):
        raise _fail(where, "an object", data)
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    extra = next((f.name for f in fields if f.metadata.get("extra")), None)
    values, unknown = {}, {k: v for k, v in data.items() if k not in {f.name for f in fields}}
    for f in fields:
        if f.name == extra:
            continue
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BundleError(f"field {path!r} is missing")
    if extra is not None:
        values[extra] = unknown
    elif unknown and where:  # the root tolerates keys a newer aeserve may add
        raise BundleError(f"field {where!r}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}")
    return cls(**values)


def _to_json(record: Any) -> Any:
    """Records -> JSON-ready values: None fields left out, extra fields merged flat, tuples as lists."""
    if dataclasses.is_dataclass(record):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if f.metadata.get("extra"):
                out.update(_to_json(value))
            elif value is not None:
                out[f.name] = _to_json(value)
        return out
    if isinstance(record, dict):
        return {k: _to_json(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [_to_json(v) for v in record]
    return record
