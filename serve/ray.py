"""Ray Serve: the app of ``onnxformer serve`` as a Ray Serve ingress deployment, one copy per replica.

Each replica loads (and sha256-verifies) its artifacts, builds the same FastAPI app as ``onnxformer serve`` (the
OpenAI, rerank and KServe v2 routes, streaming included) with its own batching lanes, and is ready once every model
is loaded and warm. Ray's proxy routes HTTP to the replicas; Ray places, scales and replaces them.

    serve run onnxformer.serve.ray:app artifacts=/shared/minilm num_replicas=2
    onnxformer ray-config /shared/minilm --out serve.yaml --min-replicas 1 --max-replicas 4 && serve deploy serve.yaml

Artifact paths are read on the node each replica runs on: a shared filesystem mounted at the same path on every
node, or a folder synced there first (from object storage) — the sha256 check refuses a partial copy.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import typing
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from onnxformer.serve.config import ServeConfig
from onnxformer.serve.statuses import ServingError

DEPLOYMENT = "onnxformer"
# what `args` may carry besides ServeConfig's fields (host, port and grpc_port are Ray's proxy's, not ours)
RAY_ARGS = ("artifacts", "variant", "threads", "num_replicas", "autoscaling_config", "num_cpus", "max_ongoing_requests")
PROXY_FIELDS = ("host", "port", "grpc_port")


def build_asgi_app(artifacts: list[str], config: ServeConfig, variant: str | None, threads: int | None) -> Any:
    """One replica's app: the models loaded and verified here; ready (for Ray) once they are warm."""
    from onnxformer.serve.app import create_app
    from onnxformer.serve.server import load_model, served_names

    names = served_names(config, len(artifacts))
    models = [(name, load_model(d, config, variant, threads)) for name, d in zip(names, artifacts)]
    app = create_app(lambda: models, config)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def ready_first(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as value:  # Ray sends traffic once this startup returns: after the warm-up
            state = a.state.serving
            while not state.services and state.load_error is None:
                await asyncio.sleep(0.01)
            if state.load_error is not None:
                raise ServingError(f"the model failed to load on this replica: {state.load_error}")
            yield value

    app.router.lifespan_context = ready_first
    return app


def deployment(artifacts: list[str | Path], config: ServeConfig | None = None, variant: str | None = None,
               threads: int | None = None, **options: Any) -> Any:
    """The Ray Serve deployment (``options``: ``num_replicas``, ``autoscaling_config``, ``ray_actor_options``,
    ``max_ongoing_requests``, ... as ``serve.deployment`` takes them)."""
    from ray import serve

    paths = [str(Path(a).expanduser().absolute()) for a in artifacts]
    if not paths:
        raise ServingError("give at least one artifact directory (artifacts=DIR[,DIR...])")
    config = (config or ServeConfig()).check()

    def build() -> Any:  # runs in each replica, on its node
        return build_asgi_app(paths, config, variant, threads)

    return serve.deployment(serve.ingress(build)(), name=DEPLOYMENT, **options)


def app(args: dict[str, Any]) -> Any:
    """``serve run onnxformer.serve.ray:app artifacts=DIR[,DIR] [num_replicas=N] [max_batch_size=32] ...`` and a
    config file's ``import_path``/``args``: an application builder. Values may be strings (the CLI) or typed (YAML)."""
    args = dict(args)
    check_args(args)
    artifacts = args.pop("artifacts", None)
    if isinstance(artifacts, str):
        artifacts = [a for a in artifacts.split(",") if a]
    options: dict[str, Any] = {}
    if "num_replicas" in args:
        n = args.pop("num_replicas")
        options["num_replicas"] = n if n == "auto" else int(n)
    if "autoscaling_config" in args:
        auto = args.pop("autoscaling_config")
        options["autoscaling_config"] = json.loads(auto) if isinstance(auto, str) else auto
    if "max_ongoing_requests" in args:
        options["max_ongoing_requests"] = int(args.pop("max_ongoing_requests"))
    if "num_cpus" in args:
        options["ray_actor_options"] = {"num_cpus": float(args.pop("num_cpus"))}
    variant = args.pop("variant", None)
    threads = int(args.pop("threads")) if args.get("threads") is not None else None
    config = ServeConfig(**{k: _typed(k, v) for k, v in args.items()})
    return deployment(artifacts or [], config, variant, threads, **options).bind()


def check_args(args: dict[str, Any]) -> None:
    fields = {f.name for f in dataclasses.fields(ServeConfig)} - set(PROXY_FIELDS)
    bad = sorted(set(args) - set(RAY_ARGS) - fields)
    if bad:
        raise ServingError(f"unknown argument(s) {bad}: host and port are Ray's proxy's (http_options); the app takes "
                           f"{', '.join(RAY_ARGS)} and the `onnxformer serve` options by field name")


def _typed(name: str, value: Any) -> Any:
    """A ServeConfig field from a string (``serve run`` passes key=value as text)."""
    if not isinstance(value, str):
        return value
    hint = typing.get_type_hints(ServeConfig)[name]
    kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if kind is bool:
        return value.lower() in ("1", "true", "yes", "on")
    return kind(value)


# --- `onnxformer ray-config`: a config file for `serve deploy` ------------------------------------------------
def serve_config(artifacts: list[str | Path], *, replicas: int | None = 1, min_replicas: int | None = None,
                 max_replicas: int | None = None, target_ongoing: float = 8, num_cpus: float = 1.0,
                 port: int = 8000, host: str = "0.0.0.0", args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Ray Serve config (the schema ``serve deploy`` reads), checked with Ray's own ``ServeDeploySchema``."""
    deploy: dict[str, Any] = {"name": DEPLOYMENT, "ray_actor_options": {"num_cpus": num_cpus}}
    if max_replicas is not None:
        deploy["autoscaling_config"] = {"min_replicas": min_replicas or 1, "max_replicas": max_replicas,
                                        "target_ongoing_requests": target_ongoing}
    else:
        deploy["num_replicas"] = replicas
    paths = [str(Path(a).expanduser().absolute()) for a in artifacts]
    doc = {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port},
           "applications": [{"name": DEPLOYMENT, "route_prefix": "/", "import_path": "onnxformer.serve.ray:app",
                             "args": {"artifacts": paths, **(args or {})}, "deployments": [deploy]}]}
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(doc)  # Ray's own schema (pydantic 2) for `serve deploy`
    return doc


def add_ray_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ray-config", help="write a Ray Serve config file (`serve deploy FILE`) that serves artifacts")
    p.add_argument("directory", nargs="+", help="artifact directories, at the same path on every node")
    p.add_argument("--out", required=True, help="the YAML file to write")
    p.add_argument("--replicas", type=int, default=1, help="fixed number of replicas (default 1)")
    p.add_argument("--min-replicas", type=int, help="autoscaling: the fewest replicas")
    p.add_argument("--max-replicas", type=int, help="autoscaling: the most replicas (turns autoscaling on)")
    p.add_argument("--target-ongoing", type=float, default=8, help="autoscaling: requests in flight per replica")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    p.add_argument("--port", type=int, default=8000, help="Ray's HTTP proxy port")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an `onnxformer serve` option by field name (max_batch_size=16, variant=int8, ...)")
    p.set_defaults(func=run_ray_config)


def run_ray_config(args: argparse.Namespace) -> int:
    import yaml

    from onnxformer.artifact.files import atomic_write_bytes
    from onnxformer.progress import console

    extra = dict(kv.split("=", 1) for kv in args.arg if "=" in kv)
    if len(extra) != len(args.arg):
        raise ServingError("--arg takes KEY=VALUE")
    if args.max_replicas is not None and args.max_replicas < (args.min_replicas or 1):
        raise ServingError("--max-replicas must be >= --min-replicas")
    for d in args.directory:
        if not (Path(d) / "manifest.json").is_file():
            raise ServingError(f"{d} is not an artifact directory (no manifest.json)")
    check_args(extra)
    doc = serve_config(args.directory, replicas=args.replicas, min_replicas=args.min_replicas,
                       max_replicas=args.max_replicas, target_ongoing=args.target_ongoing, num_cpus=args.num_cpus,
                       port=args.port, args=extra)
    atomic_write_bytes(Path(args.out), yaml.safe_dump(doc, sort_keys=False).encode())
    console.print(f"wrote {args.out}: `serve deploy {args.out}` on the cluster "
                  "(artifacts at the same path on every node)")
    return 0
