"""KServe v2 / Open Inference Protocol over HTTP (Starlette on uvicorn): routes, body limits,
the bearer token, and the app. The protocol itself lives in ``serve/protocol.py`` (requests,
endpoints, failures), its JSON and binary-extension encoding in ``serve/kserve_json.py`` (so
the stock ``tritonclient.http`` client works with its defaults), and what runs requests in
``serve/model_server.py``, which gRPC shares.

Errors follow the protocol: a JSON body ``{"error": "..."}`` with 400 (bad request), 401
(missing or wrong bearer token), 404 (unknown model or route), 405 (wrong method), 413 (body
too large) or 503 (queue full, or too many request bytes in flight). No response carries a
stack trace or a file-system path; an unexpected failure is a 500 ``{"error"}`` whose details
go to the server log only.

Limits: a request body above ``max_body_mb`` is refused from its Content-Length before it is
read; the bodies being read or decoded at once hold at most ``max_inflight_mb`` (more get 503
at once), so memory stays bounded however many clients send; rows waiting for the batcher
are bounded by ``max_queue_rows``. ``/openapi.json`` describes the routes (KServe v2 REST).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aeserve
from aeserve.serve import fastjson
from aeserve.serve.kserve_json import HEADER_LENGTH, decode_request, encode_response, is_digits
from aeserve.serve.model_server import ModelServer, ServerConfig
from aeserve.serve.protocol import (
    DATATYPES,
    Endpoint,
    RequestError,
    endpoints_for,
    failure,
    log_error,
    public,
    request_id_of,
)

__all__ = ["ServerConfig", "GrpcSettings", "Endpoint", "endpoints_for", "create_app", "decode_request",
           "RequestError", "DATATYPES", "OPEN_PATHS"]

log = logging.getLogger("aeserve.serve")

#: routes that answer without a bearer token (liveness/readiness probes)
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
REQUEST_ID = "x-request-id"


@dataclass(frozen=True)
class GrpcSettings:
    """Where the gRPC transport listens beside HTTP (``aeserve serve --grpc-port``)."""

    port: int
    host: str = "127.0.0.1"
    tls: tuple[bytes, bytes] | None = field(default=None, repr=False)  # (certificate, key) PEM

    def __post_init__(self) -> None:
        """Refuse a port out of range before a server starts."""
        if not 0 <= self.port <= 65535:
            raise aeserve.InputError(f"grpc_port must be in 0..65535, got {self.port}")


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


def _error(message: str, status: int, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": public(message)}, status_code=status, headers=headers)


class _Routes:
    """The HTTP routes over one ``ModelServer``."""

    def __init__(self, server: ModelServer):
        self.server = server
        self.inflight = _Inflight(int(server.config.max_inflight_mb * (1 << 20)))

    def _endpoint(self, request) -> Endpoint:
        return self.server.endpoint(request.path_params["name"], request.path_params.get("version"))

    async def live(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"live": True})

    async def ready(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"ready": self.server.ready}, status_code=200 if self.server.ready else 503)

    async def server_metadata(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"name": "aeserve", "version": aeserve.__version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self._endpoint(request).metadata())

    async def model_ready(self, request):
        from starlette.responses import JSONResponse

        self._endpoint(request)
        return JSONResponse({"name": request.path_params["name"], "ready": self.server.ready},
                            status_code=200 if self.server.ready else 503)

    async def infer(self, request):
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        started, name, held = time.perf_counter(), request.path_params["name"], [0]
        request_id = request_id_of(request.headers.get(REQUEST_ID))
        status, rows, answer = 200, None, Response(status_code=400)
        try:
            answer, rows = await self._answer(request, name, held)
        except ClientDisconnect:
            status, message = 499, "the client left mid-body"  # nobody to answer
        except Exception as exc:
            status, message = failure(exc)
            if status == 500:  # a bug: logged with its traceback, answered without it
                log.exception("infer %s failed (request id %s)", name[:80], request_id)
        finally:
            self.inflight.give(held[0])
        if status != 200:
            log_error(name, status, message, request_id)
            if status != 499:
                answer = _error(message, status)
        self.server.observe_request(name, str(status), started, rows)
        answer.headers[REQUEST_ID] = request_id
        return answer

    async def _answer(self, request, name: str, held: list[int]):
        from starlette.responses import Response

        endpoint = self._endpoint(request)
        body = await _read_body(request, self.server.config.max_body_mb, self.inflight, held)
        self.server.metrics.observe("aeserve_request_bytes", len(body), model=name)
        wanted, _ = decode_request(body, request.headers.get(HEADER_LENGTH), endpoint)
        del body  # binary inputs may still view it; nothing else needs it
        outputs = await self.server.infer(endpoint, wanted)
        head, raw = encode_response(wanted, outputs, endpoint.name)
        rows = len(next(iter(outputs.values())))
        if raw:
            return Response(head + raw, media_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(head))}), rows
        return Response(head, media_type="application/json"), rows

    async def metrics(self, request):
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.server.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request):
        from starlette.responses import JSONResponse

        from aeserve.serve.openapi import openapi_document

        return JSONResponse(openapi_document(sorted(self.server.endpoints), aeserve.__version__))

    async def repository_index(self, request):
        from starlette.responses import JSONResponse

        body = await request.body()
        try:
            options = fastjson.loads(body) if body.strip() else {}
        except ValueError:
            raise RequestError("the index request must be a JSON object such as {\"ready\": true}") from None
        ready_only = isinstance(options, dict) and options.get("ready") is True
        return JSONResponse(self.server.repository.index(ready_only))

    def _known(self, request) -> str:
        name, entries = request.path_params["name"], self.server.repository.entries
        if name not in entries:
            raise RequestError(f"no bundle {name[:80]!r} in the repository; it holds {', '.join(sorted(entries))}", 404)
        return name

    async def repository_load(self, request):
        from starlette.responses import JSONResponse

        name = self._known(request)
        try:
            await self.server.repository.load(name)
        except aeserve.AeserveError as exc:
            raise RequestError(f"{name}: {exc}") from None
        return JSONResponse({})

    async def repository_unload(self, request):
        from starlette.responses import JSONResponse

        self.server.repository.unload(self._known(request))
        return JSONResponse({})

    def table(self) -> list:
        """Every route: (path, handler, methods)."""
        get, post = ["GET"], ["POST"]
        return [("/v2/health/live", self.live, get), ("/v2/health/ready", self.ready, get),
                ("/v2", self.server_metadata, get),
                *[(f"/v2/models/{{name}}{version}{tail}", handler, methods)
                  for version in ("", "/versions/{version}")
                  for tail, handler, methods in (("", self.model_metadata, get), ("/ready", self.model_ready, get),
                                                 ("/infer", self.infer, post))],
                ("/v2/repository/index", self.repository_index, post),
                ("/v2/repository/models/{name}/load", self.repository_load, post),
                ("/v2/repository/models/{name}/unload", self.repository_unload, post),
                ("/metrics", self.metrics, get), ("/openapi.json", self.openapi, get)]


async def _http_error(request, exc):
    reason = {404: "no such route; see /openapi.json", 405: "method not allowed on this route"}
    return _error(reason.get(exc.status_code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))


async def _request_error(request, exc: RequestError):
    return _error(str(exc), exc.status)


async def _server_error(request, exc: Exception):
    log.error("%s %s failed", request.method, request.url.path[:80], exc_info=exc)
    return _error("internal error; the server log has the details", 500)


def create_app(models: dict, config: ServerConfig | None = None, *, paths: dict[str, Path] | None = None,
               loader: Callable[[Path], object] | None = None, poll_s: float | None = None,
               grpc: GrpcSettings | None = None):
    """A Starlette app serving ``models`` (bundle name -> runtime Model); with ``grpc``, the
    gRPC transport starts and stops with it, over the same ``ModelServer``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    config = config or ServerConfig()
    server = ModelServer(models, config, paths=paths, loader=loader)

    @asynccontextmanager
    async def lifespan(app):
        await server.startup()
        grpc_server = watcher = None
        if grpc is not None:
            from aeserve.serve.grpc_server import start_grpc

            grpc_server = await start_grpc(server, grpc)
        if poll_s:
            watcher = asyncio.get_running_loop().create_task(server.repository.watch(poll_s))
        yield
        if watcher is not None:
            watcher.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace=10)
        await server.shutdown()

    routes = [Route(path, handler, methods=methods) for path, handler, methods in _Routes(server).table()]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        HTTPException: _http_error, RequestError: _request_error, Exception: _server_error})
    app.state.server, app.state.metrics, app.state.repository = server, server.metrics, server.repository
    return BearerAuth(app, server) if config.token is not None else app


class BearerAuth:
    """ASGI middleware: every HTTP route but ``OPEN_PATHS`` needs ``Authorization: Bearer TOKEN``
    (``ModelServer.authorised``); a miss is 401 ``{"error"}`` before the body is read."""

    def __init__(self, app, server: ModelServer):
        self.app, self.server = app, server
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if not self.server.authorised(dict(scope["headers"]).get(b"authorization", b"")):
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
    if declared is not None and is_digits(declared):
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
