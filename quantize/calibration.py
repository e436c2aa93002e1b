"""Calibration for static quantization: the texts become ONNX feeds, ORT's calibrators turn them into ranges."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from onnxformer.artifact.manifest import Manifest
from onnxformer.errors import QuantizationError
from onnxformer.quantize.fidelity import evaluation_feeds

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def calibration_method(name: str) -> CalibrationMethod:
    if name not in METHODS:
        raise QuantizationError(f"unknown calibration method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


class TextReader(CalibrationDataReader):
    """Feeds one tokenized text at a time (batch 1, unpadded) so padding never skews a range."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def text_reader(directory: Path, manifest: Manifest, texts: Sequence[str], length: int = 128) -> TextReader:
    """Feeds of one fixed length: ORT's histogram calibrators (Entropy, Percentile) need equal shapes."""
    length = min(length, manifest.max_length or length)
    pad_id = manifest.tokenizer.pad_id if manifest.tokenizer else 0
    return TextReader([_pad(f, length, pad_id) for f in evaluation_feeds(directory, manifest, texts)])


def _pad(feeds: dict[str, np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad (B, T) feeds to (B, length) as the tokenizer would: pad ids, mask 0, type 0."""
    out = {}
    for name, value in feeds.items():
        value = value[:, :length]
        fill = pad_id if name == "input_ids" else 0
        out[name] = np.pad(value, ((0, 0), (0, length - value.shape[1])), constant_values=fill)
    return out
