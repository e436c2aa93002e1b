"""Loading an artifact for the runtime: refusals first, then provider + variant resolution, then the session.

Order matters: the manifest is checked, the chosen variant's files are sha256-verified and its external
data locations confined *before* ONNX Runtime is handed the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnxruntime as ort

from onnxformer.errors import ArtifactError, ProviderError
from onnxformer.runtime import providers as registry
from onnxformer.runtime.binding import Runner
from onnxformer.runtime.external import check_external_data
from onnxformer.runtime.manifest import load_manifest, verify_files, verify_variant
from onnxformer.runtime.session import session_options
from onnxformer.runtime.variants import Choice, check_explicit, choose

log = logging.getLogger("onnxformer.runtime")
TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering", "raw")


@dataclass(frozen=True)
class LoadOptions:
    provider: str | Sequence[str] = "auto"
    variant: str = "auto"
    budget: float | dict[str, float] | None = None
    threads: int | None = None
    strict: bool = False
    io_binding: bool | None = None  # None: on for GPU providers, off on CPU (plain run is as fast there)
    max_batch_size: int = 32  # also the TensorRT profile's max batch
    trt_cache: Path | None = None


@dataclass
class Loaded:
    manifest: dict[str, Any]
    provider: str
    choice: Choice
    runner: Runner


def load(directory: Path, options: LoadOptions, available: Sequence[str] | None = None,
         gpu: bool | None = None) -> Loaded:
    manifest = load_manifest(directory)
    if manifest["task"] not in TASKS:
        raise ArtifactError(f"{directory} is a {manifest['task']} artifact; Model runs {', '.join(TASKS)} "
                            "(use onnxformer.runtime.generation.Generator for generative models)")
    if manifest.get("tokenizer"):  # "raw" artifacts (plain PyTorch modules) have none
        verify_files(directory, manifest["tokenizer"]["files"])

    def attempt(provider: str) -> Loaded:
        choice = (choose(manifest, provider, options.budget) if options.variant == "auto"
                  else check_explicit(manifest, provider, options.variant))
        path = verify_variant(directory, manifest, choice.variant)  # sha256 before ORT sees the file
        record = manifest["variants"][choice.variant]
        check_external_data(directory, record, path)
        runner = _runner(path, provider, provider_options(manifest, record, provider, options), options)
        log.info("loaded %s: provider %s, variant %s (%s)", directory, provider, choice.variant, choice.reason)
        return Loaded(manifest, provider, choice, runner)

    return registry.resolve(options.provider, attempt, strict=options.strict, available=available, gpu=gpu)


def provider_options(manifest: dict[str, Any], record: dict[str, Any], provider: str,
                     options: LoadOptions) -> dict[str, Any]:
    if provider == "tensorrt":
        return registry.tensorrt_options(manifest, record, max_batch=options.max_batch_size,
                                         cache_root=options.trt_cache or registry.default_cache_root(),
                                         ort_version=ort.__version__, gpu=registry.gpu_name())
    return dict(registry.REGISTRY[provider].default_options)


def _runner(path: Path, provider: str, provider_opts: dict[str, Any], options: LoadOptions) -> Runner:
    if provider == "tensorrt":
        Path(provider_opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(options.threads),
                                       providers=registry.session_providers(provider, provider_opts))
    except Exception as e:  # ORT's pybind errors share no base class below Exception
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if provider == "cpu":
            raise ArtifactError(f"onnxruntime cannot load {path} ({first}); re-export the model") from None
        raise ProviderError(f"onnxruntime could not start it ({first})") from None  # e.g. CUDA libraries missing
    ort_name = registry.REGISTRY[provider].ort_name
    if session.get_providers()[0] != ort_name:  # ORT falls back silently when a provider fails to initialise
        raise ProviderError(f"onnxruntime started {session.get_providers()[0]} instead of {ort_name}")
    device = registry.REGISTRY[provider].device
    binding = options.io_binding if options.io_binding is not None else device != "cpu"
    return Runner(session, io_binding=binding, device=device, device_id=int(provider_opts.get("device_id", 0)))
