def test_tiny_artifact_embeds(tiny_artifact):
    from onnxformer.runtime import Model

    m = Model.load(tiny_artifact("bert"))
    assert m.embed(["hello world", "x"]).shape == (2, 32)
