"""Refuse ONNX graphs a bundle must not hold, before any runtime parses them.

A bundle is untrusted input. Its graphs may use only operators of the standard domains
(``ai.onnx``, ``ai.onnx.ml``) and of ONNX Runtime's own contrib domain (``com.microsoft``,
used by quantised graphs); an operator of any other domain would need a custom-op library
to be loaded, i.e. foreign code. Tensors stored as external data are refused too: they name
files outside the graph, which the bundle's hashes do not cover and which may lie outside
the bundle.

This reads the protobuf wire format directly (a few fields of ModelProto, GraphProto,
NodeProto, AttributeProto and TensorProto, numbers from onnx.proto), so the runtime needs
neither the ``onnx`` package nor torch.
"""

from __future__ import annotations

from aeserve.errors import BundleError

__all__ = ["ALLOWED_DOMAINS", "check_onnx_bytes", "checked_graph_bytes", "check_hash"]

#: operator domains a bundle's graph may use ("" is the default ai.onnx domain)
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

# field numbers from onnx/onnx.proto
_MODEL_GRAPH, _MODEL_OPSET, _MODEL_FUNCTIONS = 7, 8, 25
_OPSET_DOMAIN = 1
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_FUNCTION_NODE = 7
_MAX_DEPTH = 64


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of one message: ints for varint/fixed, bytes for length-delimited."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise _Malformed("a field runs past the end of the data")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise _Malformed(f"unknown wire type {wire}")
        if pos > end:
            raise _Malformed("truncated field")
        yield number, wire, value


def _text(value) -> str:
    return bytes(value).decode("utf-8", "replace")


def _check_tensor(data: bytes, where: str) -> None:
    for number, wire, value in _fields(data):
        if (number == _TENSOR_DATA_LOCATION and wire == 0 and value == 1) or number == _TENSOR_EXTERNAL_DATA:
            raise BundleError(f"{where}: a tensor is stored as external data (a file outside the graph); "
                              "a bundle's graphs must hold their weights inside")


def _check_sparse(data: bytes, where: str) -> None:
    for number, wire, value in _fields(data):
        if wire == 2 and number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _check_tensor(value, where)


def _check_node(data: bytes, where: str, depth: int) -> None:
    op_type, domain = "", ""
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if number == _NODE_OP_TYPE:
            op_type = _text(value)
        elif number == _NODE_DOMAIN:
            domain = _text(value)
        elif number == _NODE_ATTRIBUTE:
            _check_attribute(value, where, depth)
    if domain not in ALLOWED_DOMAINS:
        raise BundleError(f"{where}: operator {op_type!r} of domain {domain!r} is outside the standard domains "
                          f"({', '.join(sorted(d or 'ai.onnx' for d in ALLOWED_DOMAINS))}); refused")


def _check_attribute(data: bytes, where: str, depth: int) -> None:
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if number in (_ATTR_G, _ATTR_GRAPHS):
            _check_graph(value, where, depth + 1)
        elif number in (_ATTR_T, _ATTR_TENSORS):
            _check_tensor(value, where)
        elif number in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
            _check_sparse(value, where)


def _check_graph(data: bytes, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise BundleError(f"{where}: subgraphs nested deeper than {_MAX_DEPTH}")
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if number == _GRAPH_NODE:
            _check_node(value, where, depth)
        elif number == _GRAPH_INITIALIZER:
            _check_tensor(value, where)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _check_sparse(value, where)


def check_onnx_bytes(data: bytes, where: str) -> None:
    """Raise BundleError unless ``data`` is an ONNX model whose operators (in the graph, its
    subgraphs and its local functions) all come from ``ALLOWED_DOMAINS`` and whose tensors
    are all stored inside it. ``where`` names the file in messages."""
    try:
        has_graph = False
        for number, wire, value in _fields(data):
            if wire != 2:
                continue
            if number == _MODEL_GRAPH:
                has_graph = True
                _check_graph(value, where, 0)
            elif number == _MODEL_OPSET:
                domain = next((_text(v) for n, w, v in _fields(value) if n == _OPSET_DOMAIN and w == 2), "")
                if domain not in ALLOWED_DOMAINS:
                    raise BundleError(f"{where}: imports operator set domain {domain!r}, outside the standard "
                                      "domains; refused")
            elif number == _MODEL_FUNCTIONS:
                for fnumber, fwire, fvalue in _fields(value):
                    if fwire == 2 and fnumber == _FUNCTION_NODE:
                        _check_node(fvalue, where, 0)
    except _Malformed as exc:
        raise BundleError(f"{where}: not a valid ONNX model ({exc})") from None
    if not has_graph:
        raise BundleError(f"{where}: not a valid ONNX model (no graph)")


def checked_graph_bytes(bundle, graph: str, precision: str = "fp32") -> bytes:
    """The bytes of ``bundle``'s ``graph`` for a runtime to load: a hashed file inside the
    bundle (``Bundle.graph_file``) that passes ``check_onnx_bytes``. Runtimes load these bytes,
    not the path, so that the graph has no directory to read other files from."""
    path = bundle.graph_file(graph, precision)
    data = path.read_bytes()
    check_hash(bundle, bundle.graph(graph, precision).file, data)
    check_onnx_bytes(data, str(path))
    return data


def check_hash(bundle, rel: str, data: bytes) -> None:
    """BundleError unless ``data`` (bundle file ``rel`` as just read) has the sha256 the manifest
    records: runtimes load graphs lazily, and a file changed after ``Bundle.open`` verified it
    (a re-export or retrain in place) must not be mixed into a model opened before."""
    import hashlib

    if hashlib.sha256(data).hexdigest() != bundle.manifest.files.get(rel):
        raise BundleError(f"{bundle.path / rel}: sha256 does not match manifest.json any more (changed after the "
                          "bundle was opened); load the bundle again")
