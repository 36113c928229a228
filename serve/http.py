"""KServe v2 / Open Inference Protocol over HTTP (Starlette on uvicorn), with the binary
tensor data extension, so the stock ``tritonclient.http`` client works with its defaults.

Each bundle ``NAME`` is served as four models:

- ``NAME``         y (FP32 [-1, features]) -> energy, its terms (FP32 [-1]), anomaly (UINT8 [-1])
- ``NAME-encode``  y -> z (VAE: mu, logvar), FP32 [-1, latent]
- ``NAME-decode``  z (FP32 [-1, latent]) -> y_tilde (FP32 [-1, features])
- ``NAME-sample``  n (INT64 [1]), optional seed (INT64 [1]) -> y (FP32 [n, features])

Batched models go through a dynamic batcher. Errors follow the protocol: a JSON body
``{"error": "..."}`` with 400 (bad request), 404 (unknown model), 413 (body too large) or
503 (queue full).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import aeserve
from aeserve.manifest import CONTRIBUTIONS
from aeserve.serve.batching import Batcher, QueueFull
from aeserve.serve.metrics import Metrics
from aeserve.serve.model import Model

__all__ = ["ServerConfig", "Endpoint", "endpoints_for", "create_app", "DATATYPES"]

DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


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
        return any(isinstance(item, dict) and item.get("name") in names for item in request.get("outputs") or [])


def endpoints_for(name: str, model: Model) -> list[Endpoint]:
    """The score/encode/decode/sample models of one bundle."""
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
        if not 1 <= n <= 1_000_000:
            raise RequestError(f"n must be in 1..1000000, got {n}")
        seed = int(inputs["seed"].reshape(-1)[0]) if "seed" in inputs else 0
        return {"y": model.sample(n, seed)}

    return [
        Endpoint(name, [TensorSpec("y", "FP32", [-1, d])], [*terms, TensorSpec("anomaly", "UINT8", [-1])], score,
                 optional=[TensorSpec(CONTRIBUTIONS, "FP32", [-1, d])] if explains else [],
                 run_optional=explain if explains else None),
        Endpoint(f"{name}-encode", [TensorSpec("y", "FP32", [-1, d])],
                 [TensorSpec(o, "FP32", [-1, k]) for o in encode_outputs], encode),
        Endpoint(f"{name}-decode", [TensorSpec("z", "FP32", [-1, k])], [TensorSpec("y_tilde", "FP32", [-1, d])], decode),
        Endpoint(f"{name}-sample", [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])],
                 [TensorSpec("y", "FP32", [-1, d])], sample, batched=False),
    ]


# -- protocol encoding ---------------------------------------------------------------------

def _parse_request(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise RequestError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise RequestError(f"{HEADER_LENGTH} {size} exceeds the body's {len(body)} bytes")
        head, binary = body[:size], body[size:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError("request must be a JSON object with an 'inputs' list")
    return request, binary


def _decode_inputs(request: dict, binary: bytes, endpoint: Endpoint) -> dict[str, np.ndarray]:
    specs = {t.name: t for t in endpoint.inputs}
    arrays, offset = {}, 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict):
            raise RequestError("each input must be a JSON object")
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        spec = specs.get(name)
        if spec is None:
            raise RequestError(f"model {endpoint.name!r} has no input {name!r}; inputs: {', '.join(specs)}")
        if datatype != spec.datatype:
            raise RequestError(f"input {name!r}: datatype {datatype!r}, expected {spec.datatype}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise RequestError(f"input {name!r}: shape must be a list of non-negative integers")
        if len(shape) != len(spec.shape) or any(e not in (-1, s) for e, s in zip(spec.shape, shape)):
            raise RequestError(f"input {name!r}: shape {shape}, expected {spec.shape} (-1 = any)")
        dtype = np.dtype(DATATYPES[datatype])
        count = int(np.prod(shape))
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * dtype.itemsize or offset + size > len(binary):
                raise RequestError(f"input {name!r}: binary_data_size {size} does not match shape {shape} "
                                   f"of {datatype} or the bytes sent")
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            try:
                array = np.asarray(tensor.get("data"), dtype=dtype)
            except (TypeError, ValueError):
                raise RequestError(f"input {name!r}: 'data' does not hold {datatype} values") from None
            if array.size != count:
                raise RequestError(f"input {name!r}: {array.size} values for shape {shape}")
            array = array.reshape(shape)
        if dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise RequestError(f"input {name!r}: row {row + 1} holds NaN or inf")
        arrays[name] = array
    missing = [n for n in specs if n not in arrays and not (endpoint.name.endswith("-sample") and n == "seed")]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}")
    return arrays


def _encode_outputs(request: dict, outputs: dict[str, np.ndarray], endpoint: Endpoint) -> tuple[dict, bytes]:
    all_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    wanted = request.get("outputs") or [{"name": t.name} for t in endpoint.outputs]
    known = {t.name for t in [*endpoint.outputs, *endpoint.optional]}
    entries, chunks = [], []
    for item in wanted:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in known:
            raise RequestError(f"model {endpoint.name!r} has no output {name!r}; outputs: {', '.join(known)}")
        array = np.ascontiguousarray(outputs[name])
        entry = {"name": name, "datatype": _NAMES[array.dtype], "shape": list(array.shape)}
        if (item.get("parameters") or {}).get("binary_data", all_binary):
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = array.reshape(-1)
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                # JSON has no inf/NaN: saturate to the dtype's largest finite value (binary keeps inf)
                flat = np.nan_to_num(flat, nan=np.finfo(flat.dtype).max)
            entry["data"] = flat.tolist()
        entries.append(entry)
    response = {"model_name": endpoint.name, "model_version": "1", "outputs": entries}
    if "id" in request:
        response["id"] = request["id"]
    return response, b"".join(chunks)


# -- the application -----------------------------------------------------------------------

def create_app(models: dict[str, Model], config: ServerConfig = ServerConfig()):
    """A Starlette app serving ``models`` (bundle name -> runtime Model)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="aeserve-infer")
    endpoints = {e.name: e for name, model in models.items() for e in endpoints_for(name, model)}
    state = {"ready": False}

    async def startup() -> None:
        for endpoint in endpoints.values():
            if endpoint.batched and config.max_batch > 1:
                endpoint.batcher = Batcher(
                    lambda rows, e=endpoint: e.run({e.inputs[0].name: rows}), executor, max_batch=config.max_batch,
                    max_delay=config.max_delay_ms / 1000.0, max_queue_rows=config.max_queue_rows,
                    on_batch=lambda n, e=endpoint: metrics.observe("aeserve_batch_rows", n, model=e.name))
                endpoint.batcher.start()
        state["ready"] = True

    async def shutdown() -> None:
        state["ready"] = False
        for endpoint in endpoints.values():
            if endpoint.batcher:
                await endpoint.batcher.stop()
        executor.shutdown(wait=True)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def endpoint_or_404(request: Request) -> Endpoint:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in endpoints or version not in (None, "", "1"):
            raise RequestError(f"unknown model {name!r}" + (f" version {version!r}" if version else "")
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
        name, status = request.path_params["name"], 200
        try:
            endpoint = endpoint_or_404(request)
            body = await _read_body(request, config.max_body_mb)
            payload, binary = _parse_request(body, request.headers.get(HEADER_LENGTH))
            inputs = _decode_inputs(payload, binary, endpoint)
            if endpoint.wants_optional(payload):
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(executor, endpoint.run_optional, inputs)
            elif endpoint.batcher is not None:
                outputs = await endpoint.batcher.submit(next(iter(inputs.values())))
            else:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(executor, endpoint.run, inputs)
                metrics.observe("aeserve_batch_rows", len(next(iter(outputs.values()))), model=name)
            rows = len(next(iter(outputs.values())))
            response, raw = _encode_outputs(payload, outputs, endpoint)
            metrics.inc("aeserve_rows_total", rows, model=name)
            if raw:
                head = json.dumps(response).encode()
                return Response(head + raw, media_type="application/octet-stream",
                                headers={HEADER_LENGTH: str(len(head))})
            return JSONResponse(response)
        except RequestError as exc:
            status = exc.status
            return error(str(exc), status)
        except QueueFull as exc:
            status = 503
            return error(f"server busy: {exc}; retry later", status)
        except aeserve.AeserveError as exc:
            status = 400
            return error(str(exc), status)
        finally:
            metrics.inc("aeserve_requests_total", model=name, status=str(status))
            metrics.observe("aeserve_request_latency_seconds", time.perf_counter() - started, model=name)

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/metrics", metrics_page),
    ]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await startup()
        yield
        await shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app


async def _read_body(request, max_body_mb: float) -> bytes:
    limit = int(max_body_mb * (1 << 20))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {int(declared)} bytes exceeds --max-body-mb {max_body_mb:g}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body exceeds --max-body-mb {max_body_mb:g}", 413)
        chunks.append(chunk)
    return b"".join(chunks)
