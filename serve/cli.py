"""Sub-commands `onnxformer serve` and `onnxformer triton` (registered by onnxformer/cli.py)."""
from __future__ import annotations

import argparse
import os


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an artifact over HTTP (KServe v2, OpenAI embeddings and completions, task endpoints)")
    p.add_argument("directory", help="artifact directory (from `onnxformer export` or `build`)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("ONNXFORMER_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $ONNXFORMER_API_KEY; none = open)")
    p.add_argument("--variant", help="variant to load (default: the runtime's choice)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: physical cores)")
    p.add_argument("--no-batching", action="store_true", help="run each request alone (no dynamic batching)")
    p.add_argument("--max-batch-size", type=int, default=32, help="texts merged into one model call")
    p.add_argument("--max-batch-tokens", type=int, default=256,
                   help="padded tokens per ONNX Runtime batch (merged texts are length-sorted under it)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a batch waits to fill while the model is busy with other work")
    p.add_argument("--max-queue", type=int, default=1024, help="queued texts before 429")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request before 413")
    p.add_argument("--max-tokens-per-text", type=int, help="tokens per text before 422 (default: model limit)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation: max_tokens per completion before 422")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="request body size before 413")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before 504")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish in-flight requests on stop")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from onnxformer.serve.config import ServeConfig
    from onnxformer.serve.server import serve

    config = ServeConfig(
        host=args.host, port=args.port, api_key=args.api_key, batching=not args.no_batching,
        max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens, max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue, max_texts=args.max_texts, max_tokens_per_text=args.max_tokens_per_text,
        max_new_tokens=args.max_new_tokens, max_body_bytes=args.max_body_bytes, timeout_s=args.timeout,
        graceful_s=args.graceful_timeout,
    )
    serve(args.directory, config, variant=args.variant, threads=args.threads)
    return 0


def add_triton(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository entry for an artifact")
    p.add_argument("directory", help="artifact directory")
    p.add_argument("--repo", required=True, help="model repository to write into (OUT/<name>/...)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                   help="onnxruntime (CPU instances) or tensorrt (GPU instances, TensorRT accelerator)")
    p.add_argument("--variant", default="fp32", help="variant to ship (default fp32)")
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay-us", type=int, default=2000, help="dynamic batching queue delay")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="TensorRT precision (default: variant's)")
    p.add_argument("--engine-cache", help="TensorRT engine cache directory inside the Triton container")
    p.add_argument("--name", help="model name in the repository (default: the manifest's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<name>")
    p.set_defaults(func=run_triton)


def run_triton(args: argparse.Namespace) -> int:
    from onnxformer.progress import console
    from onnxformer.serve.triton import TritonOptions, export_triton

    options = TritonOptions(
        backend=args.backend, variant=args.variant, instances=args.instances, max_batch_size=args.max_batch_size,
        max_delay_us=args.max_delay_us, precision=args.precision, engine_cache=args.engine_cache, name=args.name,
        overwrite=args.overwrite,
    )
    target = export_triton(args.directory, args.repo, options)
    console.print(f"wrote {target}/config.pbtxt and {target}/1/model.onnx")
    return 0
