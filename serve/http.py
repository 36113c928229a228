"""KServe v2 / Open Inference Protocol over HTTP (Starlette on uvicorn), with the binary
tensor data extension, so the stock ``tritonclient.http`` client works with its defaults.

Each bundle ``NAME`` is served as four models:

- ``NAME``         y (FP32 [-1, features]) -> energy, its terms (FP32 [-1]), anomaly (UINT8 [-1])
- ``NAME-encode``  y -> z (VAE: mu, logvar), FP32 [-1, latent]
- ``NAME-decode``  z (FP32 [-1, latent]) -> y_tilde (FP32 [-1, features])
- ``NAME-sample``  n (INT64 [1]), optional seed (INT64 [1]) -> y (FP32 [n, features])

Batched models go through a dynamic batcher. Errors follow the protocol: a JSON body
``{"error": "..."}`` with 400 (bad request), 401 (missing or wrong bearer token), 404
(unknown model or route), 405 (wrong method), 413 (body too large) or 503 (queue full, or
too many request bytes in flight). No response carries a stack trace or a file-system path;
an unexpected failure is a 500 ``{"error"}`` whose details go to the server log only.

Limits: a request body above ``max_body_mb`` is refused from its Content-Length before it is
read; the bodies being read or decoded at once hold at most ``max_inflight_mb`` (more get 503
at once), so memory stays bounded however many clients send; rows waiting for the batcher
are bounded by ``max_queue_rows``. ``/openapi.json`` describes the routes (KServe v2 REST).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import aeserve
from aeserve.errors import InputError
from aeserve.manifest import CONTRIBUTIONS
from aeserve.serve import fastjson
from aeserve.serve.batching import Batcher, QueueFull
from aeserve.serve.metrics import Metrics
from aeserve.serve.model import Model

__all__ = ["ServerConfig", "Endpoint", "endpoints_for", "create_app", "decode_request", "RequestError", "DATATYPES",
           "OPEN_PATHS"]

log = logging.getLogger("aeserve.serve")

DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses
#: routes that answer without a bearer token (liveness/readiness probes)
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerConfig:
    """Batching and limits."""

    max_batch: int = 1024          # rows per backend call; 0 or 1 disables coalescing
    max_delay_ms: float = 2.0      # how long a request may wait for company
    max_queue_rows: int = 65536    # rows that may wait before 503
    max_body_mb: float = 64.0      # larger request bodies get 413
    workers: int = 1               # threads running backend calls
    max_inflight_mb: float = 256.0  # request bytes being read or decoded at once; more get 503
    token: str | None = field(default=None, repr=False)  # bearer token every route but OPEN_PATHS needs
    grpc_port: int | None = None   # also serve KServe v2 over gRPC on this port (None: no gRPC)
    grpc_host: str = "127.0.0.1"
    grpc_tls: tuple[bytes, bytes] | None = field(default=None, repr=False)  # (certificate, key) PEM for gRPC

    def __post_init__(self) -> None:
        """Refuse limits out of range (NaN included) before a server starts."""
        checks = [("max_batch", self.max_batch >= 0, ">= 0"), ("max_delay_ms", self.max_delay_ms >= 0, ">= 0"),
                  ("max_queue_rows", self.max_queue_rows >= 1, ">= 1"), ("max_body_mb", self.max_body_mb > 0, "> 0"),
                  ("workers", self.workers >= 1, ">= 1"),
                  ("grpc_port", self.grpc_port is None or 0 <= self.grpc_port <= 65535, "in 0..65535"),
                  ("max_inflight_mb", self.max_inflight_mb >= self.max_body_mb, f">= max_body_mb ({self.max_body_mb:g})")]
        for name, ok, need in checks:
            if not ok:
                raise InputError(f"{name} must be {need}, got {getattr(self, name)}")
        if self.token is not None and not self.token:
            raise InputError("the bearer token is empty")


@dataclass
class TensorSpec:
    """A protocol tensor: name, datatype, shape (-1 = any)."""

    name: str
    datatype: str
    shape: list[int]

    def as_dict(self) -> dict:
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

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": self.platform,
                "inputs": [t.as_dict() for t in self.inputs],
                "outputs": [t.as_dict() for t in [*self.outputs, *self.optional]]}

    def wants_optional(self, request: dict) -> bool:
        """Whether the request names one of the optional outputs."""
        names = {t.name for t in self.optional}
        return any(isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] in names
                   for item in request.get("outputs") or [])


def endpoint_names(name: str) -> list[str]:
    """The models one bundle NAME is served as: NAME (score), NAME-encode, NAME-decode, NAME-sample."""
    return [name, f"{name}-encode", f"{name}-decode", f"{name}-sample"]


def endpoints_for(name: str, model: Model, max_sample_rows: int = 65536) -> list[Endpoint]:
    """The score/encode/decode/sample models of one bundle (``NAME-sample`` answers at most
    ``max_sample_rows`` rows per request)."""
    d, k = len(model.features), model.latent_size
    terms = [TensorSpec(t, "FP32", [-1]) for t in ["energy", *model.terms]]
    encode_outputs = list(model.encoder_outputs)

    def score(inputs):
        return model.score(inputs["y"])

    def explain(inputs):
        return model.score(inputs["y"], explain=True)

    explains = CONTRIBUTIONS in model.bundle.graph("energy").outputs

    def encode(inputs):
        return model.encode_all(inputs["y"])

    def decode(inputs):
        return {"y_tilde": model.decode(inputs["z"])}

    def sample(inputs):
        n = int(inputs["n"].reshape(-1)[0])
        if not 1 <= n <= max_sample_rows:
            raise RequestError(f"n must be in 1..{max_sample_rows}, got {n}")
        seed = int(inputs["seed"].reshape(-1)[0]) if "seed" in inputs else 0
        return {"y": model.sample(n, seed)}

    score_name, encode_name, decode_name, sample_name = endpoint_names(name)
    return [
        Endpoint(score_name, [TensorSpec("y", "FP32", [-1, d])], [*terms, TensorSpec("anomaly", "UINT8", [-1])], score,
                 optional=[TensorSpec(CONTRIBUTIONS, "FP32", [-1, d])] if explains else [],
                 run_optional=explain if explains else None),
        Endpoint(encode_name, [TensorSpec("y", "FP32", [-1, d])],
                 [TensorSpec(o, "FP32", [-1, k]) for o in encode_outputs], encode),
        Endpoint(decode_name, [TensorSpec("z", "FP32", [-1, k])], [TensorSpec("y_tilde", "FP32", [-1, d])], decode),
        Endpoint(sample_name, [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])],
                 [TensorSpec("y", "FP32", [-1, d])], sample, batched=False),
    ]


# -- protocol encoding ---------------------------------------------------------------------

def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_request(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        if not _DIGITS.fullmatch(header_length.strip()):
            raise RequestError(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}")
        size = int(header_length.strip())
        if size > len(body):
            raise RequestError(f"{HEADER_LENGTH} {size} exceeds the body's {len(body)} bytes")
        head, binary = body[:size], body[size:]
    else:
        head, binary = body, b""
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


def _decode_tensor(tensor, specs: dict, endpoint: Endpoint, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    """One request input -> (name, array, new offset into ``binary``); RequestError if it is not
    what ``specs`` says."""
    if not isinstance(tensor, dict):
        raise RequestError("each input must be a JSON object")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    spec = specs.get(name) if isinstance(name, str) else None
    if spec is None:
        shown = repr(name)[:60]
        raise RequestError(f"model {endpoint.name!r} has no input {shown}; inputs: {', '.join(specs)}")
    if datatype != spec.datatype:
        raise RequestError(f"input {name!r}: datatype {str(datatype)[:20]!r}, expected {spec.datatype}")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise RequestError(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(e not in (-1, s) for e, s in zip(spec.shape, shape)):
        raise RequestError(f"input {name!r}: shape {str(shape)[:80]}, expected {spec.shape} (-1 = any)")
    if shape and shape[0] == 0:
        raise RequestError(f"input {name!r}: shape {shape} holds no row")
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(f"input {name!r}: 'parameters' must be a JSON object")
    dtype = np.dtype(DATATYPES[datatype])
    count = math.prod(shape)  # exact: a huge shape is a big int, never a wrapped int64
    size = parameters.get("binary_data_size")
    if size is not None:
        if not _is_count(size) or size != count * dtype.itemsize or offset + size > len(binary):
            raise RequestError(f"input {name!r}: binary_data_size {str(size)[:30]} does not match shape {shape} "
                               f"of {datatype} or the {len(binary) - offset} bytes left in the body")
        array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
        return name, array, offset + size
    data = tensor.get("data")
    if not isinstance(data, (list, np.ndarray)):  # an array: typed gRPC contents
        raise RequestError(f"input {name!r}: needs 'data' (a list) or parameters.binary_data_size")
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"input {name!r}: 'data' does not hold {datatype} values") from None
    if array.size != count:
        raise RequestError(f"input {name!r}: {array.size} values for shape {shape}")
    return name, array.reshape(shape), offset


def _decode_inputs(request: dict, binary: bytes, endpoint: Endpoint) -> dict[str, np.ndarray]:
    specs = {t.name: t for t in endpoint.inputs}
    arrays, offset = {}, 0
    for tensor in request["inputs"]:
        name, array, offset = _decode_tensor(tensor, specs, endpoint, binary, offset)
        if name in arrays:
            raise RequestError(f"input {name!r} is given twice")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise RequestError(f"input {name!r}: row {row + 1} holds NaN or inf")
        arrays[name] = array
    missing = [n for n in specs if n not in arrays and not (endpoint.name.endswith("-sample") and n == "seed")]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}")
    return arrays


def decode_request(body: bytes, header_length: str | None, endpoint: Endpoint) -> tuple[dict, dict[str, np.ndarray]]:
    """A KServe v2 request body (JSON, or JSON header + binary tensors when ``header_length``
    is the Inference-Header-Content-Length) -> (the JSON request, the input arrays by name).
    Anything malformed is a RequestError (400) saying what; nothing else is raised."""
    request, binary = _parse_request(body, header_length)
    return request, _decode_inputs(request, binary, endpoint)


def _encode_outputs(request: dict, outputs: dict[str, np.ndarray], endpoint: Endpoint) -> tuple[dict, bytes]:
    all_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    wanted = request.get("outputs") or [{"name": t.name} for t in endpoint.outputs]
    known = [t.name for t in [*endpoint.outputs, *endpoint.optional]]
    entries, chunks = [], []
    for item in wanted:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in known:
            raise RequestError(f"model {endpoint.name!r} has no output {repr(name)[:60]}; outputs: {', '.join(known)}")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(f"output {name!r}: 'parameters' must be a JSON object")
        array = np.ascontiguousarray(outputs[name])
        entry = {"name": name, "datatype": _NAMES[array.dtype], "shape": list(array.shape)}
        if parameters.get("binary_data", all_binary):
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = array.reshape(-1)
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                # JSON has no inf/NaN: saturate to the dtype's largest finite value (binary keeps inf)
                flat = np.nan_to_num(flat, nan=np.finfo(flat.dtype).max)
            entry["data"] = fastjson.tensor_data(flat)
        entries.append(entry)
    response = {"model_name": endpoint.name, "model_version": "1", "outputs": entries}
    if "id" in request:
        response["id"] = request["id"]
    return response, b"".join(chunks)


# -- the application -----------------------------------------------------------------------

_PATHS = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)+[\w.@+-]*")


REQUEST_ID = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(given: str | None) -> str:
    """The client's request id (``X-Request-Id``, up to 128 of ``A-Za-z0-9._:-``), else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


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


def log_error(model: str, status, message: str, request_id: str) -> None:
    """One JSON line per failed request: what a log pipeline can parse and count."""
    log.warning(json.dumps({"event": "request_failed", "model": model[:80], "status": str(status),
                            "error": _public(message)[:500], "request_id": request_id}))


def _public(message: str) -> str:
    """An error message fit for a client: file-system paths replaced by '<path>'."""
    return _PATHS.sub("<path>", message)


class _Inflight:
    """Request body bytes being read or decoded, bounded by ``limit`` (event-loop only, no lock)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


def create_app(models: dict[str, Model], config: ServerConfig = ServerConfig(), *,
               paths: dict[str, Path] | None = None, loader: Callable[[Path], Model] | None = None,
               poll_s: float | None = None):
    """A Starlette app serving ``models`` (bundle name -> runtime Model)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from aeserve.serve.openapi import openapi_document
    from aeserve.serve.repository import Repository

    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="aeserve-infer")
    endpoints: dict[str, Endpoint] = {}  # shared with the gRPC service; the repository swaps entries
    state = {"ready": False, "started": False}
    inflight = _Inflight(int(config.max_inflight_mb * (1 << 20)))
    retiring: set[asyncio.Task] = set()

    def start_batcher(endpoint: Endpoint) -> None:
        if endpoint.batched and config.max_batch > 1:
            endpoint.batcher = Batcher(
                lambda rows, e=endpoint: e.run({e.inputs[0].name: rows}), executor, max_batch=config.max_batch,
                max_delay=config.max_delay_ms / 1000.0, max_queue_rows=config.max_queue_rows,
                on_batch=lambda n, waited, seconds, e=endpoint: observe_batch(e.name, n, waited, seconds))
            endpoint.batcher.start()

    def observe_batch(name: str, rows: int, waited: list[float], seconds: float) -> None:
        metrics.observe("aeserve_batch_rows", rows, model=name)
        metrics.observe("aeserve_compute_seconds", seconds, model=name)
        for wait in waited:
            metrics.observe("aeserve_queue_seconds", wait, model=name)

    def retire(old: list[Endpoint]) -> None:
        """Let the replaced endpoints' batchers finish what they hold, then stop them."""
        for endpoint in old:
            if endpoint.batcher is not None:
                task = asyncio.get_running_loop().create_task(endpoint.batcher.stop())
                retiring.add(task)
                task.add_done_callback(retiring.discard)

    def install(name: str, model: Model) -> None:
        new = endpoints_for(name, model, max_sample_rows=config.max_queue_rows)
        if state["started"]:  # else startup starts them, on the server's loop
            for endpoint in new:
                start_batcher(endpoint)
        old = [endpoints[e.name] for e in new if e.name in endpoints]
        endpoints.update({e.name: e for e in new})  # one update: a request sees old or new, never neither
        retire(old)

    def remove(name: str) -> None:
        retire([endpoints.pop(n) for n in endpoint_names(name) if n in endpoints])

    repository = Repository(paths or {name: model.bundle.path for name, model in models.items()},
                            loader or aeserve.load, install, remove)

    for name, model in models.items():
        repository.adopt(name, model)

    async def startup() -> None:
        for endpoint in endpoints.values():
            start_batcher(endpoint)
        state["started"] = state["ready"] = True

    async def shutdown() -> None:
        state["ready"] = False
        for endpoint in list(endpoints.values()):
            if endpoint.batcher:
                await endpoint.batcher.stop()
        for task in list(retiring):
            await task
        executor.shutdown(wait=True)

    async def run_endpoint(endpoint: Endpoint, payload: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of one decoded request: optional outputs alone, else through the model's
        batcher (or straight to the executor when batching is off). HTTP and gRPC share it."""
        loop = asyncio.get_running_loop()
        if endpoint.wants_optional(payload):
            return await loop.run_in_executor(executor, endpoint.run_optional, inputs)
        if endpoint.batcher is not None:
            return await endpoint.batcher.submit(next(iter(inputs.values())))
        started = time.perf_counter()
        outputs = await loop.run_in_executor(executor, endpoint.run, inputs)
        observe_batch(endpoint.name, len(next(iter(outputs.values()))), [0.0], time.perf_counter() - started)
        return outputs

    def error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": _public(message)}, status_code=status, headers=headers)

    def endpoint_or_404(request: Request) -> Endpoint:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in endpoints or version not in (None, "", "1"):
            raise RequestError(f"unknown model {name[:80]!r}" + (f" version {version[:20]!r}" if version else "")
                               + f"; served: {', '.join(sorted(endpoints))}", 404)
        return endpoints[name]

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "aeserve", "version": aeserve.__version__,
                             "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        try:
            return JSONResponse(endpoint_or_404(request).metadata())
        except RequestError as exc:
            return error(str(exc), exc.status)

    async def model_ready(request: Request) -> Response:
        try:
            endpoint_or_404(request)
        except RequestError as exc:
            return error(str(exc), exc.status)
        return JSONResponse({"name": request.path_params["name"], "ready": state["ready"]},
                            status_code=200 if state["ready"] else 503)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        name, status, held = request.path_params["name"], 200, [0]
        request_id = request_id_of(request.headers.get(REQUEST_ID))
        message = ""
        try:
            try:
                endpoint = endpoint_or_404(request)
                body = await _read_body(request, config.max_body_mb, inflight, held)
                metrics.observe("aeserve_request_bytes", len(body), model=name)
                payload, inputs = decode_request(body, request.headers.get(HEADER_LENGTH), endpoint)
                outputs = await run_endpoint(endpoint, payload, inputs)
                del body, inputs
                rows = len(next(iter(outputs.values())))
                response, raw = _encode_outputs(payload, outputs, endpoint)
                metrics.inc("aeserve_rows_total", rows, model=name)
                if raw:
                    head = fastjson.dumps(response)
                    answer = Response(head + raw, media_type="application/octet-stream",
                                      headers={HEADER_LENGTH: str(len(head))})
                else:
                    answer = Response(fastjson.dumps(response), media_type="application/json")
            except ClientDisconnect:
                status, message = 499, "the client left mid-body"  # nobody to answer
                answer = Response(status_code=400)
            except Exception as exc:
                status, message = failure(exc)
                if status == 500:  # a bug: logged with its traceback, answered without it
                    log.exception("infer %s failed (request id %s)", name[:80], request_id)
            if status != 200:
                log_error(name, status, message, request_id)
                if status != 499:
                    answer = error(message, status)
            answer.headers[REQUEST_ID] = request_id
            return answer
        finally:
            inflight.give(held[0])
            metrics.inc("aeserve_requests_total", model=name if name in endpoints else "(unknown)", status=str(status))
            metrics.observe("aeserve_request_latency_seconds", time.perf_counter() - started,
                            model=name if name in endpoints else "(unknown)")

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(sorted(endpoints), aeserve.__version__))

    async def repository_index(request: Request) -> Response:
        body = await request.body()
        try:
            options = fastjson.loads(body) if body.strip() else {}
        except ValueError:
            return error("the index request must be a JSON object such as {\"ready\": true}", 400)
        ready_only = isinstance(options, dict) and options.get("ready") is True
        return JSONResponse(repository.index(ready_only))

    def known(request: Request) -> str:
        name = request.path_params["name"]
        if name not in repository.entries:
            raise RequestError(f"no bundle {name[:80]!r} in the repository; it holds "
                               f"{', '.join(sorted(repository.entries))}", 404)
        return name

    async def repository_load(request: Request) -> Response:
        try:
            name = known(request)
            await repository.load(name)
        except RequestError as exc:
            return error(str(exc), exc.status)
        except aeserve.AeserveError as exc:
            return error(f"{name}: {exc}", 400)
        return JSONResponse({})

    async def repository_unload(request: Request) -> Response:
        try:
            repository.unload(known(request))
        except RequestError as exc:
            return error(str(exc), exc.status)
        return JSONResponse({})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        reason = {404: "no such route; see /openapi.json", 405: "method not allowed on this route"}
        return error(reason.get(exc.status_code, str(exc.detail)), exc.status_code,
                     headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path[:80], exc_info=exc)
        return error("internal error; the server log has the details", 500)

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        Route("/metrics", metrics_page),
        Route("/openapi.json", openapi),
    ]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await startup()
        grpc_server = watcher = None
        if config.grpc_port is not None:
            from aeserve.serve.grpc_server import start_grpc

            grpc_server = await start_grpc(endpoints, run_endpoint, state, metrics, config)
        if poll_s:
            watcher = asyncio.get_running_loop().create_task(repository.watch(poll_s))
        yield
        if watcher is not None:
            watcher.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace=10)
        await shutdown()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.metrics = metrics
    app.state.repository = repository
    if config.token is not None:
        return BearerAuth(app, config.token)
    return app


class BearerAuth:
    """ASGI middleware: every HTTP route but ``OPEN_PATHS`` needs ``Authorization: Bearer TOKEN``;
    the token is compared in constant time; a miss is 401 ``{"error"}`` before the body is read."""

    def __init__(self, app, token: str):
        self.app, self._token = app, token.encode()
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)):
                body = json.dumps({"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def _read_body(request, max_body_mb: float, inflight: _Inflight, held: list[int]) -> bytes:
    """The body, refused with 413 above ``max_body_mb`` (from Content-Length, before reading) and
    with 503 when the bytes in flight would pass their limit; ``held[0]`` counts what this request
    holds. A 503 body is read and dropped chunk by chunk (no memory kept), so that the client,
    still sending, gets its answer instead of a reset connection."""
    limit = int(max_body_mb * (1 << 20))
    declared = request.headers.get("content-length")
    busy = None
    if declared is not None and _DIGITS.fullmatch(declared):
        if int(declared) > limit:
            raise RequestError(f"request body of {int(declared)} bytes exceeds --max-body-mb {max_body_mb:g}", 413)
        if inflight.take(int(declared)):
            held[0] = int(declared)
        else:
            busy = f"server busy: {inflight.held} request bytes in flight; retry later"
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body exceeds --max-body-mb {max_body_mb:g}", 413)
        if busy:
            continue
        if size > held[0]:  # chunked (or lying) bodies are counted as they arrive
            if not inflight.take(size - held[0]):
                busy = f"server busy: {inflight.held} request bytes in flight; retry later"
                chunks.clear()
                continue
            held[0] = size
        chunks.append(chunk)
    if busy:
        raise RequestError(busy, 503)
    return b"".join(chunks)
