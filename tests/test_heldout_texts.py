"""The held-out benchmark texts are a third set: disjoint from the evaluation and calibration texts, and diverse."""
from __future__ import annotations

from bench_heldout import heldout_texts

from onnxformer.quantize.texts import calibration_texts, evaluation_texts


def test_heldout_texts_are_a_third_disjoint_and_diverse_set():
    held = heldout_texts()
    assert len(held) == len(set(held)) >= 40
    assert not set(held) & (set(evaluation_texts()) | set(calibration_texts()))
    assert any(len(t.split()) == 1 for t in held) and any(len(t.split()) > 80 for t in held)  # one-word and long
    assert any(not t.isascii() for t in held) and any("SELECT" in t or "def " in t for t in held)  # languages, code
