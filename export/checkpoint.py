"""Inspect a Hugging Face checkpoint directory before anything loads it: what it is, and whether it is safe."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxformer.artifact.files import sha256_file
from onnxformer.errors import CheckpointError
from onnxformer.export.st_config import read_sentence_transformers

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weight_files: list[str]
    weight_format: str  # "safetensors" | "pickle"
    sentence_transformers: dict[str, Any] | None = None  # export/st_config.py: pooling, normalize, prompts, ...
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    def fingerprint(self) -> dict[str, Any]:
        """sha256 of every file that determines the model's numbers."""
        files = ["config.json", *self.weight_files]
        return {
            "path": str(self.path),
            "weight_format": self.weight_format,
            "sha256": {f: sha256_file(self.path / f) for f in files},
        }


def resolve_model_path(model: str) -> Path:
    """A local directory, or a hub id downloaded where the hub is reachable."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{model} is a file; pass the checkpoint *directory* (with config.json)")
        return path.resolve()
    if not _HUB_ID.match(model) or model.startswith(("/", ".", "~")):
        raise CheckpointError(f"{model} does not exist; pass a local Hugging Face checkpoint directory")
    return _download_from_hub(model)


def _download_from_hub(repo_id: str) -> Path:
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise CheckpointError(
            f"{repo_id} is not a local directory and the Hugging Face Hub is disabled (HF_HUB_OFFLINE); "
            "download the checkpoint elsewhere and pass its directory"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "1_*/*"]))
    except Exception as e:  # network, auth, not found: all mean "cannot get it from here"
        raise CheckpointError(
            f"{repo_id} is not a local directory and could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}); download it elsewhere and pass its directory"
        ) from None


def inspect_checkpoint(path: Path, allow_pickle: bool = False) -> Checkpoint:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a Hugging Face checkpoint: it has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{config_path} is not valid JSON ({e})") from None
    if "model_type" not in config:
        raise CheckpointError(f"{config_path} has no model_type; is this a transformers checkpoint?")
    weights, fmt = _weight_files(path, allow_pickle)
    return Checkpoint(path, config, weights, fmt, read_sentence_transformers(path))


def _weight_files(path: Path, allow_pickle: bool) -> tuple[list[str], str]:
    safetensors = sorted(p.name for p in path.glob("*.safetensors"))
    if safetensors:
        return safetensors, "safetensors"
    pickles = sorted(p.name for p in path.glob("pytorch_model*.bin"))
    if not pickles:
        raise CheckpointError(f"{path} has no weights (model.safetensors or pytorch_model.bin)")
    if not allow_pickle:
        raise CheckpointError(
            f"{path} has only pickle weights ({pickles[0]}), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickle to load them with torch.load(weights_only=True)"
        )
    return pickles, "pickle"
