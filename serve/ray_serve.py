"""Scale-out on Ray Serve: ``aeserve serve DIR... --engine ray [--address ADDR] --replicas N``.

Each replica opens the bundles itself (verified, every graph loaded) and runs the same
KServe v2 application as ``aeserve serve`` (``serve/http.py:create_app``: routes, dynamic
batcher, limits, metrics), built on the replica by Ray Serve's ``__serve_build_asgi_app__``;
Ray Serve's proxy spreads requests over the replicas, and ``--min-replicas``/``--max-replicas``
let Ray Serve's autoscaler add and remove them with load. Every answer carries
``x-aeserve-replica``, the replica that computed it. What goes to the replicas is paths and
settings; each replica reads the bundle from a file system it can see (shared storage on a
cluster).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

__all__ = ["build_application", "run", "REPLICA_HEADER"]

REPLICA_HEADER = "x-aeserve-replica"


def _with_replica_header(app, replica: str):
    """ASGI middleware adding ``x-aeserve-replica`` to every HTTP answer."""
    value = replica.encode()

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(), value)]}
            await send(message)

        return await app(scope, receive, tagged)

    return wrapped


def build_application(paths: dict[str, str], config: dict, backend: str = "auto", device: str = "auto",
                      replicas: int = 1, min_replicas: int | None = None, max_replicas: int | None = None):
    """A Ray Serve application serving ``paths`` (name -> bundle directory) on every replica."""
    from ray import serve

    options: dict = {"name": "aeserve"}
    if min_replicas is not None or max_replicas is not None:
        options["autoscaling_config"] = {"min_replicas": min_replicas or 1,
                                         "max_replicas": max(max_replicas or 1, min_replicas or 1),
                                         "target_ongoing_requests": 32}
    else:
        options["num_replicas"] = replicas
    options["max_ongoing_requests"] = 1024  # the replica's own batcher coalesces them

    @serve.deployment(**options)
    @serve.ingress()
    class AeserveReplica:
        def __init__(self, paths: dict[str, str], config: dict, backend: str, device: str):
            self.paths, self.config, self.backend, self.device = paths, config, backend, device

        def __serve_build_asgi_app__(self):
            import aeserve
            from aeserve.serve.http import ServerConfig, create_app

            def loader(path):
                options = {"hint": "latency"} if self.device == "auto" else {"device": self.device, "hint": "latency"}
                return aeserve.load(path, backend=self.backend, **options).preload()

            models = {name: loader(path) for name, path in self.paths.items()}
            app = create_app(models, ServerConfig(**self.config),
                             paths={name: Path(path) for name, path in self.paths.items()}, loader=loader)
            replica = serve.get_replica_context().replica_id.unique_id
            return _with_replica_header(app, replica)

    return AeserveReplica.bind(paths, config, backend, device)


def run(paths: dict[str, Path], config, *, host: str, port: int, address: str | None, backend: str = "auto",
        device: str = "auto", replicas: int = 1, min_replicas: int | None = None,
        max_replicas: int | None = None, blocking: bool = True) -> None:
    """Start (or join, with ``address``) Ray, start Ray Serve's proxy on host:port, deploy the
    bundles; with ``blocking``, serve until interrupted."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    settings = asdict(config)
    application = build_application({name: str(Path(p).resolve()) for name, p in paths.items()}, settings,
                                    backend, device, replicas, min_replicas, max_replicas)
    serve.run(application, name="aeserve", route_prefix="/", blocking=blocking)
