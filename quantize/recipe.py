"""The recipe contract: one small class per way of making a variant, in the spirit of ONNX Runtime's
``Fusion`` classes (one class per pattern, one ``apply``).

A recipe says what it makes (``name``, ``precision``, ``mode``, ``target``, the ``providers`` it
targets), what it starts from (``source``), how it validates the user's options (``check``), how it
builds (``build``: graphs in the scratch directory) and how its fidelity is measured against fp32
(``measure``) and judged (``accept``). The driver ``make`` runs the last three in that order; what it
returns is published by ``source.publish`` — the one publish step for encoder and generative variants.

The recipes themselves and their registry are in ``recipes.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from onnxformer.artifact.manifest import FUSED, REFERENCE, UNFUSED, Manifest
from onnxformer.artifact.roles import MODEL

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """The user's choices a recipe may use; ``Recipe.check`` refuses those that do not apply to it."""

    budget: float | None = None  # fidelity floor on the task's metric (None: the task's default)
    calibration: str | Path | None = None  # calibration text file (None: the packaged texts)
    method: str | None = None  # static int8: calibration method
    smooth: bool = True  # dynamic int8: SmoothQuant first
    source: str | None = None  # --from: the variant to start from (None: the recipe's)
    block_size: int = 32  # generative int4: weights per scale


@dataclass
class RecipeJob:
    """Everything a recipe builds from: verified source graphs, a scratch directory, the fp32 reference."""

    directory: Path
    manifest: Manifest
    origin: str  # the source variant's name
    sources: dict[str, Path]  # role → verified source graph (encoders: one, role MODEL)
    work: Path  # scratch directory inside the artifact
    options: Options
    evaluation: Any  # the fp32 reference on the evaluation texts: fidelity.Evaluation | generative.Reference
    progress: Progress = lambda _: None
    floor: float | None = None  # the budget the variant is held to (None: measured, not held)
    calibration: Sequence[str] = ()  # calibration texts (ranges, guard inputs, smoothing)
    reference: Path | None = None  # the fp32 graph (latency ratios are against it)
    origin_fused: bool = False  # the source graph holds ONNX Runtime's fused operators
    origin_made_by: dict[str, Any] = field(default_factory=dict)  # how the source variant was made

    @property
    def source(self) -> Path:
        return self.sources[MODEL]


@dataclass
class Built:
    """A variant built in the scratch directory, not yet published."""

    name: str
    precision: str
    providers: list[str]
    graph: str  # FUSED | UNFUSED
    graphs: dict[str, Path]  # role → graph file (its external data beside it, named after it)
    made_by: dict[str, Any]
    fidelity: dict[str, Any] = field(default_factory=dict)
    main: str = MODEL  # the role whose graph is the variant's ``file``
    generative: bool = False  # record every graph as a generation component
    speed_cpu: dict[str, Any] | None = None
    cache_dtype: str | None = None
    activation_scales: str | None = None  # PER_CALL (dynamic int8) or STATIC_SCALES; None: no int8 activations

    @property
    def path(self) -> Path:
        return self.graphs[self.main]


class Recipe:
    """One way of making a variant. Subclasses set the class attributes and implement ``build`` (and, where
    the default does not fit, ``check``, ``measure`` and ``accept``)."""

    name: ClassVar[str]  # the variant's name in the artifact
    precision: ClassVar[str]  # fp32 | fp16 | int8 | int4
    mode: ClassVar[str | None] = None  # int8: dynamic | static
    target: ClassVar[str | None] = None  # the provider it is made for (None: every one of ``providers``)
    source: ClassVar[str] = REFERENCE  # the variant it starts from
    providers: ClassVar[tuple[str, ...]]  # the providers the variant targets
    fuses: ClassVar[bool] = False  # it adds ONNX Runtime's fused operators itself
    generative: ClassVar[bool] = False  # made for generative artifacts (`quantize-generative`)
    default: ClassVar[bool] = False  # chosen by ``--precision`` alone (and its mode when --mode is omitted)

    def check(self, options: Options) -> None:
        """Refuse options that do not apply to this recipe (before anything is read or built)."""

    def build(self, job: RecipeJob) -> Built:
        raise NotImplementedError

    def measure(self, job: RecipeJob, built: Built) -> dict[str, Any]:
        """Fidelity of the built graphs against the fp32 reference."""
        return job.evaluation.measure(built.path)

    def accept(self, job: RecipeJob, built: Built) -> None:
        """Refuse a variant whose measured fidelity falls short (a QuantizationError saying what to do)."""

    def built(self, job: RecipeJob, graphs: dict[str, Path], made_by: dict[str, Any], **fields: Any) -> Built:
        """A ``Built`` of this recipe: made ``from`` the source variant (with the fusions it carries), and
        fused when the recipe fuses or its source graph was fused (quantizers keep the fused operators)."""
        made_by = {"from": job.origin, **made_by}
        if "fused_ops" in job.origin_made_by:
            made_by["fused_ops"] = job.origin_made_by["fused_ops"]
        graph = FUSED if self.fuses or job.origin_fused else UNFUSED
        return Built(self.name, self.precision, list(self.providers), graph, graphs, made_by,
                     generative=self.generative, **fields)


def make(recipe: Recipe, job: RecipeJob) -> Built:
    """Build, measure, accept: a variant ready for ``source.publish`` (or a QuantizationError)."""
    built = recipe.build(job)
    job.progress(f"{recipe.name}: measuring against {REFERENCE}")
    built.fidelity = recipe.measure(job, built)
    recipe.accept(job, built)
    return built
