"""The family registry: every architecture onnxformer exports, once, as data.

A family is one ``register(Family(...))`` line. Export reads which tasks it takes and how it is
exported; quantize reads ONNX Runtime's optimizer model type; the tokenizer limit subtracts the
position offset; generation reads its kind. Adding an architecture is one entry here plus its
tiny-checkpoint fixture in the tests (which parametrize over this registry).
Plain data: importing it imports nothing beyond the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxformer.errors import CheckpointError

ENCODER, DECODER, SEQ2SEQ = "encoder", "decoder", "seq2seq"
_KIND_TASKS = {  # the tasks each kind of family exports
    ENCODER: ("feature-extraction", "text-classification", "token-classification", "question-answering"),
    DECODER: ("text-generation",),
    SEQ2SEQ: ("text2text-generation",),
}


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' config.model_type
    kind: str  # ENCODER | DECODER | SEQ2SEQ
    optimizer_model_type: str | None = None  # onnxruntime.transformers.optimizer model_type (None: no fusions)
    position_offset: int = 0  # positions consumed before the first token (RoBERTa: padding_idx + 1)
    # A decoder whose base model (AutoModel, no KV cache) also exports feature-extraction, as one encoder-style
    # graph: decoder-based sentence embedders (Qwen3-Embedding) with last-token pooling.
    embedder: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return _KIND_TASKS[self.kind] + (("feature-extraction",) if self.embedder else ())

    @property
    def generative(self) -> bool:
        return self.kind != ENCODER


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.kind not in _KIND_TASKS:
        raise ValueError(f"family {family.model_type!r}: kind must be one of {sorted(_KIND_TASKS)}")
    if family.embedder and family.kind != DECODER:
        raise ValueError(f"family {family.model_type!r}: only a decoder family can be an embedder")
    FAMILIES[family.model_type] = family
    return family


# Encoders: BERT-shaped for ONNX Runtime's fusion patterns (BertOnnxModel), except where noted.
register(Family("albert", ENCODER, "bert"))
register(Family("bert", ENCODER, "bert"))
register(Family("camembert", ENCODER, "bert", position_offset=2))
register(Family("deberta-v2", ENCODER, "bert"))  # relative attention: no attention fusion matches, norms/GELU do
register(Family("distilbert", ENCODER, "bert"))
register(Family("electra", ENCODER, "bert"))
# ModernBERT: ORT's "bert" optimizer crashes on its bias-free LayerNorm (fusion_skiplayernorm IndexError), so
# onnxscript's fusions alone (attention → MultiHeadAttention, GELU).
register(Family("modernbert", ENCODER))
register(Family("mpnet", ENCODER, "bert"))
register(Family("roberta", ENCODER, "bert", position_offset=2))
register(Family("xlm-roberta", ENCODER, "bert", position_offset=2))
# Decoder-only language models with a KV cache.
register(Family("gemma3_text", DECODER))  # sliding-window and full-attention layers alternate
register(Family("gpt2", DECODER))
register(Family("llama", DECODER))
register(Family("mistral", DECODER))  # sliding-window attention
register(Family("phi3", DECODER))
register(Family("qwen2", DECODER))
register(Family("qwen3", DECODER, embedder=True))  # also Qwen3-Embedding (feature-extraction, last-token pooling)
# Encoder-decoder models: encoder + decoder + decoder-with-past graphs.
register(Family("bart", SEQ2SEQ))
register(Family("marian", SEQ2SEQ))
register(Family("t5", SEQ2SEQ))


def names(kind: str | None = None, task: str | None = None) -> tuple[str, ...]:
    """Registered model types (of one ``kind``, exporting ``task``), sorted."""
    return tuple(sorted(n for n, f in FAMILIES.items()
                        if (kind is None or f.kind == kind) and (task is None or task in f.tasks)))


def catalog() -> str:
    """Every registered family by kind, with the ``--task`` values that reach it (an encoder's is inferred from
    the checkpoint's head when not given), and the families that also export a task beyond their kind's."""
    parts = [f"{kind} (--task {' | '.join(tasks)}): {', '.join(names(kind))}"
             for kind, tasks in _KIND_TASKS.items() if names(kind)]
    for name, family in sorted(FAMILIES.items()):
        extra = [t for t in family.tasks if t not in _KIND_TASKS[family.kind]]
        if extra:
            parts.append(f"{name} also (--task {' | '.join(extra)})")
    return "; ".join(parts)


def find(model_type: str) -> Family | None:
    return FAMILIES.get(model_type)


def get_family(model_type: str, kind: str | None = None, task: str | None = None) -> Family:
    """The registered family of ``model_type`` (of ``kind``, exporting ``task``, when given); a CheckpointError
    listing the families that are supported otherwise."""
    family = FAMILIES.get(model_type)
    if family is not None and task is not None and task not in family.tasks and (kind is None or family.kind == kind):
        raise CheckpointError(f"{model_type!r} checkpoints export {', '.join(family.tasks)}, not {task}; families "
                              f"that export {task}: {', '.join(names(kind, task))}")
    if family is None:  # every family, whatever task was inferred: the checkpoint may be a decoder or seq2seq
        raise CheckpointError(f"unsupported architecture {model_type!r}; supported families by kind: {catalog()}")
    if kind is not None and family.kind != kind:
        raise CheckpointError(f"unsupported architecture {model_type!r}; supported {kind} families: "
                              f"{', '.join(names(kind, task))}")
    return family
