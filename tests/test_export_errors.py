"""Every bad input to `onnxformer export` fails with one clear line, exit 1, and no loadable artifact."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnxformer.artifact.manifest import is_artifact
from onnxformer.cli import main
from onnxformer.errors import ArtifactError, CheckpointError, ValidationError
from onnxformer.export import export_checkpoint


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


# --- the tokenizer (issue 26, item 1): none, a degenerate one, or one that does not fit the model is refused --------

def _weights_only(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(src / f, dst / f)
    return dst


def test_checkpoint_without_tokenizer_files_is_refused_in_one_line(capsys, tiny_checkpoint, tmp_path):
    """transformers builds a 5-token WordPiece vocabulary from config.json alone: every word [UNK], one score for
    every text. Refused, naming where the tokenizer is expected and how to put it there."""
    ckpt = _weights_only(tiny_checkpoint("bert", "text-classification"), tmp_path / "ckpt")
    code, err = run_cli(capsys, "export", str(ckpt), "--out", str(tmp_path / "o"))
    err = err.splitlines()[-1]  # after the progress lines: the one error line
    assert code == 1 and err.startswith("onnxformer: error: "), err
    assert f"{ckpt} has no tokenizer files" in err and "tokenizer.json" in err and "vocab.txt" in err, err
    assert "save_pretrained" in err, err
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


def test_a_vocabulary_of_special_tokens_only_is_refused(tiny_checkpoint, tmp_path):
    """What ``BertTokenizerFast(vocab_file=...)`` saves under transformers 5 (it ignores the file): the five
    special tokens alone, in a tokenizer.json that is present."""
    from transformers import BertTokenizerFast

    ckpt = _weights_only(tiny_checkpoint("bert", "text-classification"), tmp_path / "ckpt")
    BertTokenizerFast(vocab_file="ignored.txt").save_pretrained(ckpt)
    with pytest.raises(CheckpointError, match=r"vocabulary is only its 5 special tokens .* every word becomes \[UNK\]"):
        export_checkpoint(str(ckpt), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def _bert_with_vocab(directory: Path, rows: int, tokenizer_from: Path) -> Path:
    """A tiny BERT whose embedding has ``rows`` rows, saved with ``tokenizer_from``'s tokenizer files."""
    from conftest import tiny_config
    from transformers import AutoModel

    config = tiny_config("bert", "feature-extraction")
    config.vocab_size = rows
    AutoModel.from_config(config).save_pretrained(directory)
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(f, directory / f.name)
    return directory


def test_tokenizer_with_more_ids_than_the_embedding_is_refused(tiny_checkpoint, tmp_path):
    ckpt = _bert_with_vocab(tmp_path / "ckpt", 1000, tiny_checkpoint())  # 30522-token vocabulary, 1000 rows
    with pytest.raises(CheckpointError, match=r"emits ids up to 30521 .* has only 1000 rows; it belongs to another"):
        export_checkpoint(str(ckpt), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_special_token_outside_the_vocabulary_is_refused(tiny_checkpoint, tmp_path):
    """A special token the vocabulary lacks gets an id past it (transformers adds it): out of the embedding."""
    ckpt = _bert_with_vocab(tmp_path / "ckpt", 30522, tiny_checkpoint())
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "<mask>"}))
    with pytest.raises(CheckpointError, match=r"emits ids up to 30522 \('<mask>'\) .* only 30522 rows .*<mask>"):
        export_checkpoint(str(ckpt), tmp_path / "o")


def test_smaller_vocabulary_than_the_embedding_exports(tiny_checkpoint, tmp_path):
    """Padded vocabularies are common (embedding rows rounded up to a multiple of 64): fine."""
    ckpt = _bert_with_vocab(tmp_path / "ckpt", 30592, tiny_checkpoint())
    assert export_checkpoint(str(ckpt), tmp_path / "o").manifest.architecture.vocab_size == 30592
