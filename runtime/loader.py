"""Opening a verified variant: the one path from an artifact directory to running ONNX Runtime sessions.

``Model.load``, ``Generator.load``, the server and the benchmarks all come through here. Order matters:
the manifest is schema-checked, the variant's files are sha256-verified and every graph's external-data
locations confined to the artifact *before* ONNX Runtime is handed a file; after the session starts, the
provider it actually runs on is checked (ONNX Runtime falls back to the CPU silently).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import onnxruntime as ort

from onnxformer.artifact.cpu import this_cpu
from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import Manifest, Variant, verify_files, verify_variant
from onnxformer.artifact.roles import MODEL
from onnxformer.artifact.tasks import TASKS, get_task
from onnxformer.errors import ArtifactError, ProviderError
from onnxformer.runtime import latency
from onnxformer.runtime import providers as registry
from onnxformer.runtime.batching import DEFAULT_MAX_BATCH_SIZE
from onnxformer.runtime.binding import Runner
from onnxformer.runtime.choice import Choice, check_explicit, choose
from onnxformer.runtime.external import check_external_data
from onnxformer.runtime.session import session_options

log = logging.getLogger("onnxformer.runtime")


@dataclass(frozen=True)
class LoadOptions:
    """How to open an artifact; ``Model.load`` and ``Generator.load`` take these, in this order."""

    provider: str | Sequence[str] = "auto"
    variant: str = "auto"
    budget: float | dict[str, float] | None = None
    threads: int | None = None
    strict: bool = False
    io_binding: bool | None = None  # None: on for GPU providers, off on CPU (plain run is as fast there)
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # also the TensorRT profile's max batch
    trt_cache: Path | None = None
    measure: bool = True  # variant="auto" on a CPU without recorded latencies: measure them (≤ 1 s, cached)
    deferred: tuple[str, ...] = ()  # graph roles verified now but started only when first asked for (Opened.deferred)
    # variant="auto": a variant that fails to open gives way to the next best (named in Opened.passed_over, logged
    # at WARNING); False (and ``strict``): that is an error
    variant_fallback: bool = True


@dataclass
class Opened:
    """A verified variant running on a provider that really started."""

    manifest: Manifest
    variant: str
    provider: str
    reason: str  # why this variant (and provider)
    runners: dict[str, Runner] = field(default_factory=dict)  # role → runner (one per graph of the variant)
    deferred: dict[str, Callable[[], Runner]] = field(default_factory=dict)  # role → starts its runner
    passed_over: dict[str, str] = field(default_factory=dict)  # auto: variant that failed to open → why

    @property
    def runner(self) -> Runner:
        return self.runners[MODEL]

    @property
    def record(self) -> Variant:
        return self.manifest.variants[self.variant]


def open_artifact(directory: str | Path, options: LoadOptions, *, generative: bool = False,
                  available: Sequence[str] | None = None, gpu: bool | None = None) -> Opened:
    """Load the manifest, check the artifact is of the kind the caller runs, verify the tokenizer, then resolve
    provider and variant (``auto``: the fastest variant meeting the budget) and open it."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    task = get_task(manifest.task)
    if task.generative and not generative:
        runs = ", ".join(n for n, t in TASKS.items() if not t.generative)
        raise ArtifactError(f"{directory} is a {manifest.task} artifact; Model runs {runs} "
                            "(use onnxformer.runtime.generation.Generator for generative models)")
    if generative and not task.generative:
        raise ArtifactError(f"{directory} is a {manifest.task} artifact, not a generative one; "
                            "export a text-generation or text2text-generation checkpoint")
    if manifest.tokenizer is not None:
        verify_files(directory, manifest.tokenizer.files)
    elif task.tokenizer:
        raise ArtifactError(f"{directory}: a {manifest.task} manifest needs a tokenizer section; re-export the model")

    fallback = options.variant_fallback and not options.strict

    def attempt(provider: str) -> Opened:
        # auto: a variant that fails verification gives way to the next best, and the Opened says which and why
        broken: dict[str, str] = {}
        first: ArtifactError | None = None
        while True:
            try:
                choice = (auto(directory, manifest, provider, options, generative, broken, fallback)
                          if options.variant == "auto" else check_explicit(manifest, provider, options.variant))
            except ProviderError:
                if first is not None:  # every variant is damaged: the first damage is the error to report
                    raise first from None
                raise
            try:
                opened = open_variant(directory, manifest, choice, provider, options)
            except ArtifactError as e:  # IntegrityError included: a damaged file, never a half-written load
                if options.variant != "auto":
                    raise
                if not fallback:
                    raise not_replaced(choice.variant, str(e)) from None
                broken[choice.variant], first = str(e), first or e
                continue
            if broken:
                log.warning("%s: variant %s passed over (%s); running %s instead", directory, ", ".join(broken),
                            "; ".join(f"{n}: {why}" for n, why in broken.items()), choice.variant)
            log.info("loaded %s: provider %s, variant %s (%s)", directory, provider, choice.variant, choice.reason)
            opened.passed_over = dict(broken)
            return opened

    return registry.resolve(options.provider, attempt, strict=options.strict, available=available, gpu=gpu)


def auto(directory: Path, manifest: Manifest, provider: str, options: LoadOptions, generative: bool = False,
         broken: dict[str, str] | None = None, fallback: bool = True) -> Choice:
    """The fastest variant meeting the budget (``broken`` ones passed over); on a CPU of a kind the quantize stage
    did not measure on, the eligible variants are measured here first (``runtime/latency.py``) unless
    ``options.measure`` is off. A variant found damaged while measuring joins ``broken`` (an error unless
    ``fallback``)."""
    broken = broken if broken is not None else {}
    choice = choose(manifest, provider, options.budget, broken)
    if generative or provider != "cpu" or choice.measured or len(choice.eligible) < 2 or not options.measure:
        return choice
    cpu = this_cpu()
    before = set(broken)
    measured = latency.at_load(directory, manifest, choice.eligible, cpu, options.threads, broken=broken)
    damaged = [n for n in broken if n not in before]
    if damaged and not fallback:
        raise not_replaced(damaged[0], broken[damaged[0]])
    return choose(manifest, provider, options.budget, broken, cpu=cpu, measured=measured,
                  measured_how="measured at load (cached per artifact and CPU)")


def not_replaced(variant: str, reason: str) -> ArtifactError:
    """Strict loading: a damaged variant is an error, never silently replaced by the next best."""
    return ArtifactError(f"variant {variant} cannot be used ({reason}); strict mode forbids running another variant "
                         "in its place: restore or re-make it, or load without strict to fall back to the next best")


def open_variant(directory: Path, manifest: Manifest, choice: Choice | str, provider: str, options: LoadOptions,
                 provider_opts: dict[str, Any] | None = None) -> Opened:
    """Verify one variant (sha256 of every file, external data confined and hashed) and start a session per
    graph on ``provider``; ProviderError when the provider does not really start."""
    choice = choice if isinstance(choice, Choice) else Choice(choice, "requested by the caller")
    record = manifest.variant(choice.variant)
    verify_variant(directory, manifest, choice.variant)  # sha256 before ORT sees any file
    graphs = record.components or {MODEL: record.file}
    paths = {role: confined(directory, rel) for role, rel in graphs.items()}
    for path in paths.values():
        check_external_data(directory, record, path)
    opts = provider_opts if provider_opts is not None else provider_options(manifest, record, provider, options)
    runners = {role: start_runner(path, provider, opts, options) for role, path in paths.items()
               if role not in options.deferred}
    later: dict[str, Callable[[], Runner]] = {
        role: functools.partial(start_runner, path, provider, opts, options)
        for role, path in paths.items() if role in options.deferred}
    return Opened(manifest, choice.variant, provider, choice.reason, runners, later)


def provider_options(manifest: Manifest, record: Variant, provider: str, options: LoadOptions,
                     precision: str | None = None) -> dict[str, Any]:
    """The provider's options for this variant (TensorRT: profiles and caches; ``precision``: the engine's)."""
    if provider == "tensorrt":
        return registry.tensorrt_options(manifest, record, max_batch=options.max_batch_size,
                                         cache_root=options.trt_cache or registry.default_cache_root(),
                                         ort_version=ort.__version__, gpu=registry.gpu_name(), precision=precision,
                                         trt_major=registry.tensorrt_major())
    return dict(registry.REGISTRY[provider].default_options)


def start_runner(path: Path, provider: str, provider_opts: dict[str, Any], options: LoadOptions) -> Runner:
    """An ONNX Runtime session on ``provider``, refused when ORT started another provider in its place."""
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
