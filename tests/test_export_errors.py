"""Every bad input to `onnxformer export` fails with one clear line, exit 1, and no loadable artifact."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnxformer.cli import main
from onnxformer.errors import ArtifactError, CheckpointError, ValidationError
from onnxformer.export import export_checkpoint
from onnxformer.artifact.manifest import is_artifact


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".staging-" in p.name or p.name.startswith(".optimum-")]


def test_missing_path(capsys, tmp_path):
    code, err = run_cli(capsys, "export", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 1
    assert err == f"onnxformer: error: {tmp_path / 'nope'} does not exist; pass a local Hugging Face checkpoint directory"
    assert not (tmp_path / "o").exists()


def test_not_a_checkpoint(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "export", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 1 and "is not a Hugging Face checkpoint: it has no config.json" in err
    assert "\n" not in err


def test_unsupported_architecture_lists_supported(capsys, tmp_path):
    ckpt = tmp_path / "swin"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "swin"}))
    (ckpt / "model.safetensors").write_bytes(b"")
    code, err = run_cli(capsys, "export", str(ckpt), "--out", str(tmp_path / "o"))
    assert code == 1
    assert "unsupported architecture 'swin'" in err and "bert" in err and "xlm-roberta" in err


def test_unknown_task(capsys, tiny_checkpoint, tmp_path):
    code, err = run_cli(capsys, "export", str(tiny_checkpoint()), "--out", str(tmp_path / "o"), "--task", "translation")
    assert code == 1 and "unknown task 'translation'; choose one of: feature-extraction" in err
    assert not (tmp_path / "o").exists()


def test_hub_id_offline_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(capsys, "export", "sentence-transformers/all-MiniLM-L6-v2", "--out", str(tmp_path / "o"))
    assert code == 1 and "Hugging Face Hub is disabled (HF_HUB_OFFLINE)" in err and "\n" not in err


def test_refuses_foreign_output_dir_unless_overwrite(capsys, tiny_checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = run_cli(capsys, "export", str(tiny_checkpoint()), "--out", str(out))
    assert code == 1 and "exists and is not an onnxformer artifact" in err and "--overwrite" in err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["export", str(tiny_checkpoint()), "--out", str(out), "--overwrite"]) == 0
    assert is_artifact(out) and not (out / "precious.txt").exists()


def test_reexport_over_own_artifact_is_allowed_with_overwrite(tiny_checkpoint, tmp_path):
    out = tmp_path / "a"
    export_checkpoint(str(tiny_checkpoint()), out)
    export_checkpoint(str(tiny_checkpoint()), out, overwrite=True)  # without it: refused (issue 16, defect 2)
    assert is_artifact(out) and no_leftovers(tmp_path)


def test_pickle_weights_refused_unless_allowed(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("bert", "feature-extraction", safetensors=False)
    assert (ckpt / "pytorch_model.bin").exists() and not list(ckpt.glob("*.safetensors"))
    with pytest.raises(CheckpointError, match="only pickle weights .* pass --allow-pickle"):
        export_checkpoint(str(ckpt), tmp_path / "o")
    assert not (tmp_path / "o").exists()
    res = export_checkpoint(str(ckpt), tmp_path / "o", allow_pickle=True)
    assert res.manifest.source["weight_format"] == "pickle"


def test_failed_validation_leaves_nothing(tiny_checkpoint, tmp_path):
    with pytest.raises(ValidationError, match=r"differs from PyTorch by .* > atol 1e-12"):
        export_checkpoint(str(tiny_checkpoint()), tmp_path / "o", atol=1e-12)
    assert not (tmp_path / "o").exists()
    assert no_leftovers(tmp_path)


def test_failed_reexport_keeps_previous_artifact(tiny_checkpoint, tmp_path):
    out = tmp_path / "a"
    export_checkpoint(str(tiny_checkpoint()), out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ValidationError):
        export_checkpoint(str(tiny_checkpoint()), out, atol=1e-12, overwrite=True)
    assert (out / "manifest.json").read_bytes() == before


def test_reexport_without_overwrite_keeps_the_artifact_and_its_variants(capsys, tiny_checkpoint, tmp_path):
    """Issue 16, defect 2: a re-export silently replaced an artifact and dropped its variants."""
    from onnxformer.cli import main

    out = tmp_path / "a"
    assert main(["export", str(tiny_checkpoint()), "--out", str(out)]) == 0
    assert main(["optimize", str(out)]) == 0
    before = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["export", str(tiny_checkpoint()), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already holds an onnxformer artifact; pass --overwrite" in err and err.strip().count("\n") == 0
    assert (out / "manifest.json").read_bytes() == before and (out / "fp32-opt" / "model.onnx").is_file()
    assert main(["export", str(tiny_checkpoint()), "--out", str(out), "--overwrite"]) == 0
    assert sorted(json.loads((out / "manifest.json").read_text())["variants"]) == ["fp32"]


def test_everything_written_is_readable_as_the_umask_says(tiny_checkpoint, tmp_path):
    """Issue 16, defect 3: mkstemp/mkdtemp made artifacts 0700 and manifest.json 0600 (unreadable by a server
    running as another user or by a Triton container)."""
    import stat

    from onnxformer.cli import main

    old = os.umask(0o022)
    try:
        out = tmp_path / "a"
        assert main(["export", str(tiny_checkpoint()), "--out", str(out)]) == 0
        assert main(["triton", str(out), "--repo", str(tmp_path / "repo")]) == 0
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(out) == 0o755 and mode(out / "fp32") == 0o755
    assert mode(out / "manifest.json") == 0o644 and mode(out / "fp32" / "model.onnx") == 0o644
    (config,) = (tmp_path / "repo").rglob("config.pbtxt")
    assert mode(config) == 0o644 and mode(config.parent) == 0o755 and mode(config.parent / "1") == 0o755


def test_output_is_a_file(tiny_checkpoint, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match="exists and is a file"):
        export_checkpoint(str(tiny_checkpoint()), tmp_path / "f")


def test_cli_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxformer", "export", str(tmp_path / "x"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
