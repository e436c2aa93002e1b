"""`Model`: load a verified artifact and run it — embeddings or raw outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnxformer.errors import InputError
from onnxformer.runtime.files import confined
from onnxformer.runtime.manifest import load_manifest, verify_files, verify_variant
from onnxformer.runtime.pooling import l2_normalize, pool
from onnxformer.runtime.session import create_session
from onnxformer.runtime.tokenizer import TextTokenizer


class Model:
    """A loaded artifact. Thread-safe: ONNX Runtime sessions and the tokenizer are shared read-only."""

    def __init__(self, directory: Path, manifest: dict[str, Any], variant: str, session: Any, tokenizer: TextTokenizer):
        self.directory = directory
        self.manifest = manifest
        self.variant = variant
        self.session = session
        self.tokenizer = tokenizer
        self.task: str = manifest["task"]
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def load(cls, directory: str | Path, variant: str = "fp32", threads: int | None = None) -> "Model":
        directory = Path(directory)
        manifest = load_manifest(directory)
        path = verify_variant(directory, manifest, variant)  # sha256 checked before ORT sees the file
        tok_spec = manifest["tokenizer"]
        verify_files(directory, tok_spec["files"])
        session = create_session(path, threads=threads)
        inputs = [i.name for i in session.get_inputs()]
        tokenizer = TextTokenizer(confined(directory, "tokenizer.json"), tok_spec, inputs)
        return cls(directory, manifest, variant, session, tokenizer)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw tensors in, raw tensors out (names as in the manifest)."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing inputs {missing}; this model takes {self.input_names}")
        outputs = self.session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outputs))

    def embed(self, texts: Sequence[str], truncate: bool = False, normalize: bool | None = None) -> np.ndarray:
        """Sentence embeddings (N, C), pooled and normalised as the checkpoint specifies."""
        if self.task != "feature-extraction":
            raise InputError(f"embed() needs a feature-extraction model; this one is {self.task}")
        post = self.manifest["postprocess"]
        batch = self.tokenizer.encode(texts, truncate=truncate)
        states = self.run(batch.feeds)["last_hidden_state"]  # (B, T, C)
        pooled = pool(states, batch.feeds["attention_mask"], post["pooling"])  # (B, C)
        if normalize if normalize is not None else post.get("normalize", False):
            pooled = l2_normalize(pooled)
        return pooled.astype(np.float32)

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 32, **options: Any) -> str | list[str]:
        """Text generation (text-generation / text2text-generation artifacts); see runtime/generation."""
        return self._generator().generate(prompts, max_new_tokens, **options)

    def stream(self, prompt: str, max_new_tokens: int = 32, **options: Any) -> Any:
        """Yield generated text as it is produced; joined it equals ``generate(prompt)``."""
        return self._generator().stream(prompt, max_new_tokens, **options)

    def _generator(self) -> Any:
        from onnxformer.runtime.generation import Generator  # lazy: encoder users never load it

        if getattr(self, "_generation", None) is None:
            self._generation = Generator.from_model(self)
        return self._generation

    def __repr__(self) -> str:
        return f"Model({str(self.directory)!r}, task={self.task!r}, variant={self.variant!r})"


