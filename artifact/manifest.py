"""The artifact manifest: the single source of truth that connects export → quantize → runtime.

``manifest.json`` sits at the artifact root. This module is the only place that parses or builds it:
``Manifest.load`` (schema-checked: a bad field is an ArtifactError naming it), ``Manifest.save``
(atomic), ``build_manifest`` (the one builder every exporter calls) and ``variant_record`` (the one
way a variant's files are hashed). Everything else reads the typed fields.

The JSON keeps the shape it has had since schema version 1, so artifacts written before the typed
module still load; keys this version does not know are kept and written back unchanged.
"""
from __future__ import annotations

import builtins
import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from onnxformer.artifact.cpu import CpuInfo
from onnxformer.artifact.files import atomic_write_json, confined, sha256_file
from onnxformer.errors import ArtifactError, InputError, IntegrityError

FORMAT = "onnxformer-artifact"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_SEQUENCE = 1 << 20  # tokens: far past any position table; a bigger max_length is a damaged manifest
REFERENCE = "fp32"  # the variant every other one is measured against
FUSED, UNFUSED = "fused", "unfused"


# --- schema checking -------------------------------------------------------------------------------------
class _Reader:
    """Typed access to one JSON object; every failure names the field's dotted path."""

    def __init__(self, data: Any, where: str, origin: str):
        if not isinstance(data, dict):
            raise ArtifactError(f"{origin}: {where or 'the manifest'} must be an object, not "
                                f"{type(data).__name__}; re-export the model")
        self.data, self.where, self.origin = data, where, origin

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, expected: str) -> ArtifactError:
        value = self.data.get(key)
        shown = repr(value) if len(repr(value)) < 60 else type(value).__name__
        return ArtifactError(f"{self.origin}: field {self._path(key)} must be {expected}, not {shown}; "
                             "re-export the model (or restore manifest.json)")

    def get(self, key: str, check: Callable[[Any], bool], expected: str, default: Any = ..., ) -> Any:
        if key not in self.data or (self.data[key] is None and default is not ...):
            if default is ...:
                raise ArtifactError(f"{self.origin}: required field {self._path(key)} is missing; re-export the model")
            return default
        value = self.data[key]
        if not check(value):
            raise self.fail(key, expected)
        return value

    def str(self, key: builtins.str, default: Any = ...) -> Any:
        return self.get(key, lambda v: isinstance(v, str), "a string", default)

    def int(self, key: builtins.str, default: Any = ..., minimum: int = 0) -> Any:
        return self.get(key, lambda v: _is_int(v) and v >= minimum and v < 2 ** 63,
                        f"an integer >= {minimum}", default)

    def dict(self, key: builtins.str, default: Any = ...) -> Any:
        return self.get(key, lambda v: isinstance(v, dict), "an object", default)

    def list(self, key: builtins.str, default: Any = ...) -> Any:
        return self.get(key, lambda v: isinstance(v, list), "a list", default)

    def sub(self, key: builtins.str) -> _Reader:
        return _Reader(self.dict(key), self._path(key), self.origin)

    def rest(self, known: set[builtins.str]) -> builtins.dict[builtins.str, Any]:
        return {k: v for k, v in self.data.items() if k not in known}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finish(part: Any, out: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """``out`` plus the ``optional`` attributes that are set, then the keys this version does not know."""
    out.update({k: getattr(part, k) for k in optional if getattr(part, k) is not None})
    return {**out, **part.extra}


# --- the parts -------------------------------------------------------------------------------------------
@dataclass
class TensorSpec:
    """One graph input or output."""

    name: str
    dtype: str  # numpy name: float32, int64, ...
    shape: list[int | str]  # ints are fixed, strings name dynamic axes
    dynamic_axes: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic(self) -> set[int]:
        return {int(k) for k in self.dynamic_axes}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "dynamic_axes": dict(self.dynamic_axes)}

    @classmethod
    def parse(cls, r: _Reader) -> TensorSpec:
        shape = r.get("shape", lambda v: isinstance(v, list) and all(_is_int(d) or isinstance(d, str) for d in v),
                      "a list of ints and axis names")
        axes = r.get("dynamic_axes", lambda v: isinstance(v, dict), "an object", {})
        return cls(r.str("name"), r.str("dtype"), shape, {str(k): str(v) for k, v in axes.items()})


@dataclass
class TokenizerSpec:
    """What the runtime needs to tokenize with the ``tokenizers`` library alone."""

    files: dict[str, str]  # relative path → sha256
    max_length: int
    pad_id: int = 0
    pad_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"files": dict(self.files), "max_length": self.max_length, "pad_id": self.pad_id,
                "pad_token": self.pad_token, **self.extra}

    @classmethod
    def parse(cls, r: _Reader) -> TokenizerSpec:
        files = r.get("files", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                      "an object of path → sha256")
        max_length = r.get("max_length", lambda v: _is_int(v) and 1 <= v <= MAX_SEQUENCE, f"an integer in [1, {MAX_SEQUENCE}]")
        return cls(files, max_length, r.int("pad_id", 0), r.str("pad_token", None),
                   r.rest({"files", "max_length", "pad_id", "pad_token"}))


@dataclass
class Postprocess:
    """How outputs become what the user asked for (pooling for embeddings, labels for classification)."""

    pooling: str | None = None
    normalize: bool = False
    id2label: dict[str, str] = field(default_factory=dict)
    activation: str | None = None
    truncate_dim: int | None = None  # sentence-transformers' Matryoshka default width
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name → text prepended to the input
    default_prompt_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "source" of the pooling settings

    _EMBEDDING = ("truncate_dim", "default_prompt_name")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pooling is not None:
            out.update(pooling=self.pooling, normalize=self.normalize)
        if self.prompts:
            out["prompts"] = dict(self.prompts)
        if self.id2label or self.activation is not None:
            out.update(id2label=dict(self.id2label), activation=self.activation)
        return _finish(self, out, self._EMBEDDING)

    @classmethod
    def parse(cls, r: _Reader) -> Postprocess:
        labels = r.dict("id2label", {})
        prompts = r.get("prompts", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                        "an object of prompt name → text", {})
        return cls(r.str("pooling", None), bool(r.get("normalize", lambda v: isinstance(v, bool), "true or false", False)),
                   {str(k): str(v) for k, v in labels.items()}, r.str("activation", None),
                   r.int("truncate_dim", None, minimum=1), dict(prompts), r.str("default_prompt_name", None),
                   r.rest({"pooling", "normalize", "id2label", "activation", "prompts", *cls._EMBEDDING}))

    def prompt(self, name: str | None = None, text: str | None = None) -> str:
        """The text to prepend: ``text`` itself, the prompt called ``name``, else the default prompt (or none)."""
        if text is not None:
            return text
        name = name if name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise InputError(f"prompt {name!r} is not one of this model's prompts: {sorted(self.prompts) or 'none'}")
        return self.prompts[name]

    def label(self, index: int) -> str:
        return self.id2label.get(str(index), f"LABEL_{index}")


@dataclass
class Architecture:
    model_type: str
    architectures: list[str] = field(default_factory=list)
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "class" of a plain PyTorch module

    _SIZES = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "max_position_embeddings")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_type": self.model_type}
        if self.architectures:
            out["architectures"] = list(self.architectures)
        return _finish(self, out, self._SIZES)

    @classmethod
    def parse(cls, r: _Reader) -> Architecture:
        sizes = {k: r.int(k, None) for k in cls._SIZES}
        return cls(r.str("model_type"), list(r.list("architectures", [])), **sizes,
                   extra=r.rest({"model_type", "architectures", *cls._SIZES}))


PER_CALL = "per-call"  # activation scales taken over each call's whole input (dynamic int8)
STATIC_SCALES = "static"  # activation scales fixed at quantize time (calibrated QDQ)


@dataclass(frozen=True)
class Latency:
    """A variant's latency as measured on one CPU: median ms of a ``batch`` × ``tokens`` call on ``threads``."""

    cpu: CpuInfo
    ms: float
    batch: int = 1
    tokens: int = 128
    threads: int | None = None
    fp32_ms: float | None = None  # the fp32 reference, measured interleaved with it (None: not measured)

    def to_json(self) -> dict[str, Any]:
        out = {"cpu": self.cpu.to_json(), "ms": self.ms, "batch": self.batch, "tokens": self.tokens,
               "threads": self.threads}
        return {**out, **({"fp32_ms": self.fp32_ms} if self.fp32_ms is not None else {})}

    @classmethod
    def parse(cls, r: _Reader) -> Latency:
        cpu = CpuInfo.from_json(r.get("cpu", lambda v: CpuInfo.from_json(v) is not None,
                                      "an object {model: string, flags: [string]}"))
        number = lambda v: _is_number(v) and v > 0
        assert cpu is not None  # the check above
        return cls(cpu, float(r.get("ms", number, "a positive number")), r.int("batch", 1, minimum=1),
                   r.int("tokens", 128, minimum=1), r.int("threads", None, minimum=1),
                   r.get("fp32_ms", number, "a positive number", None))


@dataclass
class Variant:
    """One runnable form of the model: its graph file(s), hashed, and how it measured against fp32."""

    file: str  # the main ONNX graph, relative to the artifact directory
    sha256: str
    files: dict[str, str]  # every file of the variant (graph + external data) → sha256
    precision: str  # fp32 | fp16 | int8 | int4
    providers: list[str]  # the providers it targets
    made_by: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    graph: str | None = None  # FUSED (ONNX Runtime contrib ops) or UNFUSED; None in manifests before it was recorded
    components: dict[str, str] = field(default_factory=dict)  # generation: role → graph file
    cache_dtype: str | None = None  # generation: dtype of the KV cache
    speed_cpu: dict[str, Any] | None = None  # measured latency against fp32 on a CPU
    # PER_CALL: a sequence's output depends on its batch-mates, so the runtime runs one sequence per call.
    activation_scales: str | None = None
    latency: list[Latency] = field(default_factory=list)  # measured latencies, each with its CPU
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL = ("graph", "cache_dtype", "speed_cpu", "activation_scales")

    @property
    def one_sequence_per_call(self) -> bool:
        """Whether its outputs depend on batch-mates (per-call activation scales). Manifests written before
        ``activation_scales`` existed: dynamic int8 encoders, read from ``made_by``."""
        if self.activation_scales is not None:
            return self.activation_scales == PER_CALL
        return self.precision == "int8" and self.made_by.get("mode") == "dynamic" and not self.components

    @property
    def batch_invariant(self) -> bool:
        """Whether a generation row's tokens are independent of the rows batched with it (dynamic int8's are not:
        one activation scale per call). Manifests written before generative variants recorded
        ``activation_scales``: the int8 ones were made by quantize_dynamic, read from ``made_by``."""
        if self.activation_scales is not None:
            return self.activation_scales != PER_CALL
        return self.made_by.get("tool") != "onnxruntime.quantization.quantize_dynamic"

    def latency_on(self, cpu: CpuInfo) -> Latency | None:
        """The latency recorded on a CPU of ``cpu``'s kind (same model and kernel flags), if any."""
        return next((m for m in self.latency if m.cpu.key == cpu.key), None)

    @property
    def fused(self) -> bool:
        """Whether the graph holds ONNX Runtime's fused contrib operators (TensorRT cannot run those)."""
        if self.graph is not None:
            return self.graph == FUSED
        # Manifests written before ``graph`` existed: the fusion tool and its source are in ``made_by``.
        return "fused_ops" in self.made_by or self.made_by.get("from") == "fp32-opt"

    @property
    def all_files(self) -> dict[str, str]:
        return {**self.files, self.file: self.sha256}

    def metric(self, name: str) -> float | None:
        value = self.fidelity.get(name)
        return float(value) if value is not None and _is_number(value) else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "sha256": self.sha256, "files": dict(self.files),
                               "size_bytes": self.size_bytes, "precision": self.precision,
                               "providers": list(self.providers), "made_by": self.made_by, "fidelity": self.fidelity}
        if self.components:
            out["components"] = dict(self.components)
        if self.latency:
            out["latency"] = [m.to_json() for m in self.latency]
        return _finish(self, out, self._OPTIONAL)

    @classmethod
    def parse(cls, r: _Reader) -> Variant:
        strings = lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
        providers = r.get("providers", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
                          "a list of provider names", [])
        graph = r.get("graph", lambda v: v in (FUSED, UNFUSED), f"{FUSED!r} or {UNFUSED!r}", None)
        known = {"file", "sha256", "files", "size_bytes", "precision", "providers", "made_by", "fidelity",
                 "components", "latency", *cls._OPTIONAL}
        scales = r.get("activation_scales", lambda v: v in (PER_CALL, STATIC_SCALES),
                       f"{PER_CALL!r} or {STATIC_SCALES!r}", None)
        latency = [Latency.parse(_Reader(m, f"{r._path('latency')}[{i}]", r.origin))
                   for i, m in enumerate(r.list("latency", []))]
        return cls(r.str("file"), r.str("sha256"), r.get("files", strings, "an object of path → sha256", {}),
                   r.str("precision"), providers, r.dict("made_by", {}), r.dict("fidelity", {}),
                   r.int("size_bytes", 0), graph, r.get("components", strings, "an object of role → file", {}),
                   r.str("cache_dtype", None), r.dict("speed_cpu", None), scales, latency, r.rest(known))


@dataclass
class Generation:
    """Generative artifacts: graph kind, KV-cache layout, special tokens, position limit."""

    kind: str  # "decoder" | "seq2seq"
    cache: dict[str, Any]  # past_inputs / present_outputs per layer, num_layers, num_heads, num_kv_heads, ...
    special_tokens: dict[str, Any]
    max_positions: int
    position_ids: bool = False  # the decoder takes position_ids
    logits_to_keep: bool = False  # the decoder takes logits_to_keep (prompt steps compute the last logits only)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cache": self.cache, "special_tokens": self.special_tokens,
                "max_positions": self.max_positions, "position_ids": self.position_ids,
                "logits_to_keep": self.logits_to_keep, **self.extra}

    @classmethod
    def parse(cls, r: _Reader) -> Generation:
        kind = r.get("kind", lambda v: v in ("decoder", "seq2seq"), "'decoder' or 'seq2seq'")
        tokens = r.sub("special_tokens")
        tokens.get("eos_token_ids", lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of token ids")
        tokens.int("pad_token_id")
        # Absent in manifests older than the flags: assume the graph may take the input (the runtime binds
        # only inputs the session declares).
        flag = lambda k: bool(r.get(k, lambda v: isinstance(v, bool), "true or false", True))
        return cls(kind, r.dict("cache"), tokens.data, r.int("max_positions", minimum=1), flag("position_ids"),
                   flag("logits_to_keep"),
                   r.rest({"kind", "cache", "special_tokens", "max_positions", "position_ids", "logits_to_keep"}))


# --- the manifest ----------------------------------------------------------------------------------------
@dataclass
class Manifest:
    name: str
    task: str
    architecture: Architecture
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    variants: dict[str, Variant]
    tokenizer: TokenizerSpec | None = None
    postprocess: Postprocess = field(default_factory=Postprocess)
    generation: Generation | None = None
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path, weight format, sha256 per file
    opset: int | None = None
    versions: dict[str, Any] = field(default_factory=dict)  # library versions that made the fp32 graph
    validation: dict[str, Any] = field(default_factory=dict)  # export's check against PyTorch
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # --- accessors ---------------------------------------------------------------------------------------
    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ArtifactError(f"variant {name!r} not in this artifact; available: {sorted(self.variants)}")
        return self.variants[name]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def source_path(self) -> str | None:
        path = self.source.get("path")
        return path if isinstance(path, str) and path else None

    @property
    def max_length(self) -> int | None:
        return self.tokenizer.max_length if self.tokenizer else None

    # --- (de)serialisation -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "created": self.created, "name": self.name,
            "task": self.task, "architecture": self.architecture.to_json(), "source": self.source,
            "opset": self.opset, "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "tokenizer": self.tokenizer.to_json() if self.tokenizer else None,
        }
        if self.generation is not None:
            out["generation"] = self.generation.to_json()
        out.update(postprocess=self.postprocess.to_json(), versions=self.versions, validation=self.validation,
                   variants={n: v.to_json() for n, v in self.variants.items()})
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any, origin: str = MANIFEST_NAME) -> Manifest:
        """Check ``data`` against the schema and build the typed manifest; ArtifactError names a bad field."""
        r = _Reader(data, "", origin)
        if data.get("format") != FORMAT:
            raise ArtifactError(f"{origin} is not an onnxformer manifest (format != {FORMAT!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(f"{origin} has schema version {version!r}; this onnxformer reads version "
                                f"{SCHEMA_VERSION}. Re-export the model with this version of onnxformer")
        missing = [k for k in ("task", "architecture", "inputs", "outputs", "variants") if k not in data]
        if missing:
            raise ArtifactError(f"{origin} lacks required keys {missing}; re-export the model")
        variants = r.sub("variants")
        tensors = lambda key: [TensorSpec.parse(_Reader(t, f"{key}[{i}]", origin)) for i, t in enumerate(r.list(key))]
        known = {"format", "schema_version", "created", "name", "task", "architecture", "source", "opset", "inputs",
                 "outputs", "tokenizer", "generation", "postprocess", "versions", "validation", "variants"}
        return cls(
            name=r.str("name", ""), task=r.str("task"), architecture=Architecture.parse(r.sub("architecture")),
            inputs=tensors("inputs"), outputs=tensors("outputs"),
            variants={n: Variant.parse(variants.sub(n)) for n in variants.data},
            tokenizer=TokenizerSpec.parse(r.sub("tokenizer")) if data.get("tokenizer") is not None else None,
            postprocess=Postprocess.parse(r.sub("postprocess")) if data.get("postprocess") is not None else Postprocess(),
            generation=Generation.parse(r.sub("generation")) if data.get("generation") is not None else None,
            source=r.dict("source", {}), opset=r.int("opset", None), versions=r.dict("versions", {}),
            validation=r.dict("validation", {}), created=r.str("created", None), extra=r.rest(known),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Load and schema-check the manifest of an artifact directory."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"artifact directory {directory} does not exist; run `onnxformer export` first")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(f"{directory} has no {MANIFEST_NAME}: not an onnxformer artifact "
                                "(run `onnxformer export`)")
        try:
            data = json.loads(path.read_text())
        except (ValueError, RecursionError) as e:
            raise ArtifactError(f"{path} is not valid JSON ({str(e)[:80]}); re-export the model") from None
        except OSError as e:
            raise ArtifactError(f"cannot read {path} ({e.strerror}); check its permissions") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is not an onnxformer manifest (not a JSON object)")
        return cls.from_json(data, str(path))

    def save(self, directory: str | Path) -> None:
        """Write ``manifest.json`` atomically: a reader sees the old manifest or the new one, never half."""
        atomic_write_json(Path(directory) / MANIFEST_NAME, self.to_json())


def is_artifact(directory: str | Path) -> bool:
    """True when ``directory`` holds a manifest of ours (any schema version)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def load_manifest(directory: str | Path) -> Manifest:
    return Manifest.load(directory)


def build_manifest(*, name: str, task: str, architecture: Architecture, source: Mapping[str, Any], opset: int,
                   inputs: list[TensorSpec], outputs: list[TensorSpec], fp32: Variant, versions: Mapping[str, Any],
                   validation: Mapping[str, Any], tokenizer: TokenizerSpec | None = None,
                   postprocess: Postprocess | None = None, generation: Generation | None = None) -> Manifest:
    """The one builder of a new artifact's manifest (encoder, generative and plain-module exports)."""
    return Manifest(name=name, task=task, architecture=architecture, inputs=inputs, outputs=outputs,
                    variants={REFERENCE: fp32}, tokenizer=tokenizer, postprocess=postprocess or Postprocess(),
                    generation=generation, source=dict(source), opset=opset, versions=dict(versions),
                    validation=dict(validation),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def tensor_spec(node: Any) -> TensorSpec:
    """A TensorSpec from an ONNX Runtime ``NodeArg`` (session.get_inputs() / get_outputs())."""
    from onnxformer.artifact.dtypes import numpy_name

    shape = [d if isinstance(d, int) else str(d) for d in node.shape]
    return TensorSpec(node.name, numpy_name(node.type), shape,
                      {str(i): str(d) for i, d in enumerate(node.shape) if not isinstance(d, int)})


# --- files -----------------------------------------------------------------------------------------------
def file_record(directory: Path, relative_paths: list[str]) -> dict[str, str]:
    """sha256 of each file, keyed by its path relative to the artifact directory."""
    return {rel: sha256_file(confined(directory, rel)) for rel in sorted(relative_paths)}


def variant_record(directory: str | Path, file: str, *, precision: str, providers: list[str],
                   made_by: dict[str, Any], fidelity: dict[str, Any] | None = None, graph: str | None = None,
                   components: Mapping[str, str] | None = None, **extra: Any) -> Variant:
    """Describe one variant: its ONNX file plus every sibling file (external data, other components), hashed."""
    directory = Path(directory)
    main = confined(directory, file)
    siblings = [str(p.relative_to(directory.resolve())) for p in sorted(main.parent.iterdir()) if p.is_file()]
    files = file_record(directory, siblings)
    cache_dtype = extra.pop("cache_dtype", None)
    speed_cpu = extra.pop("speed_cpu", None)
    scales, latency = extra.pop("activation_scales", None), list(extra.pop("latency", None) or [])
    return Variant(file=file, sha256=files[file], files=files,
                   size_bytes=sum((directory / f).stat().st_size for f in files), precision=precision,
                   providers=list(providers), made_by=made_by, fidelity=fidelity or {}, graph=graph,
                   components=dict(components or {}), cache_dtype=cache_dtype, speed_cpu=speed_cpu,
                   activation_scales=scales, latency=latency, extra=extra)


def verify_files(directory: str | Path, files: Mapping[str, str]) -> None:
    """Check that every file is inside ``directory`` and matches its recorded sha256."""
    directory = Path(directory)
    for rel, expected in files.items():
        path = confined(directory, rel)
        if not path.is_file():
            raise IntegrityError(f"{rel} is listed in the manifest but missing from {directory}; re-export the model")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{rel} does not match the manifest (sha256 {actual[:12]}… != {expected[:12]}…): "
                "the file was modified or corrupted; re-export or re-quantize it"
            )


def verify_variant(directory: str | Path, manifest: Manifest, name: str) -> Path:
    """Verify a variant's files and return the path of its ONNX graph."""
    record = manifest.variant(name)
    verify_files(directory, record.all_files)
    return confined(Path(directory), record.file)
