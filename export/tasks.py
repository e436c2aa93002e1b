"""Tasks and architectures, described as data.

Each task says which transformers auto-class loads it, which outputs the graph has, and how the
runtime post-processes them. Architecture coverage itself is optimum's job; this table lists the
encoder families onnxformer exports *and validates* in its test suite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxformer.errors import CheckpointError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    auto_class: str  # transformers auto-class that loads the PyTorch reference
    outputs: tuple[str, ...]  # ONNX output names, as optimum names them
    atol: float  # default max |Δ| between ONNX Runtime and PyTorch fp32


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("feature-extraction", "AutoModel", ("last_hidden_state",), 1e-4),
        TaskSpec("text-classification", "AutoModelForSequenceClassification", ("logits",), 1e-4),
        TaskSpec("token-classification", "AutoModelForTokenClassification", ("logits",), 1e-4),
        TaskSpec("question-answering", "AutoModelForQuestionAnswering", ("start_logits", "end_logits"), 1e-4),
    )
}

# Encoder families exported and validated by the test suite (tests/test_export_families.py).
ENCODER_FAMILIES: tuple[str, ...] = (
    "albert",
    "bert",
    "camembert",
    "distilbert",
    "electra",
    "mpnet",
    "roberta",
    "xlm-roberta",
)

_HEAD_SUFFIXES = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise CheckpointError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def check_architecture(model_type: str) -> None:
    if model_type not in ENCODER_FAMILIES:
        raise CheckpointError(
            f"unsupported architecture {model_type!r}; supported encoder families: {', '.join(ENCODER_FAMILIES)}"
        )


def infer_task(config: dict[str, Any], is_sentence_transformer: bool) -> str:
    """Pick the task from the checkpoint: a sentence-transformers model embeds; a head class names its task."""
    if is_sentence_transformer:
        return "feature-extraction"
    for arch in config.get("architectures") or []:
        for suffix, task in _HEAD_SUFFIXES.items():
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


# Generative families (export/generative.py): decoder-only with a KV cache, and encoder-decoder.
DECODER_FAMILIES: tuple[str, ...] = ("gpt2", "llama", "mistral", "qwen2")
SEQ2SEQ_FAMILIES: tuple[str, ...] = ("bart", "marian", "t5")
GENERATIVE_TASKS: dict[str, str] = {  # task → transformers auto-class of the PyTorch reference
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}


def generative_task(model_type: str, task: str | None) -> str | None:
    """The generative task this export request means, or None when it is an encoder export.

    Accepts optimum's ``-with-past`` spellings; a generative family with no task gets its natural one.
    """
    if task is not None:
        base = task.removesuffix("-with-past")
        return base if base in GENERATIVE_TASKS else None
    if model_type in DECODER_FAMILIES:
        return "text-generation"
    if model_type in SEQ2SEQ_FAMILIES:
        return "text2text-generation"
    return None
