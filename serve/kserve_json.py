"""KServe v2's JSON encoding, with the binary tensor data extension (what stock
``tritonclient.http`` sends): a body is a JSON header, optionally followed by raw tensors
whose header length ``Inference-Header-Content-Length`` gives. No web framework here:
bytes in, ``InferRequest`` out; outputs in, bytes out.
"""

from __future__ import annotations

import json
import re

import numpy as np

from aeserve.serve import fastjson
from aeserve.serve.protocol import (
    Endpoint,
    InferRequest,
    OutputWanted,
    RequestError,
    SequenceRef,
    WireTensor,
    check_outputs,
    datatype_of,
    decode_tensors,
    is_count,
    pack_bytes,
)

__all__ = ["HEADER_LENGTH", "decode_request", "encode_response", "is_digits"]

HEADER_LENGTH = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses


def is_digits(text: str) -> bool:
    """Whether ``text`` is 1 to 18 ASCII digits (a header that ``int`` may read)."""
    return bool(_DIGITS.fullmatch(text))


def _split(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """(the JSON header as a dict, the binary part after it)."""
    if header_length is not None:
        if not is_digits(header_length.strip()):
            raise RequestError(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}")
        size = int(header_length.strip())
        if size > len(body):
            raise RequestError(f"{HEADER_LENGTH} {size} exceeds the body's {len(body)} bytes")
        head, binary = body[:size], memoryview(body)[size:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = fastjson.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError("request must be a JSON object with an 'inputs' list")
    if not isinstance(request.get("parameters") or {}, dict):
        raise RequestError("request 'parameters' must be a JSON object")
    if not isinstance(request.get("outputs") or [], list):
        raise RequestError("request 'outputs' must be a list")
    return request, binary


def _tensors(items: list, binary: memoryview) -> list[WireTensor]:
    """The JSON inputs as wire tensors; a binary one takes the next ``binary_data_size`` bytes."""
    tensors, offset = [], 0
    for item in items:
        if not isinstance(item, dict):
            raise RequestError("each input must be a JSON object")
        parameters = item.get("parameters") or {}
        tensor = WireTensor(item.get("name"), item.get("datatype"), item.get("shape"), parameters, item.get("data"))
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not is_count(size) or offset + size > len(binary):
                raise RequestError(f"input {str(tensor.name)[:60]!r}: binary_data_size {str(size)[:30]} does not fit "
                                   f"the {len(binary) - offset} bytes left in the body")
            tensor.raw, offset = binary[offset:offset + size], offset + size
        tensors.append(tensor)
    return tensors


def _outputs(items: list, endpoint: Endpoint) -> list[OutputWanted]:
    wanted = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            known = ", ".join(t.name for t in [*endpoint.outputs, *endpoint.optional])
            raise RequestError(f"model {endpoint.name!r} has no output {repr(name)[:60]}; outputs: {known}")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(f"output {name!r}: 'parameters' must be a JSON object")
        binary = parameters.get("binary_data")
        wanted.append(OutputWanted(name, None if binary is None else bool(binary)))
    return wanted


def decode_request(body: bytes, header_length: str | None, endpoint: Endpoint) -> tuple[InferRequest,
                                                                                          dict[str, np.ndarray]]:
    """A KServe v2 request body (JSON, or JSON header + binary tensors when ``header_length``
    is the Inference-Header-Content-Length) -> (the request, its input arrays by name).
    Anything malformed is a RequestError (400) saying what; nothing else is raised."""
    head, binary = _split(body, header_length)
    parameters = head.get("parameters") or {}
    sequence = SequenceRef.from_parameters(parameters)  # Triton's sequence_id, sequence_start, sequence_end
    endpoint = endpoint.variant(sequence)
    inputs = decode_tensors(endpoint, _tensors(head["inputs"], binary))
    outputs = check_outputs(endpoint, _outputs(head.get("outputs") or [], endpoint))
    request = InferRequest(inputs, outputs, bool(parameters.get("binary_data_output", False)), head.get("id"),
                           sequence)
    return request, inputs


def encode_response(request: InferRequest, outputs: dict[str, np.ndarray], model: str) -> tuple[bytes, bytes]:
    """(the JSON header, the binary tensors after it) answering ``request`` with ``outputs``;
    the binary part is empty when every output travels as JSON."""
    entries, chunks = [], []
    for wanted in request.outputs:
        array = np.ascontiguousarray(outputs[wanted.name])
        entry = {"name": wanted.name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if request.binary_output if wanted.binary is None else wanted.binary:
            raw = pack_bytes(array.reshape(-1)) if array.dtype == object else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = array.reshape(-1)
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                # JSON has no inf/NaN: saturate to the dtype's largest finite value (binary keeps inf)
                flat = np.nan_to_num(flat, nan=np.finfo(flat.dtype).max)
            entry["data"] = [str(v) for v in flat] if flat.dtype == object else fastjson.tensor_data(flat)
        entries.append(entry)
    response = {"model_name": model, "model_version": "1", "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    return fastjson.dumps(response), b"".join(chunks)
