"""Plain PyTorch modules export through torch.onnx.export and validate on other shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import manifest_json

from onnxformer.artifact.manifest import load_manifest, verify_variant
from onnxformer.errors import ValidationError
from onnxformer.export.pytorch import export_module


class TinyEncoder(torch.nn.Module):
    """x (B, T, C) → masked mean of an MLP over tokens (B, H)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.mlp(x)  # (B, T, H)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)


def feeds(b: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, t), dtype=np.float32)
    mask[-1, t // 2:] = 0
    return {"x": rng.standard_normal((b, t, 8)).astype(np.float32), "mask": mask}


AXES = {"x": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}, "pooled": {0: "batch"}}


def test_module_export_validates_on_other_shapes(tmp_path):
    torch.manual_seed(0)
    res = export_module(TinyEncoder(), feeds(2, 5), tmp_path / "m", output_names=["pooled"], dynamic_axes=AXES,
                        validation_inputs=[feeds(1, 9, 1), feeds(3, 17, 2)])
    m = manifest_json(tmp_path / "m")
    assert m["task"] == "raw" and m["validation"]["passed"]
    assert [c["shape"] for c in m["validation"]["cases"]] == [[1, 9, 8], [3, 17, 8]]
    assert m["validation"]["max_abs_diff"]["pooled"] < 1e-5
    assert m["inputs"][0]["dynamic_axes"] == {"0": "batch", "1": "seq"}
    verify_variant(tmp_path / "m", load_manifest(tmp_path / "m"), "fp32")
    assert res.manifest.architecture.extra["class"].endswith("TinyEncoder")


def test_module_export_refuses_validation_on_traced_shape_only(tmp_path):
    with pytest.raises(ValidationError, match="all have the traced shapes"):
        export_module(TinyEncoder(), feeds(2, 5), tmp_path / "m", output_names=["pooled"], dynamic_axes=AXES,
                      validation_inputs=[feeds(2, 5, 1)])
    assert not (tmp_path / "m").exists()


def test_module_export_catches_a_static_axis(tmp_path):
    """Without a dynamic sequence axis the graph cannot run other lengths: validation must fail, not pass."""
    with pytest.raises(ValidationError, match=r"cannot run validation-0 .*declare the varying axes as dynamic"):
        export_module(TinyEncoder(), feeds(2, 5), tmp_path / "m", output_names=["pooled"],
                      dynamic_axes={"x": {0: "batch"}, "mask": {0: "batch"}}, validation_inputs=[feeds(1, 9, 1)])
    assert not (tmp_path / "m").exists()


def test_raw_artifact_runs_in_the_runtime(tmp_path):
    from onnxformer.errors import InputError
    from onnxformer.runtime import Model

    torch.manual_seed(0)
    module = TinyEncoder()
    export_module(module, feeds(2, 5), tmp_path / "m", output_names=["pooled"], dynamic_axes=AXES,
                  validation_inputs=[feeds(1, 9, 1)])
    model = Model.load(tmp_path / "m")
    f = feeds(3, 11, 7)
    with torch.inference_mode():
        ref = module(torch.from_numpy(f["x"]), torch.from_numpy(f["mask"])).numpy()
    np.testing.assert_allclose(model.run(f)["pooled"], ref, atol=1e-5)
    with pytest.raises(InputError, match=r"embed\(\) needs a feature-extraction model.*use run\(\)"):
        model.embed(["text"])
