"""Hostile artifacts (files rehashed so they pass sha256 and reach the parsers) are refused in one line, before
serving; variant="auto" passes over a damaged variant to the next one and says so."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnxformer.artifact.manifest import sha256_file
from onnxformer.errors import IntegrityError, OnnxformerError
from onnxformer.runtime import Model


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _save(art: Path, data: dict) -> None:
    (art / "manifest.json").write_text(json.dumps(data))


def _replace_tokenizer_file(art: Path, name: str, content: bytes | None) -> None:
    """Write (or delete) a tokenizer file and record its new hash, as a careless re-packager would."""
    m = _manifest(art)
    files = m["tokenizer"]["files"]
    if content is None:
        (art / name).unlink()
        files.pop(name, None)
    else:
        (art / name).write_bytes(content)
        files[name] = sha256_file(art / name)
    _save(art, m)


def _edit(path: list[str], value):
    def apply(art: Path) -> None:
        m = _manifest(art)
        target = m
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        _save(art, m)
    return apply


HOSTILE = {
    "tokenizer.json malformed": (lambda a: _replace_tokenizer_file(a, "tokenizer.json", b'{"version": '), "tokenizer"),
    "tokenizer.json wrong schema": (lambda a: _replace_tokenizer_file(a, "tokenizer.json", b'{"model": 5}'), "tokenizer"),
    "tokenizer.json random": (lambda a: _replace_tokenizer_file(a, "tokenizer.json", os.urandom(512)), "tokenizer"),
    "tokenizer.json missing": (lambda a: _replace_tokenizer_file(a, "tokenizer.json", None), "tokenizer.json"),
    "tokenizer_config.json malformed": (
        lambda a: _replace_tokenizer_file(a, "tokenizer_config.json", b"[1, 2"), "tokenizer_config.json"),
    "tokenizer_config.json not an object": (
        lambda a: _replace_tokenizer_file(a, "tokenizer_config.json", b"[1, 2]"), "tokenizer_config.json"),
    "variants a list": (_edit(["variants"], ["fp32"]), "variants"),
    "tokenizer.files a string": (_edit(["tokenizer", "files"], "tokenizer.json"), "tokenizer.files"),
    "max_length lots": (_edit(["tokenizer", "max_length"], "lots"), "max_length"),
    "max_length 1e308": (_edit(["tokenizer", "max_length"], 1e308), "max_length"),
    "max_length huge int": (_edit(["tokenizer", "max_length"], 10 ** 30), "max_length"),
    "no tokenizer key": (_edit(["tokenizer"], KeyError), "tokenizer"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_artifact_refused_in_one_line(tiny_artifact, copy_artifact, case):
    art = copy_artifact(tiny_artifact("bert"))
    damage, words = HOSTILE[case]
    damage(art)
    with pytest.raises(OnnxformerError) as e:
        Model.load(art)
    message = str(e.value)
    assert "\n" not in message and words in message, message


def test_no_postprocess_key_still_embeds(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert"))
    _edit(["postprocess"], KeyError)(art)
    vectors = Model.load(art).embed(["hello there"])  # mean pooling, unnormalised: the documented default
    assert vectors.shape[0] == 1


def test_serve_refuses_a_hostile_artifact_in_one_line(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert"))
    _replace_tokenizer_file(art, "tokenizer.json", b"not json")
    r = subprocess.run([sys.executable, "-m", "onnxformer", "serve", str(art), "--port", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert len(lines) == 1 and "tokenizer" in lines[0], lines


def test_auto_falls_back_past_a_damaged_variant_and_says_so(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert"))
    m = _manifest(art)
    (art / "fp32-opt").mkdir()
    shutil.copy(art / "fp32" / "model.onnx", art / "fp32-opt" / "model.onnx")
    fp32 = m["variants"]["fp32"]
    m["variants"]["fp32-opt"] = {**fp32, "file": "fp32-opt/model.onnx", "graph": "fused", "fidelity": {"min_cosine": 1.0},
                                 "files": {"fp32-opt/model.onnx": fp32["sha256"]}}
    _save(art, m)
    # measure=False: the two graphs are the same bytes, so a timing at load would pick either; by the fixed order
    # the fused one is preferred
    assert Model.load(art, measure=False).variant == "fp32-opt"  # preferred when intact
    with open(art / "fp32-opt" / "model.onnx", "ab") as f:
        f.write(b"\0")  # bytes no longer match the manifest's sha256
    model = Model.load(art, measure=False)
    assert model.variant == "fp32" and "fp32-opt failed to open" in model.reason, model.reason
    with pytest.raises(IntegrityError):
        Model.load(art, variant="fp32-opt")  # asked for by name: no silent substitute
