"""The artifact manifest: the single source of truth that connects export → quantize → runtime.

A manifest is plain JSON (``manifest.json`` at the artifact root). This module knows its schema
version, loads and checks it, writes it atomically, and verifies variant files against it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxformer.errors import ArtifactError, IntegrityError
from onnxformer.runtime.files import atomic_write_json, confined, sha256_file

FORMAT = "onnxformer-artifact"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("format", "schema_version", "task", "architecture", "inputs", "outputs", "variants")


def is_artifact(directory: str | Path) -> bool:
    """True when ``directory`` holds a manifest of ours (any schema version)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and check the manifest of an artifact directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist; run `onnxformer export` first")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory} has no {MANIFEST_NAME}: not an onnxformer artifact (run `onnxformer export`)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-export the model") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an onnxformer manifest (format != {FORMAT!r})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema version {version!r}; this onnxformer reads version {SCHEMA_VERSION}. "
            "Re-export the model with this version of onnxformer"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks required keys {missing}; re-export the model")
    return manifest


def save_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / MANIFEST_NAME, manifest)


def file_record(directory: Path, relative_paths: list[str]) -> dict[str, str]:
    """sha256 of each file, keyed by its path relative to the artifact directory."""
    return {rel: sha256_file(confined(directory, rel)) for rel in sorted(relative_paths)}


def variant_record(
    directory: str | Path,
    file: str,
    *,
    precision: str,
    providers: list[str],
    made_by: dict[str, Any],
    fidelity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe one variant: its ONNX file plus every sibling file (external data), hashed."""
    directory = Path(directory)
    main = confined(directory, file)
    siblings = [str(p.relative_to(directory.resolve())) for p in sorted(main.parent.iterdir()) if p.is_file()]
    files = file_record(directory, siblings)
    return {
        "file": file,
        "sha256": files[file],
        "files": files,
        "size_bytes": sum((directory / f).stat().st_size for f in files),
        "precision": precision,
        "providers": providers,
        "made_by": made_by,
        "fidelity": fidelity or {},
    }


def add_variant(directory: str | Path, name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) a variant in the manifest, atomically. Returns the new manifest."""
    manifest = load_manifest(directory)
    manifest["variants"][name] = record
    save_manifest(directory, manifest)
    return manifest


def verify_files(directory: str | Path, files: dict[str, str]) -> None:
    """Check that every file is inside ``directory`` and matches its recorded sha256."""
    directory = Path(directory)
    for rel, expected in files.items():
        path = confined(directory, rel)
        if not path.is_file():
            raise IntegrityError(f"{rel} is listed in the manifest but missing from {directory}; re-export the model")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{rel} does not match the manifest (sha256 {actual[:12]}… != {expected[:12]}…): "
                "the file was modified or corrupted; re-export or re-quantize it"
            )


def verify_variant(directory: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """Verify a variant's files and return the path of its ONNX graph."""
    variants = manifest["variants"]
    if name not in variants:
        raise ArtifactError(f"variant {name!r} not in this artifact; available: {sorted(variants)}")
    record = variants[name]
    files = dict(record.get("files") or {})
    files.setdefault(record["file"], record["sha256"])
    verify_files(directory, files)
    return confined(Path(directory), record["file"])
