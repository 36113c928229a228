"""KServe v2 over gRPC (``aeserve serve --grpc-port P``), beside the HTTP server in one process.

It runs on the HTTP server's event loop (``grpc.aio``) and shares its endpoints, dynamic
batchers, limits, metrics and error messages: a gRPC request is turned into the same decoded
inputs as an HTTP one (``raw_input_contents``, or typed ``contents``) and answered with
``raw_output_contents``. Client mistakes get INVALID_ARGUMENT, an unknown model NOT_FOUND, a
full queue RESOURCE_EXHAUSTED, a missing bearer token UNAUTHENTICATED (ServerLive and
ServerReady stay open for probes); a bug is INTERNAL with its traceback only in the log.
Messages come from ``grpc_descriptor`` (a private descriptor pool); handlers are registered
with grpcio's generic handler API, so no generated service code is needed.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Awaitable, Callable

import grpc
import numpy as np

import aeserve
from aeserve.serve.grpc_descriptor import SERVICE, messages
from aeserve.serve.http import (
    RequestError,
    _decode_inputs,
    _encode_outputs,
    _public,
    failure,
    log_error,
    request_id_of,
)

__all__ = ["start_grpc", "CONTENTS_FIELD"]

log = logging.getLogger("aeserve.serve")

#: datatype -> the InferTensorContents field holding its values
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents"}
_OPEN = {"ServerLive", "ServerReady"}
#: HTTP status of ``http.failure`` -> gRPC status (a full queue is RESOURCE_EXHAUSTED; the rest of 4xx
#: is INVALID_ARGUMENT)
_CODES = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL}


def _parameter(value):
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def to_payload(request) -> tuple[dict, bytes]:
    """A ModelInferRequest -> (the request as the HTTP server's JSON form, the raw bytes), so
    that one decoder checks both protocols."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                 "parameters": {k: _parameter(v) for k, v in tensor.parameters.items()}}
        if raw:
            entry["parameters"]["binary_data_size"] = len(raw[i])
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                raise RequestError(f"input {tensor.name!r}: datatype {tensor.datatype[:20]!r} needs raw_input_contents")
            entry["data"] = np.asarray(getattr(tensor.contents, field))
        inputs.append(entry)
    payload = {"inputs": inputs, "outputs": [{"name": o.name} for o in request.outputs],
               "parameters": {k: _parameter(v) for k, v in request.parameters.items()}}
    if request.id:
        payload["id"] = request.id
    return payload, b"".join(raw)


class _Service:
    """The six RPCs over the HTTP server's endpoints."""

    def __init__(self, endpoints, run_endpoint, state, metrics, token: str | None):
        self.endpoints, self.run_endpoint, self.state, self.metrics = endpoints, run_endpoint, state, metrics
        self.token = token.encode() if token else None
        self.m = messages()

    async def _authorised(self, method: str, context) -> None:
        if self.token is None or method in _OPEN:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(given.encode(), b"Bearer " + self.token):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong bearer token (metadata authorization: Bearer TOKEN)")

    async def _endpoint(self, name: str, version: str, context):
        if name not in self.endpoints or version not in ("", "1"):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown model {name[:80]!r}" + (f" version {version[:20]!r}" if version else "")
                                + f"; served: {', '.join(sorted(self.endpoints))}")
        return self.endpoints[name]

    async def ServerLive(self, request, context):
        return self.m["ServerLiveResponse"](live=True)

    async def ServerReady(self, request, context):
        return self.m["ServerReadyResponse"](ready=self.state["ready"])

    async def ModelReady(self, request, context):
        await self._authorised("ModelReady", context)
        await self._endpoint(request.name, request.version, context)
        return self.m["ModelReadyResponse"](ready=self.state["ready"])

    async def ServerMetadata(self, request, context):
        await self._authorised("ServerMetadata", context)
        return self.m["ServerMetadataResponse"](name="aeserve", version=aeserve.__version__, extensions=[])

    async def ModelMetadata(self, request, context):
        await self._authorised("ModelMetadata", context)
        metadata = (await self._endpoint(request.name, request.version, context)).metadata()
        tensor = self.m["ModelMetadataResponse"].TensorMetadata
        return self.m["ModelMetadataResponse"](
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]], outputs=[tensor(**t) for t in metadata["outputs"]])

    async def ModelInfer(self, request, context):
        await self._authorised("ModelInfer", context)
        started, name = time.perf_counter(), request.model_name
        known = name in self.endpoints
        status = grpc.StatusCode.OK
        request_id = request_id_of(request.id or dict(context.invocation_metadata()).get("x-request-id"))
        try:
            endpoint = await self._endpoint(name, request.model_version, context)
            self.metrics.observe("aeserve_request_bytes", request.ByteSize(), model=name)
            payload, binary = to_payload(request)
            inputs = _decode_inputs(payload, binary, endpoint)
            outputs = await self.run_endpoint(endpoint, payload, inputs)
            payload["parameters"] = {"binary_data_output": True}
            response, raw = _encode_outputs(payload, outputs, endpoint)
            self.metrics.inc("aeserve_rows_total", len(next(iter(outputs.values()))), model=name)
            context.set_trailing_metadata((("x-request-id", request_id),))
            return self._response(response, raw)
        except grpc.aio.AbortError:
            status = grpc.StatusCode.NOT_FOUND
            raise
        except Exception as exc:
            http_status, message = failure(exc)
            status = _CODES.get(http_status, grpc.StatusCode.INVALID_ARGUMENT)
            if status == grpc.StatusCode.INTERNAL:  # a bug: logged with its traceback, answered without it
                log.exception("grpc infer %s failed (request id %s)", name[:80], request_id)
        finally:
            label = name if known else "(unknown)"
            self.metrics.inc("aeserve_requests_total", model=label, status=f"grpc {status.name}")
            self.metrics.observe("aeserve_request_latency_seconds", time.perf_counter() - started, model=label)
        log_error(name, f"grpc {status.name}", message, request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        await context.abort(status, _public(message))

    def _response(self, response: dict, raw: bytes):
        tensor = self.m["ModelInferResponse"].InferOutputTensor
        outputs, contents, offset = [], [], 0
        for entry in response["outputs"]:
            size = entry["parameters"]["binary_data_size"]
            outputs.append(tensor(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]))
            contents.append(raw[offset:offset + size])
            offset += size
        return self.m["ModelInferResponse"](model_name=response["model_name"], model_version="1",
                                            id=response.get("id", ""), outputs=outputs, raw_output_contents=contents)


async def start_grpc(endpoints: dict, run_endpoint: Callable[..., Awaitable[dict]], state: dict, metrics,
                     config) -> grpc.aio.Server:
    """Start the gRPC server of ``config`` (grpc_host, grpc_port, grpc_tls, token, max_body_mb)
    on the running loop; the caller stops it with ``await server.stop(grace)``."""
    service = _Service(endpoints, run_endpoint, state, metrics, config.token)
    m = service.m
    pairs = {"ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
             "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
             "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
             "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
             "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
             "ModelInfer": ("ModelInferRequest", "ModelInferResponse")}
    handlers = {method: grpc.unary_unary_rpc_method_handler(
        getattr(service, method), request_deserializer=m[request].FromString,
        response_serializer=m[response].SerializeToString) for method, (request, response) in pairs.items()}
    limit = int(config.max_body_mb * (1 << 20))
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = f"{config.grpc_host}:{config.grpc_port}"
    try:
        if config.grpc_tls is not None:
            certificate, key = config.grpc_tls
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, certificate)]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    if port == 0 and config.grpc_port != 0:
        raise OSError(f"gRPC cannot listen on {address} (in use?)")
    await server.start()
    return server
