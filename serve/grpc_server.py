"""KServe v2 over gRPC (``aeserve serve --grpc-port P``), beside the HTTP server in one process.

It runs on the HTTP server's event loop (``grpc.aio``) over the same ``ModelServer``
(endpoints, dynamic batchers, limits, metrics, token): protobuf tensors become the protocol's
wire tensors (``raw_input_contents``, or typed ``contents``), checked by the one decoder
HTTP uses too, and outputs go back as ``raw_output_contents``. Client mistakes get INVALID_ARGUMENT, an unknown model NOT_FOUND, a
full queue RESOURCE_EXHAUSTED, a missing bearer token UNAUTHENTICATED (ServerLive and
ServerReady stay open for probes); a bug is INTERNAL with its traceback only in the log.
Messages come from ``grpc_descriptor`` (a private descriptor pool); handlers are registered
with grpcio's generic handler API, so no generated service code is needed.
"""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np

import aeserve
from aeserve.serve.grpc_descriptor import SERVICE, messages
from aeserve.serve.model_server import ModelServer
from aeserve.serve.protocol import (
    InferRequest,
    OutputWanted,
    RequestError,
    SequenceRef,
    WireTensor,
    check_outputs,
    datatype_of,
    decode_tensors,
    failure,
    log_error,
    pack_bytes,
    public,
    request_id_of,
)

__all__ = ["start_grpc", "CONTENTS_FIELD"]

log = logging.getLogger("aeserve.serve")

#: datatype -> the InferTensorContents field holding its values
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_OPEN = {"ServerLive", "ServerReady"}
#: HTTP status of ``protocol.failure`` -> gRPC status (a full queue is RESOURCE_EXHAUSTED; the rest of
#: 4xx is INVALID_ARGUMENT)
_CODES = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL}


def _parameter(value):
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def wire_tensors(request) -> list[WireTensor]:
    """A ModelInferRequest's inputs as the protocol's wire tensors: raw bytes
    (``raw_input_contents``, one per input) or typed ``contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        wire = WireTensor(tensor.name, tensor.datatype, list(tensor.shape),
                          {k: _parameter(v) for k, v in tensor.parameters.items()})
        if raw:
            wire.raw = raw[i]
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                raise RequestError(f"input {tensor.name!r}: datatype {tensor.datatype[:20]!r} needs raw_input_contents")
            wire.data = np.asarray(getattr(tensor.contents, field))
        tensors.append(wire)
    return tensors


class _Service:
    """The six RPCs over a ``ModelServer``."""

    def __init__(self, server: ModelServer):
        self.server = server
        self.m = messages()

    async def _authorised(self, method: str, context) -> None:
        if method in _OPEN:
            return
        if not self.server.authorised(dict(context.invocation_metadata()).get("authorization", "")):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong bearer token (metadata authorization: Bearer TOKEN)")

    async def _endpoint(self, name: str, version: str, context):
        try:
            return self.server.endpoint(name, version)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    async def ServerLive(self, request, context):
        return self.m["ServerLiveResponse"](live=True)

    async def ServerReady(self, request, context):
        return self.m["ServerReadyResponse"](ready=self.server.ready)

    async def ModelReady(self, request, context):
        await self._authorised("ModelReady", context)
        await self._endpoint(request.name, request.version, context)
        return self.m["ModelReadyResponse"](ready=self.server.ready)

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
        request_id = request_id_of(request.id or dict(context.invocation_metadata()).get("x-request-id"))
        try:
            endpoint = await self._endpoint(name, request.model_version, context)
            self.server.metrics.observe("aeserve_request_bytes", request.ByteSize(), model=name)
            sequence = SequenceRef.from_parameters({k: _parameter(v) for k, v in request.parameters.items()})
            variant = endpoint.variant(sequence)
            wanted = InferRequest(decode_tensors(variant, wire_tensors(request)),
                                  check_outputs(variant, [OutputWanted(o.name, True) for o in request.outputs]),
                                  True, request.id or None, sequence)
            outputs = await self.server.infer(endpoint, wanted)
            self.server.observe_request(name, "grpc OK", started, len(next(iter(outputs.values()))))
            context.set_trailing_metadata((("x-request-id", request_id),))
            return self._response(endpoint.name, wanted, outputs)
        except grpc.aio.AbortError:
            self.server.observe_request(name, "grpc NOT_FOUND", started)
            raise
        except Exception as exc:
            http_status, message = failure(exc)
            status = _CODES.get(http_status, grpc.StatusCode.INVALID_ARGUMENT)
            if status == grpc.StatusCode.INTERNAL:  # a bug: logged with its traceback, answered without it
                log.exception("grpc infer %s failed (request id %s)", name[:80], request_id)
        self.server.observe_request(name, f"grpc {status.name}", started)
        log_error(name, f"grpc {status.name}", message, request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        await context.abort(status, public(message))

    def _response(self, model: str, request: InferRequest, outputs: dict):
        """The ModelInferResponse: every output as raw bytes, straight from its array."""
        tensor = self.m["ModelInferResponse"].InferOutputTensor
        arrays = [(w.name, np.ascontiguousarray(outputs[w.name])) for w in request.outputs]
        return self.m["ModelInferResponse"](
            model_name=model, model_version="1", id=request.id or "",
            outputs=[tensor(name=n, datatype=datatype_of(a), shape=list(a.shape)) for n, a in arrays],
            raw_output_contents=[pack_bytes(a.reshape(-1)) if a.dtype == object else a.tobytes() for _, a in arrays])


async def start_grpc(model_server: ModelServer, settings) -> grpc.aio.Server:
    """Start gRPC on ``settings`` (``http.GrpcSettings``: host, port, TLS) over ``model_server``
    (its endpoints, batchers, token and body limit), on the running loop; the caller stops it
    with ``await server.stop(grace)``."""
    service = _Service(model_server)
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
    limit = int(model_server.config.max_body_mb * (1 << 20))
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls is not None:
            certificate, key = settings.tls
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, certificate)]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    if port == 0 and settings.port != 0:
        raise OSError(f"gRPC cannot listen on {address} (in use?)")
    await server.start()
    return server
