"""A sentence-transformers checkpoint's pipeline, read through sentence-transformers itself.

Its module configs have changed format over releases (``pooling_mode_mean_tokens: true`` then
``pooling_mode: "mean"``); sentence-transformers reads every format it wrote, so we ask it rather than
parse the files. What the runtime needs goes into the manifest's ``postprocess``: pooling, Normalize,
``truncate_dim`` (Matryoshka), the prompts and the default prompt, and the sequence limit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxformer.errors import CheckpointError

# sentence-transformers' Pooling.pooling_mode → the runtime's pooling (runtime/pooling.py)
POOLING = {"mean": "mean", "cls": "cls", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len", "lasttoken": "last"}
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def read_sentence_transformers(path: Path) -> dict[str, Any] | None:
    """The pipeline of the sentence-transformers checkpoint at ``path`` (None: not one)."""
    if not (path / "modules.json").is_file():
        return None
    model = _load(path)
    info: dict[str, Any] = {"pooling": "cls", "normalize": False, "max_seq_length": model.max_seq_length,
                            "truncate_dim": model.truncate_dim, "prompts": dict(model.prompts or {}),
                            "default_prompt_name": model.default_prompt_name}
    for module in model:
        kind = type(module).__name__
        if kind == "Pooling":
            info["pooling"] = _pooling(module)
        elif kind == "Normalize":
            info["normalize"] = True
        elif kind != "Transformer":
            raise CheckpointError(f"sentence-transformers module {kind} is not supported yet (supported: "
                                  f"{', '.join(SUPPORTED_MODULES)}); export the checkpoint's transformer alone")
    info["prompts"] = {k: v for k, v in info["prompts"].items() if v}  # ST fills in empty placeholders
    return info


def _load(path: Path) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CheckpointError(f"{path} is a sentence-transformers checkpoint; reading it needs "
                              "sentence-transformers (pip install 'onnxformer[export]')") from None
    try:  # trust_remote_code stays off: a checkpoint that needs its own code is refused by the export first
        return SentenceTransformer(str(path), device="cpu", local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"sentence-transformers could not read {path}: {first}") from None


def _pooling(module: Any) -> str:
    mode = getattr(module, "pooling_mode", None)
    modes = list(mode) if isinstance(mode, (list, tuple)) else [mode]
    if len(modes) != 1 or modes[0] not in POOLING:
        raise CheckpointError(f"sentence-transformers pooling {modes} is not supported; use exactly one of "
                              f"{', '.join(POOLING)}")
    if getattr(module, "include_prompt", True) is False:
        raise CheckpointError("sentence-transformers Pooling(include_prompt=False) is not supported yet: the "
                              "runtime pools over the prompt's tokens too")
    return POOLING[modes[0]]
