"""``aeserve serve``: bundles over HTTP with the KServe v2 / Open Inference Protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from aeserve.cli import app, err, user_errors
from aeserve.cli.options import BACKEND_OPT, DEVICE_OPT, Backend, Device, Engine, open_model
from aeserve.errors import InputError

__all__ = ["serve"]


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
@user_errors
def serve(
    bundles: list[Path] = typer.Argument(..., help="One or more bundle directories; each is served under its directory name.",
                                         show_default=False),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network "
                             "(use --token-file, and TLS, there)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    grpc_port: Optional[int] = typer.Option(None, "--grpc-port", min=0, max=65535,
                                            help="Also serve KServe v2 over gRPC on this port (same host, models, "
                                                 "batching, token and TLS; works with tritonclient.grpc)."),
    backend: Backend = BACKEND_OPT,
    device: Device = DEVICE_OPT,
    max_batch: int = typer.Option(1024, min=0, help="Dynamic batching: most rows per backend call (1 disables it)."),
    max_delay_ms: float = typer.Option(2.0, help="Dynamic batching: longest wait for more requests."),
    max_queue_rows: int = typer.Option(65536, min=1, help="Rows that may wait; more get 503 instead of piling up."),
    max_body_mb: float = typer.Option(64.0, help="Larger request bodies get 413 (refused before they are read)."),
    max_inflight_mb: float = typer.Option(256.0, help="Request bytes being read or decoded at once; more get 503, "
                                          "so memory stays bounded however many clients send."),
    max_connections: int = typer.Option(1000, min=1, help="Open connections and requests at once; more get 503."),
    keep_alive_s: float = typer.Option(5.0, help="Close an idle keep-alive connection after this many seconds."),
    workers: int = typer.Option(1, min=1, help="Threads running backend calls."),
    max_sequences: int = typer.Option(10000, "--max-sequences", min=1, help=(
        "Series bundles: sequences (sequence_id) open at once; opening one more closes the least recently used.")),
    sequence_idle_s: float = typer.Option(600.0, "--sequence-idle-timeout", help=(
        "Series bundles: close a sequence after this many seconds without a request. A request for a closed "
        "sequence gets 400 (start it again with sequence_start), never a score from a wrong window.")),
    poll: Optional[float] = typer.Option(None, "--poll", help="Every SECONDS, reload a bundle whose manifest.json "
                                         "changed (retrained or re-exported in place): verified beside the old one, "
                                         "then swapped in; a bundle that fails verification is not. POST "
                                         "/v2/repository/models/NAME/load reloads one now."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding a bearer token: every route "
                                              "but /v2/health/* then needs `Authorization: Bearer TOKEN` (else 401)."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="TLS certificate (PEM): serve HTTPS."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM) of --ssl-certfile."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local: this process; ray: replicas on Ray Serve, "
                                  "each holding the bundles with its own batcher, behind Ray Serve's HTTP proxy."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (default: a local Ray)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="ray: replicas to run."),
    min_replicas: Optional[int] = typer.Option(None, "--min-replicas", min=0,
                                               help="ray: autoscale between --min-replicas and --max-replicas."),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", min=1, help="ray: see --min-replicas."),
) -> None:
    """Serve bundles over HTTP with the KServe v2 / Open Inference Protocol (JSON and binary
    tensors; works with tritonclient.http), and over gRPC with --grpc-port (tritonclient.grpc). Each bundle NAME is served as models NAME (score),
    NAME-encode, NAME-decode and NAME-sample; /metrics gives Prometheus metrics and
    /openapi.json describes the routes.

    A series bundle (trained with --window) takes windows y [batch, W, C]; or, with Triton's
    sequence_id (sequence_start, sequence_end) request parameters, rows y [n, C] of a sequence,
    each scored by the window that ends at it (the server keeps each sequence's last W-1 rows).

    \b
    Example:
      aeserve serve models/cancer-vae --port 8000 --max-batch 2048
    """
    try:
        import uvicorn

        from aeserve.serve.http import GrpcSettings, ServerConfig, create_app
    except ImportError as exc:
        from aeserve.errors import BackendUnavailable

        raise BackendUnavailable(f"serving needs {exc.name}: pip install 'aeserve[serve]'") from None
    token = _read_token(token_file) if token_file else None
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("TLS needs both --ssl-certfile and --ssl-keyfile", param_hint="--ssl-certfile")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    if poll is not None and not poll > 0:
        raise typer.BadParameter(f"must be > 0 seconds, got {poll}", param_hint="--poll")
    if not keep_alive_s > 0:
        raise typer.BadParameter(f"must be > 0, got {keep_alive_s}", param_hint="--keep-alive-s")
    if grpc_port is not None:
        try:
            import grpc  # noqa: F401
        except ImportError:
            from aeserve.errors import BackendUnavailable

            raise BackendUnavailable("--grpc-port needs grpcio: pip install 'aeserve[grpc]'") from None
        if grpc_port == port:
            raise typer.BadParameter(f"the HTTP server uses port {port}", param_hint="--grpc-port")
    tls = (ssl_certfile.read_bytes(), ssl_keyfile.read_bytes()) if ssl_certfile and ssl_keyfile else None
    config = ServerConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue_rows=max_queue_rows,
                          max_body_mb=max_body_mb, workers=workers, max_inflight_mb=max_inflight_mb, token=token,
                          max_sequences=max_sequences, sequence_idle_s=sequence_idle_s)
    grpc_settings = GrpcSettings(grpc_port, host, tls) if grpc_port is not None else None
    if engine == Engine.ray:
        _serve_on_ray(bundles, config, host=host, port=port, address=address, backend=backend, device=device,
                      replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                      unsupported={"--grpc-port": grpc_port, "--poll": poll, "--token-file": token_file,
                                   "--ssl-certfile": ssl_certfile})
        return
    models, paths = {}, {}
    for path in bundles:
        name = path.resolve().name
        if name in models:
            raise typer.BadParameter(f"two bundles are named {name!r}", param_hint="BUNDLES")
        models[name], paths[name] = open_model(path, backend, device=device, hint="latency").preload(), path

    def loader(path: Path):
        return open_model(path, backend, device=device, hint="latency").preload()
    if host not in _LOOPBACK and token is None:
        err.print(f"[yellow]warning[/]: serving on {escape(host)} without authentication: anyone who can reach "
                  "the port can use the models; pass --token-file (and TLS with --ssl-certfile/--ssl-keyfile)")
    _log_to_stderr()
    scheme = "https" if ssl_certfile else "http"
    err.print(f"serving {', '.join(models)} on {scheme}://{host}:{port}/v2 "
              f"(backend {escape(next(iter(models.values())).backend.describe())}; "
              f"batching up to {max_batch} rows / {max_delay_ms:g} ms"
              f"{'; bearer token required' if token else ''})"
              + (f"; gRPC on {host}:{grpc_port}" if grpc_port is not None else "")
              + (f"; reloading changed bundles every {poll:g} s" if poll else "")
              + "; Ctrl-C stops after in-flight requests")
    # h11 and asyncio whatever else is installed (ray[serve] brings httptools and uvloop): the
    # limits and malformed-request answers are tested with these
    uvicorn.run(create_app(models, config, paths=paths, loader=loader, poll_s=poll, grpc=grpc_settings),
                host=host, port=port,
                log_level="warning", http="h11", loop="asyncio",
                timeout_graceful_shutdown=30, limit_concurrency=max_connections, timeout_keep_alive=keep_alive_s,
                ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None)


def _serve_on_ray(bundles: list[Path], config, *, host, port, address, backend, device, replicas, min_replicas,
                  max_replicas, unsupported: dict) -> None:
    """``--engine ray``: the bundles on Ray Serve replicas, until Ctrl-C."""
    given = [flag for flag, value in unsupported.items() if value]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} run with --engine local only (Ray Serve has its own proxy)",
                                 param_hint="--engine")
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        from aeserve.errors import BackendUnavailable

        raise BackendUnavailable("--engine ray needs Ray Serve: pip install 'aeserve[ray-serve]'") from None
    from aeserve.bundle import Bundle
    from aeserve.serve.ray_serve import run

    paths = {}
    for path in bundles:
        Bundle.open(path)  # a clear error here, not on every replica
        paths[path.resolve().name] = path
    err.print(f"serving {', '.join(paths)} on Ray Serve at http://{host}:{port}/v2 "
              + (f"({min_replicas}..{max_replicas} replicas, autoscaled)" if min_replicas is not None
                 or max_replicas is not None else f"({replicas} replicas)") + "; Ctrl-C stops")
    try:
        run(paths, config, host=host, port=port, address=address, backend=getattr(backend, "value", backend),
            device=device.value, replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas)
    except KeyboardInterrupt:
        pass


def _log_to_stderr() -> None:
    """The server's own log (reloads, failed requests as JSON lines) on stderr, with times."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("aeserve.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped)."""
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the token file ({exc.__class__.__name__})") from None
    if not token or any(ch.isspace() for ch in token) or not token.isprintable():
        raise InputError(f"{path}: the token file must hold one token: printable, no spaces")
    return token
