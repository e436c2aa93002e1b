"""Sub-commands `onnxformer serve` and `onnxformer triton` (registered by onnxformer/cli.py)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from typing import Any


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an artifact over HTTP (KServe v2, OpenAI embeddings and completions, task endpoints)")
    p.add_argument("directory", nargs="+", help="artifact directory (from `onnxformer export` or `build`); several "
                                                "serve side by side, each under its own name")
    p.add_argument("--variant", help="variant to load (default: the runtime's choice)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: physical cores)")
    add_config_flags(p)
    p.set_defaults(func=run_serve)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ServeConfig field: its flag name, default and help come from the field."""
    from onnxformer.serve.config import ServeConfig  # dataclasses only: cheap to import

    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        flag, meta, kind = ServeConfig.flag(f.name), f.metadata, _scalar(hints[f.name])
        if kind is bool:  # a switch that flips the default
            p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true", help=meta["help"])
            continue
        default = os.environ.get(meta["env"], f.default) if meta["env"] else f.default
        p.add_argument(flag, dest=f.name, type=kind, default=default, help=meta["help"],
                       metavar=flag.removeprefix("--").replace("-", "_").upper())


def _scalar(hint: Any) -> Any:
    """``int | None`` → int."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from onnxformer.serve.config import ServeConfig
    from onnxformer.serve.server import serve

    ours = logging.getLogger("onnxformer")
    if ours.getEffectiveLevel() > logging.WARNING:  # a server's warnings (a variant passed over, ...) are shown
        ours.setLevel(logging.WARNING)

    config = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    serve(args.directory, config, variant=args.variant, threads=args.threads)
    return 0


def add_triton(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository entry for an artifact")
    p.add_argument("directory", help="artifact directory")
    p.add_argument("--repo", required=True, help="model repository to write into (OUT/<name>/...)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "python"],
                   help="onnxruntime (CPU instances, raw tensors), tensorrt (GPU instances, TensorRT accelerator) "
                        "or python (our runtime in Triton's Python backend: text in, embeddings/labels/scores out)")
    p.add_argument("--variant", default="fp32", help="variant to ship (default fp32)")
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument("--max-batch-size", type=int, default=32, help="largest batch Triton's dynamic batcher forms")
    p.add_argument("--max-delay-us", type=int, default=2000, help="dynamic batching queue delay")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="TensorRT precision (default: variant's)")
    p.add_argument("--engine-cache", help="TensorRT engine cache directory inside the Triton container")
    p.add_argument("--name", help="model name in the repository (default: the manifest's)")
    p.add_argument("--pooled", action="store_true", help="onnxruntime/tensorrt, embedding models: pooling and "
                   "normalisation inside the graph, so Triton answers `embedding` vectors instead of token states")
    p.add_argument("--threads", type=int, help="python: ONNX Runtime threads per instance (default: physical cores)")
    p.add_argument("--truncate", action="store_true", help="python: cut over-long texts instead of an error")
    p.add_argument("--python-path", action="append", default=[], metavar="DIR",
                   help="python: a folder put first on the stub's sys.path (repeatable), e.g. a numpy<2 for a "
                        "Triton Python backend stub built against numpy 1 (Triton <= 24.xx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<name>")
    p.set_defaults(func=run_triton)


def run_triton(args: argparse.Namespace) -> int:
    from onnxformer.progress import console
    from onnxformer.serve.triton import TritonOptions, export_triton

    options = TritonOptions(
        backend=args.backend, variant=args.variant, instances=args.instances, max_batch_size=args.max_batch_size,
        max_delay_us=args.max_delay_us, precision=args.precision, engine_cache=args.engine_cache, name=args.name,
        overwrite=args.overwrite, threads=args.threads, truncate=args.truncate,
        python_path=tuple(args.python_path), pooled=args.pooled,
    )
    target = export_triton(args.directory, args.repo, options)
    model = "model.py (Triton's Python backend)" if args.backend == "python" else "model.onnx"
    console.print(f"wrote {target}/config.pbtxt and {target}/1/{model}")
    return 0
