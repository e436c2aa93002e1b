"""fp16, int8 (dynamic) and int4 (MatMulNBits, weight-only) variants of generative artifacts.

The recipes (recipes.py) convert every graph of the model (the decoder, or encoder + both seq2seq
decoders) with ONNX Runtime's own tooling; this module drives them and measures. Fidelity against
the fp32 variant is measured teacher-forced on the evaluation texts (the prompt-processing graph sees
the whole text; logits at every position):

- ``next_token_agreement``: fraction of positions where the variant's argmax equals fp32's;
- ``perplexity`` of each on the texts themselves and ``perplexity_delta`` (variant / fp32 − 1).

Each variant is published like every other one (``source.publish``), fidelity included.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from onnxformer.artifact.dtypes import from_ort
from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import REFERENCE, Manifest, load_manifest
from onnxformer.artifact.roles import DECODER, ENCODER, SLOTS
from onnxformer.errors import QuantizationError
from onnxformer.quantize.plan import generative_names, generative_recipes
from onnxformer.quantize.recipe import Options, Recipe, RecipeJob, make
from onnxformer.quantize.source import publish, scratch_dir
from onnxformer.quantize.texts import evaluation_texts
from onnxformer.runtime.generation import Generator
from onnxformer.runtime.session import create_session

Progress = Callable[[str], None]
Logits = list[tuple[np.ndarray, np.ndarray]]  # per text: (logits (T, V) float32, next-token targets (T,))


def quantize_generative(directory: str | Path, variants: Sequence[str] | None = None, *, block_size: int = 32,
                        texts: Sequence[str] | None = None, progress: Progress = lambda _: None) -> Manifest:
    """Add ``variants`` (default: every generative recipe) to a generative artifact, each published as soon
    as it is measured; returns the updated manifest."""
    quantizer = GenerativeQuantizer.open(directory, variants, block_size=block_size, texts=texts, progress=progress)
    manifest = quantizer.manifest
    for recipe in quantizer.recipes:
        manifest = quantizer.add(recipe)
    return manifest


@dataclass
class Reference:
    """The fp32 generator and its teacher-forced logits on the evaluation texts."""

    generator: Generator
    texts: list[str]
    logits: Logits

    @classmethod
    def load(cls, directory: Path, texts: Sequence[str]) -> Reference:
        generator = Generator.load(directory, provider="cpu", variant=REFERENCE)  # every fp32 graph verified
        return cls(generator, list(texts), teacher_forced_logits(generator, texts))

    def measure(self, graphs: dict[str, Path]) -> dict[str, Any]:
        """Fidelity of the graphs of a variant (role → path) against fp32."""
        # The slot graph (same weights, same recipe) is not measured: teacher forcing runs the solo graphs
        sessions = {role: create_session(path) for role, path in graphs.items() if role != SLOTS}
        return fidelity(self.logits, teacher_forced_logits(self.generator, self.texts, sessions))


@dataclass
class GenerativeQuantizer:
    """One artifact's generative recipes, checked, and the fp32 reference they are measured against."""

    directory: Path
    manifest: Manifest
    recipes: list[Recipe]
    options: Options
    reference: Reference
    progress: Progress

    @classmethod
    def open(cls, directory: str | Path, variants: Sequence[str] | None = None, *, block_size: int = 32,
             texts: Sequence[str] | None = None, progress: Progress = lambda _: None) -> GenerativeQuantizer:
        directory = Path(directory)
        manifest = load_manifest(directory)
        if manifest.generation is None:
            raise QuantizationError(f"{directory} is not a generative artifact; use `onnxformer quantize` for encoders")
        recipes = generative_recipes(generative_names() if variants is None else list(variants))
        options = Options(block_size=block_size)
        for recipe in recipes:
            recipe.check(options)
        reference = Reference.load(directory, list(texts or evaluation_texts()))
        return cls(directory, manifest, recipes, options, reference, progress)

    def add(self, recipe: Recipe) -> Manifest:
        """Convert, measure and publish one variant; returns the updated manifest."""
        start = time.perf_counter()
        fp32 = self.manifest.variant(REFERENCE)
        with scratch_dir(self.directory) as work:
            self.progress(f"{recipe.name}: converting")
            sources = {role: confined(self.directory, rel) for role, rel in fp32.components.items()}
            job = RecipeJob(self.directory, self.manifest, REFERENCE, sources, work, self.options, self.reference,
                      self.progress, origin_fused=fp32.fused, origin_made_by=fp32.made_by)
            built = make(recipe, job)
            built.made_by["seconds"] = round(time.perf_counter() - start, 2)
            return publish(self.directory, built)


def teacher_forced_logits(gen: Generator, texts: Sequence[str], sessions: dict[str, Any] | None = None) -> Logits:
    """(logits (T, V) float32, next-token targets (T,)) per text, each text alone (batch 1), from ``sessions``
    (default: the generator's own)."""
    sessions = sessions or gen.sessions
    out = []
    for text in texts:
        prompts = gen.prompts.encode([text], gen.max_positions, True, "positions")
        ids = prompts.ids
        if gen.kind == "decoder":
            logits = decoder_logits(sessions[DECODER], ids)[:-1]
            targets = ids[0, 1:]
        else:  # the source is also the target: the decoder sees start + text[:-1]
            start = np.full((1, 1), gen.start_id, dtype=np.int64)
            decoder_ids = np.concatenate([start, ids[:, :-1]], axis=1)
            logits = seq2seq_logits(sessions, ids, decoder_ids)
            targets = ids[0]
        out.append((logits.astype(np.float32), targets))
    return out


def decoder_logits(session: Any, ids: np.ndarray) -> np.ndarray:
    """Logits of every position of one unpadded sequence, run with an empty cache."""
    ones = np.ones_like(ids)
    feeds = {"input_ids": ids, "attention_mask": ones, "position_ids": np.cumsum(ones, axis=1) - 1,
             "logits_to_keep": np.array([0], dtype=np.int64)}  # 0: every position
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=from_ort(i.type).numpy)
    names = {i.name for i in session.get_inputs()}
    return session.run(["logits"], {k: v for k, v in feeds.items() if k in names})[0][0]


def seq2seq_logits(sessions: dict[str, Any], src: np.ndarray, decoder_ids: np.ndarray) -> np.ndarray:
    mask = np.ones_like(src)
    hidden = sessions[ENCODER].run(["last_hidden_state"], {"input_ids": src, "attention_mask": mask})[0]
    feeds = {"input_ids": decoder_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    return sessions[DECODER].run(["logits"], feeds)[0][0]


def fidelity(reference: Logits, variant: Logits) -> dict[str, Any]:
    agree = total = 0
    nll_ref, nll_var = [], []
    for (ref, targets), (got, _) in zip(reference, variant):
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += len(targets)
        nll_ref.append(_nll(ref, targets))
        nll_var.append(_nll(got, targets))
    ppl_ref = float(np.exp(np.concatenate(nll_ref).mean()))
    ppl_var = float(np.exp(np.concatenate(nll_var).mean()))
    return {"reference": "fp32", "texts": len(reference), "positions": total,
            "next_token_agreement": agree / total, "perplexity": ppl_var, "perplexity_fp32": ppl_ref,
            "perplexity_delta": ppl_var / ppl_ref - 1.0}


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)  # log-softmax, max-shifted
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(targets)), targets]
