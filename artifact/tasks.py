"""The task registry: what each task is, once, for every stage.

Export reads the auto class, outputs and tolerance; quantize the budget metric and its default floor;
the runtime the method that serves it and whether it has a tokenizer; the benchmarks the auto class.
What each task means to a protocol lives with its reader: the server's routes in ``serve/task_routes.py``,
optimum's ORTModel classes with that peer in ``benchmarks/bench/availability.py``.
Plain data: importing it imports nothing beyond the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxformer.errors import ArtifactError

ALIASES: dict[str, str] = {  # optimum's / transformers' spellings of our tasks
    "text-generation-with-past": "text-generation",
    "text2text-generation-with-past": "text2text-generation",
    "sequence-classification": "text-classification",
    "default": "feature-extraction",
}


@dataclass(frozen=True)
class Task:
    name: str
    method: str  # what serves it: a Model method ("embed", ...), Generator ("generate") or raw run()
    outputs: tuple[str, ...] = ()  # ONNX output names of the exported graph (empty: whatever the module returns)
    auto_class: str | None = None  # transformers class of the PyTorch reference
    budget_metric: str | None = None  # fidelity metric the accuracy budget applies to
    default_floor: float | None = None
    tokenizer: bool = True  # artifacts of this task ship a tokenizer
    generative: bool = False
    atol: float = 1e-4  # default max |Δ| between ONNX Runtime and PyTorch fp32 at export

    @property
    def encoder(self) -> bool:
        """Served by ``runtime.Model`` (everything that is not generation)."""
        return not self.generative


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("feature-extraction", "embed", ("last_hidden_state",), "AutoModel",
         # 0.997 on the shipped evaluation texts is what held 0.995 on held-out ones (benchmarks/data/heldout.txt):
         # all-MiniLM-L6-v2's int8 at 0.99 kept 2 nodes fp32 and reached 0.9943 held out; at 0.997, 4 and 0.9973
         "min_cosine", 0.997),
    Task("text-classification", "classify", ("logits",), "AutoModelForSequenceClassification",
         # the probabilities users get: 1 - max |Δp| over texts and labels (argmax agreement alone accepted int8
         # classifiers whose scores had moved: issue 26); 0.98 = no score moves by more than 0.02
         "prob_agreement", 0.98),
    Task("token-classification", "tag", ("logits",), "AutoModelForTokenClassification", "token_agreement", 0.95),
    Task("question-answering", "answer", ("start_logits", "end_logits"), "AutoModelForQuestionAnswering",
         "span_agreement", 0.9),
    Task("raw", "run", tokenizer=False),
    Task("text-generation", "generate", ("logits",), "AutoModelForCausalLM", generative=True),
    Task("text2text-generation", "generate", ("logits",), "AutoModelForSeq2SeqLM", generative=True),
)}


def canonical(name: str) -> str:
    """The registry name for ``name`` or one of its aliases (unknown names pass through unchanged)."""
    return ALIASES.get(name, name)


def get_task(name: str, error: type[Exception] = ArtifactError) -> Task:
    """The task called ``name`` (aliases accepted); ``error`` with the known names when there is none."""
    task = TASKS.get(canonical(name))
    if task is None:
        known = ", ".join(TASKS)
        raise error(f"unknown task {name!r}; choose one of: {known}")
    return task


def tasks_where(**flags: object) -> tuple[str, ...]:
    """Names of the tasks whose attributes equal ``flags``, e.g. ``tasks_where(generative=False)``."""
    return tuple(n for n, t in TASKS.items() if all(getattr(t, k) == v for k, v in flags.items()))


def exportable() -> tuple[str, ...]:
    """Tasks ``onnxformer export`` takes from a checkpoint (``raw`` comes from ``export_module``)."""
    return tuple(n for n, t in TASKS.items() if t.auto_class)


def budgeted() -> tuple[str, ...]:
    """Tasks whose variants are measured against an accuracy budget."""
    return tuple(n for n, t in TASKS.items() if t.budget_metric)
