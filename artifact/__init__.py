"""The artifact contract: what every stage shares, beneath all of them.

The typed manifest (``manifest``), the task and family registries (``tasks``, ``families``), graph role names
(``roles``), ONNX↔numpy dtypes (``dtypes``), file, scratch and atomic-save helpers (``files``, ``scratch``,
``onnx_save``), CPU facts (``cpu``) and clock helpers (``timing``). These modules import nothing else of ours
but ``onnxformer.errors``: export and quantize write what they describe, the runtime and the server read it.
Importing ``onnxformer.artifact`` imports no submodule (``onnx_save`` needs ``onnx``; the rest the standard
library and numpy).
"""
