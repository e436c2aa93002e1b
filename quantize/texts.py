"""Evaluation and calibration texts.

The evaluation texts (shipped in ``data/evaluation.txt``) are used for every fidelity number; the
calibration texts (``data/calibration.txt`` by default, or the user's ``--calibration FILE``) only to
collect activation ranges. The two sets are kept disjoint so that no variant is graded on the inputs
it was tuned on. One text per line; blank lines are ignored.

Texts like the user's grade a variant too (``graded_texts``): the user's ``--evaluation FILE``, or, when only
``--calibration FILE`` is given, every fifth of its texts, held out of calibration. They are graded beside the
shipped evaluation texts, and the budget holds on the worst of all.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from onnxformer.errors import QuantizationError

_DATA = "data"
HOLD_OUT_EVERY = 5  # --calibration alone: every 5th text is held out and graded instead of calibrated on
MAX_USER_TEXTS = 64  # the user's texts graded at most (each budget trial runs every graded text)


def _packaged(name: str) -> list[str]:
    text = resources.files("onnxformer.quantize").joinpath(_DATA).joinpath(name).read_text(encoding="utf-8")
    return _lines(text)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def evaluation_texts() -> list[str]:
    """The held-out texts every variant is graded on (several languages, code, one-word, long)."""
    return _packaged("evaluation.txt")


def calibration_texts(path: str | Path | None = None) -> list[str]:
    """Calibration texts from ``path`` (one per line) or the packaged default, minus any evaluation text."""
    texts = _packaged("calibration.txt") if path is None else _read_user_file(Path(path))
    held_out = set(evaluation_texts())
    disjoint = [t for t in texts if t not in held_out]
    if not disjoint:
        raise QuantizationError(
            f"every line of the calibration file {path} is also an evaluation text; "
            "calibrate on texts from your own traffic instead"
        )
    return disjoint


def graded_texts(calibration: str | Path | None = None,
                 evaluation: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(calibration texts, the user's own texts to grade variants on): ``evaluation``'s texts when given, else
    every ``HOLD_OUT_EVERY``-th text of a user ``calibration`` file (held out of calibration), else none; at most
    ``MAX_USER_TEXTS`` of them."""
    texts = calibration_texts(calibration)
    if evaluation is not None:
        return texts, _read_user_file(Path(evaluation), "evaluation")[:MAX_USER_TEXTS]
    if calibration is None or len(texts) < HOLD_OUT_EVERY:
        return texts, []
    held = [t for i, t in enumerate(texts) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1][:MAX_USER_TEXTS]
    kept = set(held)
    return [t for t in texts if t not in kept], held


def _read_user_file(path: Path, kind: str = "calibration") -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise QuantizationError(
            f"cannot read {kind} file {path} ({e.strerror or e}); pass a readable text file, one text per line"
        ) from None
    try:
        texts = _lines(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise QuantizationError(f"{kind} file {path} is not UTF-8 text; pass a text file, one text per line") from None
    if not texts:
        raise QuantizationError(f"{kind} file {path} is empty; put one representative text per line")
    return texts
