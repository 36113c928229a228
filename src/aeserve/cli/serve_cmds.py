"""``aeserve serve``: bundles over HTTP with the KServe v2 / Open Inference Protocol."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from aeserve.cli import app, err, user_errors
from aeserve.cli.options import BACKEND_OPT, DEVICE_OPT, Backend, Device, open_model

__all__ = ["serve"]


@app.command()
@user_errors
def serve(
    bundles: list[Path] = typer.Argument(..., help="One or more bundle directories; each is served under its directory name.",
                                         show_default=False),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000, help="TCP port."),
    backend: Backend = BACKEND_OPT,
    device: Device = DEVICE_OPT,
    max_batch: int = typer.Option(1024, help="Dynamic batching: most rows per backend call (1 disables it)."),
    max_delay_ms: float = typer.Option(2.0, help="Dynamic batching: longest wait for more requests."),
    max_queue_rows: int = typer.Option(65536, help="Rows that may wait; more get 503 instead of piling up."),
    max_body_mb: float = typer.Option(64.0, help="Larger request bodies get 413."),
    workers: int = typer.Option(1, help="Threads running backend calls."),
) -> None:
    """Serve bundles over HTTP with the KServe v2 / Open Inference Protocol (JSON and binary
    tensors; works with tritonclient.http). Each bundle NAME is served as models NAME (score),
    NAME-encode, NAME-decode and NAME-sample; /metrics gives Prometheus metrics.

    Example: `aeserve serve models/cancer-vae --port 8000 --max-batch 2048`
    """
    try:
        import uvicorn

        from aeserve.serve.http import ServerConfig, create_app
    except ImportError as exc:
        from aeserve.errors import BackendUnavailable

        raise BackendUnavailable(f"serving needs {exc.name}: pip install 'aeserve[serve]'") from None
    models = {}
    for path in bundles:
        name = path.resolve().name
        if name in models:
            raise typer.BadParameter(f"two bundles are named {name!r}", param_hint="BUNDLES")
        models[name] = open_model(path, backend, device=device)
    config = ServerConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue_rows=max_queue_rows,
                          max_body_mb=max_body_mb, workers=workers)
    err.print(f"serving {', '.join(models)} on http://{host}:{port}/v2 "
              f"(backend {escape(next(iter(models.values())).backend.describe())}; "
              f"batching up to {max_batch} rows / {max_delay_ms:g} ms); Ctrl-C stops after in-flight requests")
    uvicorn.run(create_app(models, config), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=30)
