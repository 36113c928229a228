"""The KServe v2 (Open Inference Protocol) model of a request and a response, with no transport.

A bundle ``NAME`` is served as four endpoints (``endpoints_for``):

- ``NAME``         y (FP32 [-1, features]) -> energy, its terms (FP32 [-1]), p_value (FP64 [-1],
                   the conformal p-value against the held-out energies), anomaly (UINT8 [-1])
- ``NAME-encode``  y -> z (VAE: mu, logvar), FP32 [-1, latent]
- ``NAME-decode``  z (FP32 [-1, latent]) -> y_tilde (FP32 [-1, features])
- ``NAME-sample``  n (INT64 [1]), optional seed (INT64 [1]) -> y (FP32 [n, features])

A mixed bundle (a table of typed columns) takes and returns one tensor per column instead of
``y``, named by the column, shape [-1] or [-1, 1] (as MLServer's pandas codec sends them):
numbers as any numeric datatype (NaN or a JSON null: missing), booleans as BOOL (or 0/1),
categories as BYTES (UTF-8 text; integer codes as integers). The server encodes them with the
bundle's vocabulary, as the file readers do.

Each transport turns its bytes into ``WireTensor``s and ``OutputWanted``s (HTTP's JSON and
binary extension in ``serve/kserve_json.py``, gRPC's protobuf in ``serve/grpc_server.py``);
``decode_tensors`` checks them against the endpoint once, for both (name, datatype, shape,
sizes, finite values), and ``InferRequest`` carries the result to ``ModelServer``
(``serve/model_server.py``). A client mistake is a ``RequestError`` with its status;
``failure`` maps any exception to (status, message) for every transport.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import aeserve
from aeserve.manifest import CONTRIBUTIONS
from aeserve.readers import CheckedRows
from aeserve.serve.batching import Batcher, QueueFull

__all__ = ["DATATYPES", "RequestError", "TensorSpec", "Endpoint", "endpoint_names", "endpoints_for", "WireTensor",
           "OutputWanted", "SequenceRef", "InferRequest", "decode_tensors", "is_count", "check_outputs", "datatype_of", "failure", "public",
           "request_id_of", "log_error"]

log = logging.getLogger("aeserve.serve")

DATATYPES = {"BYTES": np.object_, "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
_NUMERIC = tuple(k for k in DATATYPES if k not in ("BYTES", "BOOL"))
#: the datatypes a table column's tensor may travel as, by column type
COLUMN_DATATYPES = {"numeric": ("FP32", *(t for t in _NUMERIC if t != "FP32"), "BOOL"),
                    "binary": ("BOOL", *_NUMERIC, "BYTES"),
                    "categorical": ("BYTES", *_NUMERIC, "BOOL")}


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class TensorSpec:
    """A protocol tensor: name, datatype, shape (-1 = any)."""

    name: str
    datatype: str
    shape: list[int]
    #: a table column: shape [n] or [n, 1], any of ``accepts`` (datatype first), JSON nulls missing
    accepts: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The tensor as model metadata lists it."""
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class Endpoint:
    """One served model: its tensors and the function computing outputs from inputs."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    batched: bool = True
    batcher: Batcher | None = field(default=None, repr=False)
    platform: str = "aeserve"
    #: outputs sent only when a request names them, computed by ``run_optional`` (not batched)
    optional: list[TensorSpec] = field(default_factory=list)
    run_optional: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    #: inputs a request may leave out
    may_omit: tuple[str, ...] = ()
    #: the one array the batcher joins across requests (default: the first input) and the
    #: function run on a joined batch of them (default: ``run`` of the first input)
    batch_rows: Callable[[dict], np.ndarray] | None = None
    run_rows: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
    #: a series bundle's score endpoint: the same model for requests that carry a sequence_id,
    #: taking rows instead of windows, run by ``run_sequence(ref, inputs)`` one at a time
    sequence: "Endpoint | None" = field(default=None, repr=False)
    run_sequence: Callable[["SequenceRef", dict], dict[str, np.ndarray]] | None = None

    def variant(self, ref: "SequenceRef | None") -> "Endpoint":
        """The endpoint a request with sequence ``ref`` (or None) goes to: this one, or its
        sequence variant; RequestError when the model keeps no sequences."""
        if ref is None:
            return self
        if self.sequence is None:
            raise RequestError(f"model {self.name!r} keeps no sequences: sequence_id applies to the score endpoint "
                               "of a series bundle (trained with --window)")
        return self.sequence

    def metadata(self) -> dict:
        """The model metadata answer (KServe v2): name, versions, platform, inputs, outputs."""
        return {"name": self.name, "versions": ["1"], "platform": self.platform,
                "inputs": [t.as_dict() for t in self.inputs],
                "outputs": [t.as_dict() for t in [*self.outputs, *self.optional]]}

    def wants_optional(self, request: "InferRequest") -> bool:
        """Whether the request names one of the optional outputs."""
        names = {t.name for t in self.optional}
        return any(wanted.name in names for wanted in request.outputs)


def endpoint_names(name: str) -> list[str]:
    """The models one bundle NAME is served as: NAME (score), NAME-encode, NAME-decode, NAME-sample."""
    return [name, f"{name}-encode", f"{name}-decode", f"{name}-sample"]


def endpoints_for(name: str, model, max_sample_rows: int = 65536, sequences=None) -> list[Endpoint]:
    """The score/encode/decode/sample endpoints of one runtime ``Model`` (``NAME-sample``
    answers at most ``max_sample_rows`` rows per request); a series bundle's score endpoint
    keeps its sequences in ``sequences`` (``aeserve.serve.sequences.Sequences``)."""
    if model.encoding is not None:
        return _table_endpoints(name, model, max_sample_rows)
    if model.window is not None:
        return _series_endpoints(name, model, max_sample_rows, sequences)
    d, k = len(model.features), model.latent_size
    explains = CONTRIBUTIONS in model.bundle.graph("energy").outputs

    sample = _sample_fn(model, max_sample_rows, lambda rows: {"y": rows})
    score_name, encode_name, decode_name, sample_name = endpoint_names(name)
    return [
        Endpoint(score_name, [TensorSpec("y", "FP32", [-1, d])], score_outputs(model),
                 lambda inputs: model.score(CheckedRows(inputs["y"])),
                 optional=[TensorSpec(CONTRIBUTIONS, "FP32", [-1, d])] if explains else [],
                 run_optional=(lambda inputs: model.score(CheckedRows(inputs["y"]), explain=True)) if explains else None),
        Endpoint(encode_name, [TensorSpec("y", "FP32", [-1, d])],
                 [TensorSpec(o, "FP32", [-1, k]) for o in model.encoder_outputs],
                 lambda inputs: model.encode_all(CheckedRows(inputs["y"]))),
        Endpoint(decode_name, [TensorSpec("z", "FP32", [-1, k])], [TensorSpec("y_tilde", "FP32", [-1, d])],
                 lambda inputs: {"y_tilde": model.decode(CheckedRows(inputs["z"]))}),
        Endpoint(sample_name, [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])],
                 [TensorSpec("y", "FP32", [-1, d])], sample, batched=False, may_omit=("seed",)),
    ]


def score_outputs(model) -> list[TensorSpec]:
    """A score endpoint's outputs: energy and its terms (FP32), p_value (FP64, the conformal
    p-value, when the bundle keeps held-out energies) and anomaly (UINT8)."""
    p_value = [TensorSpec("p_value", "FP64", [-1])] if model.reference is not None else []
    return [*(TensorSpec(t, "FP32", [-1]) for t in ["energy", *model.terms]), *p_value,
            TensorSpec("anomaly", "UINT8", [-1])]


def _sample_fn(model, max_sample_rows: int, outputs):
    def sample(inputs):
        n = int(inputs["n"].reshape(-1)[0])
        if not 1 <= n <= max_sample_rows:
            raise RequestError(f"n must be in 1..{max_sample_rows}, got {n}")
        seed = int(inputs["seed"].reshape(-1)[0]) if "seed" in inputs else 0
        return outputs(model.sample(n, seed))
    return sample


def _table_endpoints(name: str, model, max_sample_rows: int) -> list[Endpoint]:
    """A mixed bundle's endpoints: one input (and decoded output) tensor per column."""
    columns = model.encoding.columns
    k = model.latent_size
    ins = [TensorSpec(c.name, COLUMN_DATATYPES[c.type][0], [-1], accepts=COLUMN_DATATYPES[c.type]) for c in columns]
    rows = [TensorSpec(c.name, COLUMN_DATATYPES[c.type][0], [-1]) for c in columns]  # decoded: FP32, BOOL, BYTES
    score_name, encode_name, decode_name, sample_name = endpoint_names(name)

    def table(inputs):
        return column_table(inputs, [c.name for c in columns])

    def encoded(inputs) -> np.ndarray:  # a request's columns as the graphs' rows, joined by the batcher
        return model.encoding.encode_rows(table(inputs), "request")

    def score_rows(rows: np.ndarray):
        return model.score(CheckedRows(rows))

    def encode_rows(rows: np.ndarray):
        return model.encode_all(CheckedRows(rows))

    def named(decoded):
        return {c.name: np.asarray(decoded[c.name], dtype=np.object_ if c.type == "categorical" else None)
                for c in columns}

    return [
        Endpoint(score_name, ins, score_outputs(model),
                 lambda inputs: score_rows(encoded(inputs)),
                 optional=[TensorSpec(CONTRIBUTIONS, "FP32", [-1, len(columns)])],
                 run_optional=lambda inputs: model.score(CheckedRows(encoded(inputs)), explain=True),
                 batch_rows=encoded, run_rows=score_rows),
        Endpoint(encode_name, ins, [TensorSpec(o, "FP32", [-1, k]) for o in model.encoder_outputs],
                 lambda inputs: encode_rows(encoded(inputs)), batch_rows=encoded, run_rows=encode_rows),
        Endpoint(decode_name, [TensorSpec("z", "FP32", [-1, k])], rows,
                 lambda inputs: named(model.decode(CheckedRows(inputs["z"])))),
        Endpoint(sample_name, [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])], rows,
                 _sample_fn(model, max_sample_rows, named), batched=False, may_omit=("seed",)),
    ]


def _series_endpoints(name: str, model, max_sample_rows: int, sequences) -> list[Endpoint]:
    """A series bundle's endpoints: windows travel as [-1, W, C] (rows of a window, oldest first,
    each its C channels); the graphs' channel-major rows are made and unmade here. The score
    endpoint also takes rows [-1, C] of a sequence (``sequence_id``), scored by the windows that
    end at them with the sequence's earlier rows (``Sequences``)."""
    from aeserve.serve.series_rows import WINDOWS, scatter

    window, k = model.window, model.latent_size
    size, channels = window.size, len(window.channels)
    windows_spec = TensorSpec("y", "FP32", [-1, size, channels])
    score_name, encode_name, decode_name, sample_name = endpoint_names(name)

    def flat(inputs) -> np.ndarray:  # (n, W, C) -> the graphs' (n, C*W), channel-major
        y = inputs["y"]
        return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(len(y), channels * size)

    def shaped(rows: np.ndarray) -> np.ndarray:  # (n, C*W) channel-major -> (n, W, C)
        return np.ascontiguousarray(rows.reshape(len(rows), channels, size).transpose(0, 2, 1))

    def score_rows(rows: np.ndarray):
        return model.score(CheckedRows(rows))

    def explained(inputs):
        result = model.score(CheckedRows(flat(inputs)), explain=True)
        return {**result, CONTRIBUTIONS: shaped(result[CONTRIBUTIONS])}

    def score_sequence(ref, inputs):
        rows = np.ascontiguousarray(inputs["y"], np.float32)
        times = inputs.get(window.time_column) if window.time_column else None
        if times is not None and len(times) != len(rows):
            raise RequestError(f"input {window.time_column!r} holds {len(times)} times for {len(rows)} rows")
        found = sequences.append(ref, rows, None if times is None else np.asarray(times, np.float64))
        outputs = score_rows(found.values) if len(found.ends) else \
            {k: v[:0] for k, v in score_rows(np.zeros((1, channels * size), np.float32)).items()}
        columns = scatter(outputs, found.ends, len(rows))
        scored = np.zeros(len(rows), np.uint8)
        scored[found.ends] = 1
        return {**columns, WINDOWS: scored}

    score = Endpoint(score_name, [windows_spec], score_outputs(model),
                     lambda inputs: score_rows(flat(inputs)),
                     optional=[TensorSpec(CONTRIBUTIONS, "FP32", [-1, size, channels])], run_optional=explained,
                     batch_rows=flat, run_rows=score_rows)
    if sequences is not None:
        times = [TensorSpec(window.time_column, "FP64", [-1])] if window.time_column else []
        score.sequence = Endpoint(score_name, [TensorSpec("y", "FP32", [-1, channels]), *times],
                                  [*score_outputs(model), TensorSpec(WINDOWS, "UINT8", [-1])], lambda inputs: {},
                                  batched=False, may_omit=tuple(t.name for t in times), run_sequence=score_sequence)
    return [
        score,
        Endpoint(encode_name, [windows_spec], [TensorSpec(o, "FP32", [-1, k]) for o in model.encoder_outputs],
                 lambda inputs: model.encode_all(CheckedRows(flat(inputs))), batch_rows=flat,
                 run_rows=lambda rows: model.encode_all(CheckedRows(rows))),
        Endpoint(decode_name, [TensorSpec("z", "FP32", [-1, k])], [TensorSpec("y_tilde", "FP32", [-1, size, channels])],
                 lambda inputs: {"y_tilde": shaped(model.decode(CheckedRows(inputs["z"])))}),
        Endpoint(sample_name, [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])],
                 [TensorSpec("y", "FP32", [-1, size, channels])], _sample_fn(model, max_sample_rows,
                                                                             lambda rows: {"y": shaped(rows)}),
                 batched=False, may_omit=("seed",)),
    ]


def column_table(inputs: dict, names: list[str]):
    """The request's column tensors as a pyarrow table in the bundle's column order; the
    columns must hold as many rows each."""
    import pyarrow as pa

    lengths = {n: len(inputs[n]) for n in names}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n} {count}" for n, count in list(lengths.items())[:6])
        raise RequestError(f"the column inputs hold different numbers of rows: {shown}")
    return pa.table({n: inputs[n] for n in names})


# -- requests ------------------------------------------------------------------------------

@dataclass
class WireTensor:
    """One input tensor as a transport received it, not yet checked: its values are either
    ``data`` (a JSON list, or gRPC's typed contents) or ``raw`` little-endian bytes."""

    name: object
    datatype: object
    shape: object
    parameters: object = None
    data: object = None
    raw: bytes | memoryview | None = None


@dataclass(frozen=True)
class OutputWanted:
    """An output a request names; ``binary``: send it as raw bytes (None: the request's default)."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class SequenceRef:
    """A request's place in a sequence: its id (an integer or a string), and whether it starts
    or ends the sequence."""

    id: int | str
    start: bool = False
    end: bool = False

    @classmethod
    def from_parameters(cls, parameters: dict) -> "SequenceRef | None":
        """From a request's parameters (``sequence_id``, ``sequence_start``, ``sequence_end``);
        None without a sequence_id (or with id 0, Triton's "no sequence")."""
        if not isinstance(parameters, dict) or parameters.get("sequence_id") in (None, 0, ""):
            return None
        ident = parameters["sequence_id"]
        if isinstance(ident, bool) or not isinstance(ident, (int, str)) or (isinstance(ident, str) and len(ident) > 128):
            raise RequestError(f"sequence_id must be an integer or a text of up to 128 characters, got {str(ident)[:40]!r}")
        flags = {}
        for name in ("sequence_start", "sequence_end"):
            value = parameters.get(name, False)
            if not isinstance(value, bool):
                raise RequestError(f"{name} must be true or false, got {str(value)[:20]!r}")
            flags[name] = value
        return cls(ident, flags["sequence_start"], flags["sequence_end"])


@dataclass
class InferRequest:
    """A checked inference request: input arrays by name, the outputs wanted (empty: the
    endpoint's outputs), whether outputs default to binary, the client's id, and its place in
    a sequence (a series bundle's stateful requests)."""

    inputs: dict[str, np.ndarray]
    outputs: list[OutputWanted] = field(default_factory=list)
    binary_output: bool = False
    id: object = None  # echoed as given (KServe: a string)
    sequence: SequenceRef | None = None


def is_count(value) -> bool:
    """Whether ``value`` is a non-negative JSON integer (not a bool): a shape entry or a byte count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _decode_tensor(tensor: WireTensor, specs: dict[str, TensorSpec], endpoint: Endpoint) -> tuple[str, np.ndarray]:
    """One input -> (name, array); RequestError if it is not what ``specs`` says."""
    name, datatype, shape = tensor.name, tensor.datatype, tensor.shape
    spec = specs.get(name) if isinstance(name, str) else None
    if spec is None:
        raise RequestError(f"model {endpoint.name!r} has no input {repr(name)[:60]}; inputs: {', '.join(specs)}")
    if spec.accepts:
        return name, _decode_column(tensor, spec)
    if datatype != spec.datatype:
        raise RequestError(f"input {name!r}: datatype {str(datatype)[:20]!r}, expected {spec.datatype}")
    if not isinstance(shape, list) or not all(is_count(s) for s in shape):
        raise RequestError(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(e not in (-1, s) for e, s in zip(spec.shape, shape)):
        raise RequestError(f"input {name!r}: shape {str(shape)[:80]}, expected {spec.shape} (-1 = any)")
    if shape and shape[0] == 0:
        raise RequestError(f"input {name!r}: shape {shape} holds no row")
    if not isinstance(tensor.parameters or {}, dict):
        raise RequestError(f"input {name!r}: 'parameters' must be a JSON object")
    dtype = np.dtype(DATATYPES[datatype])
    count = math.prod(shape)  # exact: a huge shape is a big int, never a wrapped int64
    if tensor.raw is not None:
        if len(tensor.raw) != count * dtype.itemsize:
            raise RequestError(f"input {name!r}: {len(tensor.raw)} bytes do not match shape {shape} of {datatype} "
                               f"({count * dtype.itemsize} bytes)")
        return name, np.frombuffer(tensor.raw, dtype=dtype, count=count).reshape(shape)
    if not isinstance(tensor.data, (list, np.ndarray)):  # an array: typed gRPC contents
        raise RequestError(f"input {name!r}: needs 'data' (a list) or binary data")
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"input {name!r}: 'data' does not hold {datatype} values") from None
    if array.size != count:
        raise RequestError(f"input {name!r}: {array.size} values for shape {shape}")
    return name, array.reshape(shape)


def pack_bytes(values) -> bytes:
    """BYTES tensor elements as KServe's binary form: each a 4-byte little-endian length, then
    its bytes (text as UTF-8)."""
    parts = []
    for value in values:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts += [len(data).to_bytes(4, "little"), data]
    return b"".join(parts)


def unpack_bytes(raw, count: int, name: str) -> list[bytes]:
    """``count`` BYTES elements from KServe's binary form; RequestError when it does not hold them."""
    raw, out, at = bytes(raw), [], 0
    for _ in range(count):
        if at + 4 > len(raw):
            raise RequestError(f"input {name!r}: BYTES data ends after {len(out)} of {count} elements")
        size = int.from_bytes(raw[at:at + 4], "little")
        if at + 4 + size > len(raw):
            raise RequestError(f"input {name!r}: BYTES element {len(out) + 1} is cut short")
        out.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    if at != len(raw):
        raise RequestError(f"input {name!r}: {len(raw) - at} bytes left after {count} BYTES elements")
    return out


def _decode_column(tensor: WireTensor, spec: TensorSpec):
    """A table column's tensor -> a pyarrow array (text for BYTES; JSON nulls are missing cells)."""
    import pyarrow as pa

    name, datatype, shape = tensor.name, tensor.datatype, tensor.shape
    if datatype not in spec.accepts:
        raise RequestError(f"input {name!r}: datatype {str(datatype)[:20]!r}, expected one of {', '.join(spec.accepts)}")
    if not isinstance(shape, list) or not all(is_count(s) for s in shape) or not (
            len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise RequestError(f"input {name!r}: shape {str(shape)[:80]}, expected [rows] or [rows, 1]")
    count = shape[0]
    if count == 0:
        raise RequestError(f"input {name!r}: shape {shape} holds no row")
    if tensor.raw is not None:
        if datatype == "BYTES":
            cells = [b.decode("utf-8", "replace") for b in unpack_bytes(tensor.raw, count, name)]
            return pa.array(cells, pa.string())
        dtype = np.dtype(DATATYPES[datatype])
        if len(tensor.raw) != count * dtype.itemsize:
            raise RequestError(f"input {name!r}: {len(tensor.raw)} bytes do not match shape {shape} of {datatype}")
        return pa.array(np.frombuffer(tensor.raw, dtype=dtype, count=count), from_pandas=True)
    data = tensor.data
    if isinstance(data, np.ndarray):  # typed gRPC contents
        data = data.tolist()
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: needs 'data' (a list) or binary data")
    if data and isinstance(data[0], list):  # [[v], [v], ...]
        data = [cell[0] if isinstance(cell, list) and len(cell) == 1 else cell for cell in data]
    if len(data) != count:
        raise RequestError(f"input {name!r}: {len(data)} values for shape {shape}")
    if datatype == "BYTES":
        bad = next((i for i, v in enumerate(data) if not isinstance(v, (str, bytes, type(None)))), None)
        if bad is not None:
            raise RequestError(f"input {name!r}: row {bad + 1}: BYTES values are text, got {str(data[bad])[:40]}")
        return pa.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data], pa.string())
    kinds = (bool,) if datatype == "BOOL" else (int, float) if datatype.startswith("FP") else (int,)
    bad = next((i for i, v in enumerate(data) if v is not None and not (isinstance(v, kinds) and
                                                                         (datatype == "BOOL" or not isinstance(v, bool)))), None)
    if bad is not None:
        raise RequestError(f"input {name!r}: row {bad + 1}: expected a {datatype} value, got {str(data[bad])[:40]!r}")
    try:
        return pa.array(data, pa.bool_() if datatype == "BOOL" else pa.from_numpy_dtype(DATATYPES[datatype]))
    except (pa.ArrowInvalid, OverflowError):
        raise RequestError(f"input {name!r}: 'data' does not hold {datatype} values") from None


def decode_tensors(endpoint: Endpoint, tensors: list[WireTensor]) -> dict[str, np.ndarray]:
    """The input arrays by name, each checked against ``endpoint`` (name, datatype, shape, size,
    finite values), none twice, none missing: the one check every transport's request passes."""
    specs = {t.name: t for t in endpoint.inputs}
    arrays: dict[str, np.ndarray] = {}
    for tensor in tensors:
        name, array = _decode_tensor(tensor, specs, endpoint)
        if name in arrays:
            raise RequestError(f"input {name!r} is given twice")
        if isinstance(array, np.ndarray) and array.dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise RequestError(f"input {name!r}: row {row + 1} holds NaN or inf")
        arrays[name] = array
    missing = [n for n in specs if n not in arrays and n not in endpoint.may_omit]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}")
    return arrays


def check_outputs(endpoint: Endpoint, wanted: list[OutputWanted]) -> list[OutputWanted]:
    """``wanted``, each an output ``endpoint`` has (RequestError naming the others); empty: the
    endpoint's outputs."""
    known = [t.name for t in [*endpoint.outputs, *endpoint.optional]]
    for item in wanted:
        if item.name not in known:
            raise RequestError(f"model {endpoint.name!r} has no output {repr(item.name)[:60]}; "
                               f"outputs: {', '.join(known)}")
    return wanted or [OutputWanted(t.name) for t in endpoint.outputs]


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (FP32, UINT8, ...)."""
    return _NAMES[array.dtype]


# -- failures ------------------------------------------------------------------------------

_PATHS = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)+[\w.@+-]*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def failure(exc: Exception) -> tuple[int, str]:
    """(HTTP status, message for the client) of a request that raised ``exc``: a client mistake
    (RequestError's own status), a full queue (503), a bad input (400), else a bug (500, the
    caller logs the traceback). HTTP and gRPC answer from this one table."""
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, QueueFull):
        return 503, f"server busy: {exc}; retry later"
    if isinstance(exc, aeserve.AeserveError):
        return 400, str(exc)
    return 500, "internal error; the server log has the details"


def public(message: str) -> str:
    """An error message fit for a client: file-system paths replaced by '<path>'."""
    return _PATHS.sub("<path>", message)


def request_id_of(given: str | None) -> str:
    """The client's request id (``X-Request-Id``, up to 128 of ``A-Za-z0-9._:-``), else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def log_error(model: str, status, message: str, request_id: str) -> None:
    """One JSON line per failed request: what a log pipeline can parse and count."""
    log.warning(json.dumps({"event": "request_failed", "model": model[:80], "status": str(status),
                            "error": public(message)[:500], "request_id": request_id}))
