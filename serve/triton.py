"""`onnxformer triton`: a Triton Inference Server model repository from an artifact directory.

Layout: ``OUT/<name>/config.pbtxt`` and ``OUT/<name>/1/model.onnx`` (+ external data beside it). The
config is built as a ``ModelConfig`` protobuf (the schema ``tritonclient`` ships), written as text, and
parsed back before it counts as written. ``--backend tensorrt`` keeps Triton's onnxruntime backend and
adds the TensorRT execution accelerator (precision, workspace, engine cache, shape profiles).

``--backend python`` runs our runtime inside Triton's Python backend instead: text in (BYTES ``text``), the
task's outputs out (``embedding``; ``logits``, ``label``, ``score``), Triton's dynamic batching merging requests.
The version folder holds ``model.py`` (``templates/triton_model.py``), ``environment.json`` (the Python and
site-packages of the environment that wrote it: Triton's stub puts them on its path) and ``artifact/`` (the
manifest, tokenizer and the one variant, sha256-verified when the model initializes).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from onnxformer.artifact.dtypes import DTYPES, from_ort
from onnxformer.artifact.files import atomic_write_bytes, confined, default_mode
from onnxformer.artifact.manifest import Manifest, TensorSpec, Variant, verify_variant
from onnxformer.artifact.scratch import prepare_parent, scratch_dir, swap_into_place, sweep
from onnxformer.artifact.tasks import get_task
from onnxformer.errors import ArtifactError
from onnxformer.runtime.batching import DEFAULT_MAX_BATCH_SIZE
from onnxformer.runtime.providers import profile_options, shape_profile
from onnxformer.serve.statuses import ServingError
from onnxformer.serve.triton_backend import ARTIFACT_DIR, OUTPUTS, TEXT, TEXT_PAIR

BACKENDS = ("onnxruntime", "tensorrt", "python")
PRECISIONS = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class TritonOptions:
    backend: str = "onnxruntime"
    variant: str = "fp32"
    instances: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay_us: int = 2000
    precision: str | None = None  # TensorRT only; default: the variant's precision
    engine_cache: str | None = None  # TensorRT only; default: /tmp/onnxformer-trt/<name>-<sha>
    name: str | None = None
    overwrite: bool = False
    threads: int | None = None  # python only: ONNX Runtime threads per instance (default: the runtime's)
    truncate: bool = False  # python only: cut over-long texts instead of answering an error
    python_path: tuple[str, ...] = ()  # python only: folders put first on the stub's sys.path
    pooled: bool = False  # onnxruntime/tensorrt: pooling and normalisation inside the graph (``embedding`` out)

    def check(self) -> TritonOptions:
        if self.backend not in BACKENDS:
            raise ServingError(f"--backend must be one of {BACKENDS} (got {self.backend!r})")
        if self.instances < 1 or self.max_batch_size < 1 or self.max_delay_us < 0:
            raise ServingError("--instances and --max-batch-size must be >= 1, --max-delay-us >= 0")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ServingError(f"--precision must be one of {sorted(PRECISIONS)} (got {self.precision!r})")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ServingError(f"--name {self.name!r}: use letters, digits, '_', '-' and '.' only")
        return self


def export_triton(directory: str | Path, repo: str | Path, options: TritonOptions) -> Path:
    """Write the model into the repository; returns ``repo/<name>``."""
    options.check()
    directory, repo = Path(directory), Path(repo)
    manifest = Manifest.load(directory)
    if get_task(manifest.task).generative:
        raise ServingError(f"{directory} is a {manifest.task} artifact: its generation loop (several graphs and a "
                           "KV cache carried between calls) is not one Triton model; serve it with "
                           "`onnxformer serve` instead")
    graph = verify_variant(directory, manifest, options.variant)  # never ship a file that fails its sha256
    python = options.backend == "python"
    if python and manifest.task not in OUTPUTS:
        raise ServingError(f"--backend python serves {sorted(OUTPUTS)} artifacts; {directory} is {manifest.task}: "
                           "use --backend onnxruntime (raw tensors) or `onnxformer serve`")
    name = options.name or re.sub(r"[^A-Za-z0-9_.-]", "_", manifest.name or directory.name)
    target = repo / name
    if repo.exists() and not repo.is_dir():
        raise ServingError(f"--repo {repo} is a file; give a directory (the model repository)")
    try:
        prepare_parent(target)
    except ArtifactError as e:
        raise ServingError(str(e)) from None
    staging, old = f".{name}.staging-", f".{name}.old-"
    sweep(repo, staging)  # a killed run's half-copied folder
    sweep(repo, old)
    if target.exists() and not options.overwrite:
        raise ServingError(f"{target} already exists; pass --overwrite to replace it")
    if python and options.pooled:
        raise ServingError("--pooled is for --backend onnxruntime/tensorrt (the python backend always pools)")
    if python:
        config = python_model_config(manifest, name, options)
    else:
        config = model_config(manifest, name, options)
        if not options.pooled:
            check_config(config, graph)  # Triton's own rules, against the graph it will load
    text = text_format.MessageToString(config)
    parse_config(text)  # the schema check: what Triton will read must parse back
    with scratch_dir(repo, staging) as stage:  # built whole beside the target, then swapped in by renames
        os.chmod(stage, default_mode(directory=True))  # a Triton container reads it as another user
        if python:
            _write_python_model(directory, manifest, options, stage / "1")
        else:
            _copy_variant(directory, manifest.variant(options.variant), stage / "1")
            if options.pooled:
                from onnxformer.serve.triton_pooled import add_pooling

                add_pooling(stage / "1" / "model.onnx", manifest)
                check_config(config, stage / "1" / "model.onnx")  # the rewritten graph, as Triton will load it
        atomic_write_bytes(stage / "config.pbtxt", text.encode())
        swap_into_place(stage, target, old)
    return target


def check_config(config: mc.ModelConfig, graph: Path) -> None:
    """The rules Triton's onnxruntime backend applies at load: every tensor has ``dims`` (the batch dimension
    is implicit, so a graph tensor needs rank >= 2), and names, data types and dims match the ONNX graph."""
    from onnxformer.runtime.session import create_session

    session = create_session(graph, threads=1)
    for kind, declared, actual in (("input", config.input, session.get_inputs()),
                                   ("output", config.output, session.get_outputs())):
        graph_tensors = {t.name: t for t in actual}
        if sorted(t.name for t in declared) != sorted(graph_tensors):
            raise ServingError(f"config {kind}s {sorted(t.name for t in declared)} do not match the graph's "
                               f"{sorted(graph_tensors)}; re-export the model")
        for tensor in declared:
            node = graph_tensors[tensor.name]
            if not tensor.dims:
                raise ServingError(f"{kind} {tensor.name!r} has shape {node.shape}: Triton needs a batch dimension "
                                   "plus at least one more; this graph cannot be served by Triton as exported")
            dtype = from_ort(node.type)
            if tensor.data_type != getattr(mc, f"TYPE_{dtype.v2}", None):
                raise ServingError(f"{kind} {tensor.name!r}: the config says {mc.DataType.Name(tensor.data_type)}, "
                                   f"the graph {node.type}; re-export the model")
            shape = [d if isinstance(d, int) else -1 for d in node.shape[1:]]
            if list(tensor.dims) != shape:
                raise ServingError(f"{kind} {tensor.name!r}: config dims {list(tensor.dims)} != the graph's {shape}")


def parse_config(text: str) -> mc.ModelConfig:
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as e:
        raise ServingError(f"generated config.pbtxt does not parse as a Triton ModelConfig: {e}") from None


def model_config(manifest: Manifest, name: str, options: TritonOptions) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="onnxruntime", max_batch_size=options.max_batch_size)
    config.input.extend(_tensor(s, mc.ModelInput) for s in manifest.inputs)
    if options.pooled:
        from onnxformer.serve.triton_pooled import pooled_output

        config.output.append(_tensor(pooled_output(manifest), mc.ModelOutput))
    else:
        config.output.extend(_tensor(s, mc.ModelOutput) for s in manifest.outputs)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_delay_us
    gpu = options.backend == "tensorrt"
    config.instance_group.add(count=options.instances,
                              kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU)
    if gpu:
        _add_tensorrt(config, manifest, options)
    return config


def python_model_config(manifest: Manifest, name: str, options: TritonOptions) -> mc.ModelConfig:
    """Text in, the task's outputs out; the runtime's options as the model's parameters."""
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch_size)
    config.input.add(name=TEXT, data_type=mc.TYPE_STRING, dims=[1])
    if manifest.task == "text-classification":  # cross-encoders: (text, text_pair) → score
        config.input.add(name=TEXT_PAIR, data_type=mc.TYPE_STRING, dims=[1], optional=True)
    for out, data_type, dims in OUTPUTS[manifest.task]:
        config.output.add(name=out, data_type=getattr(mc, data_type), dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_delay_us
    config.instance_group.add(count=options.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    params = {"variant": options.variant, "truncate": "true" if options.truncate else "false",
              "threads": str(options.threads or "")}
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def _write_python_model(directory: Path, manifest: Manifest, options: TritonOptions, version_dir: Path) -> None:
    """model.py, environment.json, and artifact/ (top-level files of the artifact plus the one variant)."""
    from importlib import resources

    variant = options.variant

    target = version_dir / ARTIFACT_DIR
    target.mkdir(parents=True)
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            shutil.copyfile(path, target / path.name)
    for rel in sorted(manifest.variant(variant).all_files):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(confined(directory, rel), target / rel)
    verify_variant(target, Manifest.load(target), variant)  # the copy, as the model will load it
    template = resources.files("onnxformer.serve").joinpath("templates/triton_model.py").read_bytes()
    atomic_write_bytes(version_dir / "model.py", template)
    environment = json.dumps(python_environment(options.python_path), indent=2).encode()
    atomic_write_bytes(version_dir / "environment.json", environment)


def python_environment(first: tuple[str, ...] = ()) -> dict[str, Any]:
    """This interpreter's version and site-packages: what Triton's stub must run and put on its path (after
    ``first``)."""
    for folder in first:
        if not Path(folder).is_dir():
            raise ServingError(f"--python-path {folder}: no such directory")
    paths = sysconfig.get_paths()
    return {"python": list(sys.version_info[:2]), "paths": [str(Path(f).resolve()) for f in first],
            "site_dirs": list(dict.fromkeys([paths["purelib"], paths["platlib"]]))}


def _tensor(spec: TensorSpec, kind: type) -> Any:
    """Manifest tensor → Triton tensor; the batch dimension is implicit because max_batch_size > 0."""
    data_type = getattr(mc, f"TYPE_{DTYPES[spec.dtype].v2}", None) if spec.dtype in DTYPES else None
    if data_type is None:
        raise ServingError(f"tensor {spec.name!r} has dtype {spec.dtype} that Triton's config cannot name")
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1:]]
    return kind(name=spec.name, data_type=data_type, dims=dims)


def _add_tensorrt(config: mc.ModelConfig, manifest: Manifest, options: TritonOptions) -> None:
    variant = manifest.variant(options.variant)
    precision = PRECISIONS[options.precision or variant.precision]
    cache = options.engine_cache or f"/tmp/onnxformer-trt/{config.name}-{variant.sha256[:12]}"
    params = {"precision_mode": precision, "max_workspace_size_bytes": str(WORKSPACE_BYTES),
              "trt_engine_cache_enable": "1", "trt_engine_cache_path": cache,
              "trt_timing_cache_enable": "1", "trt_timing_cache_path": cache, **_profiles(manifest, options)}
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    for key, value in params.items():
        accel.parameters[key] = value


def _profiles(manifest: Manifest, options: TritonOptions) -> dict[str, str]:
    """The runtime's one TensorRT shape profile: batch 1..max_batch_size, sequence 1..the tokenizer's limit."""
    profile = shape_profile(manifest.inputs, options.max_batch_size, manifest.max_length or 512)
    return profile_options(profile)


def _copy_variant(directory: Path, record: Variant, version_dir: Path) -> None:
    """The variant's graph becomes model.onnx; its external-data siblings keep their names (the graph refers to them)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    for rel in sorted(record.all_files):
        dest = version_dir / ("model.onnx" if rel == record.file else Path(rel).name)
        shutil.copyfile(confined(directory, rel), dest)  # the folder is staged whole: no per-file temp needed
