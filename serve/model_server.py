"""The model server both transports call: endpoints, batchers, executor, hot reload, metrics,
the bearer token and the failure table, with no transport of its own.

``ModelServer`` holds the served endpoints (``protocol.endpoints_for`` of each bundle), starts a
dynamic batcher per batched endpoint on the server's event loop, runs requests (``infer``),
and installs or retires a bundle's endpoints when the repository loads, reloads or unloads
it: replaced batchers finish what they hold before they stop. HTTP (``serve/http.py``) and
gRPC (``serve/grpc_server.py``) only move bytes to and from ``protocol.InferRequest``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import aeserve
from aeserve.errors import InputError
from aeserve.serve.batching import Batcher
from aeserve.serve.metrics import Metrics
from aeserve.serve.protocol import Endpoint, InferRequest, RequestError, endpoint_names, endpoints_for
from aeserve.serve.sequences import Sequences

__all__ = ["ServerConfig", "ModelServer"]


@dataclass(frozen=True)
class ServerConfig:
    """Batching, limits and the bearer token: what every transport and engine shares."""

    max_batch: int = 1024          # rows per backend call; 0 or 1 disables coalescing
    max_delay_ms: float = 2.0      # how long a request may wait for company
    max_queue_rows: int = 65536    # rows that may wait before 503
    max_body_mb: float = 64.0      # larger request bodies get 413
    workers: int = 1               # threads running backend calls
    max_inflight_mb: float = 256.0  # request bytes being read or decoded at once; more get 503
    token: str | None = field(default=None, repr=False)  # bearer token every route but the probes needs
    max_sequences: int = 10000     # series bundles: sequences open at once (one more closes the least recent)
    sequence_idle_s: float = 600.0  # series bundles: a sequence idle this long is closed

    def __post_init__(self) -> None:
        """Refuse limits out of range (NaN included) before a server starts."""
        checks = [("max_batch", self.max_batch >= 0, ">= 0"), ("max_delay_ms", self.max_delay_ms >= 0, ">= 0"),
                  ("max_queue_rows", self.max_queue_rows >= 1, ">= 1"), ("max_body_mb", self.max_body_mb > 0, "> 0"),
                  ("workers", self.workers >= 1, ">= 1"), ("max_sequences", self.max_sequences >= 1, ">= 1"),
                  ("sequence_idle_s", self.sequence_idle_s > 0, "> 0"),
                  ("max_inflight_mb", self.max_inflight_mb >= self.max_body_mb, f">= max_body_mb ({self.max_body_mb:g})")]
        for name, ok, need in checks:
            if not ok:
                raise InputError(f"{name} must be {need}, got {getattr(self, name)}")
        if self.token is not None and not self.token:
            raise InputError("the bearer token is empty")


class ModelServer:
    """Served endpoints by name and everything that runs them; one per process."""

    def __init__(self, models: dict, config: ServerConfig = ServerConfig(), *,
                 paths: dict[str, Path] | None = None, loader: Callable[[Path], object] | None = None):
        from aeserve.serve.repository import Repository

        self.config = config
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="aeserve-infer")
        self.endpoints: dict[str, Endpoint] = {}  # the repository swaps entries; readers see old or new
        self.sequences: dict[str, Sequences] = {}  # a series bundle's open sequences, by bundle name
        self.ready = False
        self._started = False
        self._retiring: set[asyncio.Task] = set()
        self._token = config.token.encode() if config.token else None
        self.repository = Repository(paths or {name: model.bundle.path for name, model in models.items()},
                                     loader or aeserve.load, self.install, self.remove)
        for name, model in models.items():
            self.repository.adopt(name, model)

    # -- endpoints -------------------------------------------------------------------------
    def install(self, name: str, model) -> None:
        """Serve ``model`` as bundle ``name`` (its four endpoints), replacing what served it before.
        A series bundle keeps the sequences it had open when its new version cuts the same
        windows (size, channels, time, groups, gaps); else they are closed."""
        sequences = None
        if model.window is not None:
            sequences = self.sequences.get(name)
            if sequences is None or not model.window.same_windows(sequences.window):
                sequences = Sequences(model.window, self.config.max_sequences, self.config.sequence_idle_s)
            self.sequences[name] = sequences
        else:
            self.sequences.pop(name, None)
        new = endpoints_for(name, model, max_sample_rows=self.config.max_queue_rows, sequences=sequences)
        if self._started:  # else startup starts them, on the server's loop
            for endpoint in new:
                self._start_batcher(endpoint)
        old = [self.endpoints[e.name] for e in new if e.name in self.endpoints]
        self.endpoints.update({e.name: e for e in new})  # one update: a request sees old or new, never neither
        self._retire(old)

    def remove(self, name: str) -> None:
        """Stop serving bundle ``name``; its batchers finish what they hold."""
        self._retire([self.endpoints.pop(n) for n in endpoint_names(name) if n in self.endpoints])
        self.sequences.pop(name, None)

    def endpoint(self, name: str, version: str | None = None) -> Endpoint:
        """The endpoint ``name`` (version empty or 1), else RequestError 404 naming those served."""
        if name not in self.endpoints or version not in (None, "", "1"):
            raise RequestError(f"unknown model {name[:80]!r}" + (f" version {version[:20]!r}" if version else "")
                               + f"; served: {', '.join(sorted(self.endpoints))}", 404)
        return self.endpoints[name]

    def label(self, name: str) -> str:
        """The model label metrics use: the name when it is served, else '(unknown)'."""
        return name if name in self.endpoints else "(unknown)"

    def _start_batcher(self, endpoint: Endpoint) -> None:
        if endpoint.batched and self.config.max_batch > 1:
            endpoint.batcher = Batcher(
                endpoint.run_rows or (lambda rows, e=endpoint: e.run({e.inputs[0].name: rows})), self.executor,
                max_batch=self.config.max_batch, max_delay=self.config.max_delay_ms / 1000.0,
                max_queue_rows=self.config.max_queue_rows,
                on_batch=lambda n, waited, seconds, e=endpoint: self._observe_batch(e.name, n, waited, seconds))
            endpoint.batcher.start()

    def _observe_batch(self, name: str, rows: int, waited: list[float], seconds: float) -> None:
        self.metrics.observe("aeserve_batch_rows", rows, model=name)
        self.metrics.observe("aeserve_compute_seconds", seconds, model=name)
        for wait in waited:
            self.metrics.observe("aeserve_queue_seconds", wait, model=name)

    def _retire(self, old: list[Endpoint]) -> None:
        """Let the replaced endpoints' batchers finish what they hold, then stop them."""
        for endpoint in old:
            if endpoint.batcher is not None:
                task = asyncio.get_running_loop().create_task(endpoint.batcher.stop())
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    # -- life ------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Start every batcher on the running loop; the server is ready."""
        for endpoint in self.endpoints.values():
            self._start_batcher(endpoint)
        self._started = self.ready = True

    async def shutdown(self) -> None:
        """Not ready; let every batcher finish what it holds; stop the executor."""
        self.ready = False
        for endpoint in list(self.endpoints.values()):
            if endpoint.batcher:
                await endpoint.batcher.stop()
        for task in list(self._retiring):
            await task
        self.executor.shutdown(wait=True)

    # -- requests --------------------------------------------------------------------------
    def authorised(self, credentials: bytes | str | None) -> bool:
        """Whether ``credentials`` (an Authorization value, 'Bearer TOKEN') carry the token; always
        when the server has none. Compared in constant time."""
        if self._token is None:
            return True
        given = credentials.encode() if isinstance(credentials, str) else credentials or b""
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)

    async def infer(self, endpoint: Endpoint, request: InferRequest) -> dict[str, np.ndarray]:
        """Outputs of one checked request: optional outputs alone, else through the endpoint's
        batcher (or straight to the executor when batching is off)."""
        loop = asyncio.get_running_loop()
        if request.sequence is not None:  # one sequence's rows: in order, not joined with other requests
            variant = endpoint.variant(request.sequence)
            return await loop.run_in_executor(self.executor, variant.run_sequence, request.sequence, request.inputs)
        if endpoint.wants_optional(request):
            return await loop.run_in_executor(self.executor, endpoint.run_optional, request.inputs)
        if endpoint.batcher is not None:
            rows = endpoint.batch_rows(request.inputs) if endpoint.batch_rows else next(iter(request.inputs.values()))
            return await endpoint.batcher.submit(rows)
        started = time.perf_counter()
        outputs = await loop.run_in_executor(self.executor, endpoint.run, request.inputs)
        self._observe_batch(endpoint.name, len(next(iter(outputs.values()))), [0.0], time.perf_counter() - started)
        return outputs

    def observe_request(self, name: str, status: str, started: float, rows: int | None = None) -> None:
        """Count one answered request (its status, latency, and rows when it succeeded)."""
        label = self.label(name)
        if rows is not None:
            self.metrics.inc("aeserve_rows_total", rows, model=name)
        self.metrics.inc("aeserve_requests_total", model=label, status=status)
        self.metrics.observe("aeserve_request_latency_seconds", time.perf_counter() - started, model=label)
