"""Graph roles: the name of each ONNX graph of a variant (its ``components`` in the manifest), and the file
each role is written to at export. One definition that export, quantize and the runtime read."""
from __future__ import annotations

MODEL = "model"  # an encoder's (or a raw module's) one graph
DECODER = "decoder"  # a decoder-only model's graph; a seq2seq model's first decoder step
ENCODER = "encoder"  # a seq2seq model's encoder
DECODER_WITH_PAST = "decoder_with_past"  # a seq2seq model's decoder step after the first
SLOTS = "decoder_slots"  # the decoder's slot graph: continuous batching, cache written in place

# Graph files per generation kind (the names optimum gave them, kept for existing artifacts and the runtime).
GENERATIVE_FILES: dict[str, dict[str, str]] = {
    "decoder": {DECODER: "model.onnx"},
    "seq2seq": {ENCODER: "encoder_model.onnx", DECODER: "decoder_model.onnx",
                DECODER_WITH_PAST: "decoder_with_past_model.onnx"},
}
SLOTS_FILE = "model_slots.onnx"
