"""Evaluation and calibration texts.

The evaluation texts (shipped in ``data/evaluation.txt``) are used for every fidelity number; the
calibration texts (``data/calibration.txt`` by default, or the user's ``--calibration FILE``) only to
collect activation ranges. The two sets are kept disjoint so that no variant is graded on the inputs
it was tuned on. One text per line; blank lines are ignored.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from onnxformer.errors import QuantizationError

_DATA = "data"


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


def _read_user_file(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise QuantizationError(
            f"cannot read calibration file {path} ({e.strerror or e}); pass a readable text file, one text per line"
        ) from None
    try:
        texts = _lines(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise QuantizationError(f"calibration file {path} is not UTF-8 text; pass a text file, one text per line") from None
    if not texts:
        raise QuantizationError(f"calibration file {path} is empty; put one representative text per line")
    return texts
