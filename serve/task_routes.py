"""What each task is served on: its HTTP routes beyond KServe v2 raw tensors, and what the KServe v2 ``text``
(BYTES) input yields for it. One table keyed by the registry's task names (``onnxformer.artifact.tasks``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextOutput:
    """A tensor the KServe v2 ``text`` (BYTES) input yields for a task."""

    name: str
    datatype: str
    rank: int

    def metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1] * self.rank}


@dataclass(frozen=True)
class TaskRoutes:
    endpoints: tuple[str, ...] = ()  # HTTP routes beyond KServe v2 raw tensors
    text_outputs: tuple[TextOutput, ...] = ()  # the KServe ``text`` input: empty = not accepted


ROUTES: dict[str, TaskRoutes] = {
    "feature-extraction": TaskRoutes(("/v1/embeddings",), (TextOutput("embedding", "FP32", 2),)),
    "text-classification": TaskRoutes(("/v1/classify", "/v1/rerank", "/rerank"),
                                      (TextOutput("logits", "FP32", 2), TextOutput("label", "BYTES", 1))),
    "token-classification": TaskRoutes(("/v1/tag",)),
    "question-answering": TaskRoutes(("/v1/answer",)),
    "raw": TaskRoutes(),
    "text-generation": TaskRoutes(("/v1/completions",)),
    "text2text-generation": TaskRoutes(("/v1/completions",)),
}


def routes_for(task: str) -> TaskRoutes:
    """The routes of a registry task (every task has an entry: tests/test_layers.py checks)."""
    return ROUTES[task]


def serving(endpoint: str) -> tuple[str, ...]:
    """The tasks that serve ``endpoint``."""
    return tuple(name for name, routes in ROUTES.items() if endpoint in routes.endpoints)


def text_tasks() -> tuple[str, ...]:
    """The tasks whose models take the KServe ``text`` input."""
    return tuple(name for name, routes in ROUTES.items() if routes.text_outputs)
