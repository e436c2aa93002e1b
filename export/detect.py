"""Which export a checkpoint gets: its task and family, read from the task and family registries.

The registries themselves are artifact/tasks.py and artifact/families.py (one home for every stage);
this module only applies them to a checkpoint's config.
"""
from __future__ import annotations

from typing import Any

from onnxformer.artifact import families
from onnxformer.artifact.families import Family
from onnxformer.artifact.tasks import TASKS, Task, canonical, exportable
from onnxformer.errors import CheckpointError


def get_task(name: str) -> Task:
    """The exportable task called ``name`` (optimum's aliases accepted); CheckpointError listing them otherwise."""
    task = TASKS.get(canonical(name))
    if task is None or task.auto_class is None:
        raise CheckpointError(f"unknown task {name!r}; choose one of: {', '.join(exportable())}")
    return task


def check_architecture(model_type: str, task: str) -> Family:
    """The family of a one-graph export of ``task``: an encoder, or a decoder that embeds (``Family.embedder``)."""
    return families.get_family(model_type, task=task)


def infer_task(config: dict[str, Any], is_sentence_transformer: bool) -> str:
    """Pick the task from the checkpoint: a sentence-transformers model embeds; a head class names its task
    (``BertForSequenceClassification`` → the task whose auto class is ``AutoModelForSequenceClassification``)."""
    if is_sentence_transformer:
        return "feature-extraction"
    heads = {t.auto_class.removeprefix("AutoModel"): t.name for t in TASKS.values()
             if t.auto_class and t.auto_class != "AutoModel" and not t.generative}
    for arch in config.get("architectures") or []:
        for suffix, task in heads.items():
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


def generative_task(model_type: str, task: str | None, is_sentence_transformer: bool = False) -> str | None:
    """The generative task this export request means, or None when it is an encoder export.

    Accepts optimum's ``-with-past`` spellings; a generative family with no task gets its natural one, unless
    the checkpoint is a sentence-transformers embedder of a family that embeds (Qwen3-Embedding).
    """
    if task is not None:  # optimum's -with-past spellings are aliases in the registry
        spec = TASKS.get(canonical(task))
        return spec.name if spec is not None and spec.generative else None
    family = families.find(model_type)
    if family is None or not family.generative or (is_sentence_transformer and family.embedder):
        return None
    return family.tasks[0]
