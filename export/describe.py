"""What every export records about its checkpoint and graph: the typed manifest parts, built once for encoder,
generative and plain-module exports alike."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxformer.artifact.manifest import (
    UNFUSED,
    Architecture,
    TensorSpec,
    TokenizerSpec,
    Variant,
    file_record,
    tensor_spec,
    variant_record,
)
from onnxformer.errors import CheckpointError
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.runtime.session import create_session

FP32_PROVIDERS = ["tensorrt", "cuda", "cpu"]


def save_tokenizer(ckpt: Checkpoint, stage: Path, trust_remote_code: bool, reference: Any = None) -> Any:
    """Save the checkpoint's fast tokenizer into the artifact (the runtime needs tokenizer.json), refused when the
    checkpoint has no tokenizer files or the tokenizer does not fit ``reference`` (the PyTorch model)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt.path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path} has no usable tokenizer ({str(e).splitlines()[0]})") from None
    if not tokenizer.is_fast:
        raise CheckpointError(f"{ckpt.path} has no fast tokenizer (tokenizer.json); the runtime needs one")
    check_tokenizer_files(ckpt.path, tokenizer)
    check_vocabulary(ckpt.path, tokenizer)
    if reference is not None:
        check_tokenizer_fits(ckpt.path, tokenizer, embedding_rows(reference))
    tokenizer.save_pretrained(stage)
    return tokenizer


def check_tokenizer_files(path: Path, tokenizer: Any) -> None:
    """transformers 5 builds a tokenizer class from config.json alone when no vocabulary file is there (a 5-token
    WordPiece vocabulary for BERT: every word becomes [UNK]); refuse that. The files are the class's own
    ``vocab_files_names`` that hold the vocabulary (tokenizer.json, vocab.txt, vocab.json, spiece.model, ...)."""
    names = dict(getattr(tokenizer, "vocab_files_names", None) or {})
    vocabulary = {names[k] for k in ("tokenizer_file", "vocab_file") if isinstance(names.get(k), str)}
    expected = sorted(vocabulary | {"tokenizer.json"})
    if not any((path / f).is_file() for f in expected):
        raise CheckpointError(
            f"{path} has no tokenizer files ({', '.join(expected)} expected beside config.json); without them "
            "transformers makes an empty vocabulary that maps every word to [UNK]. Save the model's tokenizer "
            f"into the checkpoint directory (AutoTokenizer.from_pretrained(SOURCE).save_pretrained({str(path)!r})) "
            "and export again")


def check_vocabulary(path: Path, tokenizer: Any) -> None:
    """A vocabulary of nothing but special tokens (what transformers builds from config.json alone, or what
    ``BertTokenizerFast(vocab_file=...)`` saves under transformers 5, which ignores that argument) turns every word
    into the unknown token: every text then gets the same vector or scores."""
    vocab = tokenizer.get_vocab()
    special = {str(t) for t in tokenizer.all_special_tokens} | set(tokenizer.get_added_vocab())
    if vocab and set(vocab) <= special:
        raise CheckpointError(
            f"{path}: the tokenizer's vocabulary is only its {len(vocab)} special tokens ({', '.join(sorted(vocab))}), "
            f"so every word becomes {tokenizer.unk_token or 'unknown'}; save the model's real tokenizer into the "
            "checkpoint directory (AutoTokenizer.from_pretrained(SOURCE).save_pretrained(CHECKPOINT)) and export again")


def embedding_rows(model: Any) -> int | None:
    """How many token ids the model's input embedding has rows for (None: a model without one)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    rows = getattr(embedding, "num_embeddings", None)
    return int(rows) if isinstance(rows, int) else None


def check_tokenizer_fits(path: Path, tokenizer: Any, rows: int | None) -> None:
    """Every id the tokenizer can emit must be a row of the model's embedding (a smaller vocabulary is fine:
    vocabularies are often padded), and every special token it declares must be in its vocabulary."""
    vocab = tokenizer.get_vocab()  # added tokens included
    missing = sorted({str(t) for t in tokenizer.all_special_tokens if str(t) not in vocab})
    if missing:
        raise CheckpointError(f"{path}: the tokenizer declares special token(s) {', '.join(missing)} that are not in "
                              "its vocabulary; fix tokenizer_config.json / special_tokens_map.json or re-save the "
                              "tokenizer")
    if rows is None or not vocab:
        return
    highest = max(vocab.values())
    if highest >= rows:
        token = next(t for t, i in vocab.items() if i == highest)
        special = sorted(t for t in tokenizer.all_special_tokens if vocab[str(t)] >= rows)
        which = f" (special token(s) {', '.join(special)} among them)" if special else ""
        raise CheckpointError(
            f"{path}: the tokenizer emits ids up to {highest} ({token!r}) but the model's embedding has only {rows} "
            f"rows{which}; it belongs to another model: save this model's own tokenizer into the checkpoint "
            "directory")


def tokenizer_spec(stage: Path, max_length: int, pad_id: int, pad_token: str | None) -> TokenizerSpec:
    """Every file at the artifact root so far (the tokenizer's), hashed."""
    files = [p.name for p in stage.iterdir() if p.is_file() and not p.name.startswith(".")]  # not the stage lock
    return TokenizerSpec(file_record(stage, files), int(max_length), int(pad_id), pad_token)


def io_specs(graph: Path | Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of a graph (a path, or a session already open on it) as ONNX Runtime sees them."""
    session = create_session(graph) if isinstance(graph, Path) else graph
    return [tensor_spec(i) for i in session.get_inputs()], [tensor_spec(o) for o in session.get_outputs()]


def graph_opset(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def architecture(ckpt: Checkpoint) -> Architecture:
    """Sizes from transformers' own config class (it knows each family's attribute names)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(ckpt.path, local_files_only=True)
    return Architecture(
        model_type=ckpt.model_type,
        architectures=list(ckpt.config.get("architectures") or []),
        num_layers=getattr(cfg, "num_hidden_layers", None),
        hidden_size=getattr(cfg, "hidden_size", None),
        num_heads=getattr(cfg, "num_attention_heads", None),
        intermediate_size=getattr(cfg, "intermediate_size", getattr(cfg, "hidden_dim", None)),
        vocab_size=getattr(cfg, "vocab_size", None),
        max_position_embeddings=getattr(cfg, "max_position_embeddings", None),
    )


def fp32_variant(stage: Path, file: str, validation: dict[str, Any], made_by: dict[str, Any],
                 providers: list[str] | None = None, **extra: Any) -> Variant:
    """The reference variant as exported: unfused, measured against PyTorch by the export's validation."""
    return variant_record(stage, file, precision="fp32", providers=providers or FP32_PROVIDERS, made_by=made_by,
                          fidelity={"reference": "pytorch-fp32", "max_abs_diff": validation["max_abs_diff"]},
                          graph=UNFUSED, **extra)
