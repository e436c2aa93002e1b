"""Running a session: plain ``session.run``, or I/O binding with device-resident buffers reused across calls.

With I/O binding, each thread owns one flat buffer per input and output, sized to the largest call so far
(grown by doubling) and bound with the exact shape of the current call, so steady-state calls allocate
nothing on the device. On CUDA the inputs are copied host→device into their reused buffers; on CPU the same
code binds host memory directly — which is how the path is tested without a GPU.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.dtypes import DTYPES, from_ort, numpy_name
from onnxformer.errors import InputError

_MIN_CAPACITY = 1024


class Runner:
    """Thread-safe: the session is shared; binding buffers are per thread."""

    def __init__(self, session: ort.InferenceSession, io_binding: bool = False, device: str = "cpu", device_id: int = 0):
        self.session = session
        self.io_binding = io_binding
        self.device, self.device_id = device, device_id
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.outputs = [o.name for o in session.get_outputs()]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"missing inputs {missing}; this model takes {list(self.inputs)}")
        feeds = {n: np.ascontiguousarray(feeds[n], dtype=_numpy(i.type)) for n, i in self.inputs.items()}
        if not self.io_binding:
            return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = BoundBuffers(self.session, self.device, self.device_id)
        return buffers.run(feeds)


class BoundBuffers:
    """One thread's I/O binding and its reusable buffers."""

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int):
        self.session, self.device, self.device_id = session, device, device_id
        self.io = session.io_binding()
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()
        self.host: dict[str, np.ndarray] = {}  # flat, capacity-sized
        self.on_device: dict[str, ort.OrtValue] = {}  # flat, capacity-sized (GPU only)
        self.grown = 0  # number of (re)allocations, for tests and diagnostics

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        symbols: dict[str, int] = {}
        for spec in self.inputs:
            array = feeds[spec.name]
            symbols.update({d: n for d, n in zip(spec.shape, array.shape) if isinstance(d, str)})
            self.io.bind_input(spec.name, self.device, self.device_id, array.dtype, list(array.shape),
                               self._fill(spec.name, array))
        for spec in self.outputs:
            shape = _resolve(spec.shape, symbols)
            if shape is None:  # an output dim no input determines: let ORT allocate it on the device
                self.io.bind_output(spec.name, self.device, self.device_id)
                continue
            dtype = from_ort(spec.type).numpy
            self.io.bind_output(spec.name, self.device, self.device_id, dtype, shape,
                                self._buffer("out:" + spec.name, dtype, int(np.prod(shape))))
        self.io.synchronize_inputs()
        self.session.run_with_iobinding(self.io)
        self.io.synchronize_outputs()
        return dict(zip([o.name for o in self.outputs], self.io.copy_outputs_to_cpu()))

    def _fill(self, name: str, array: np.ndarray) -> int:
        """Copy ``array`` into the input's reused buffer; returns the device pointer to bind."""
        pointer = self._buffer("in:" + name, array.dtype, array.size)
        host = self.host["in:" + name]
        host[: array.size] = array.ravel()
        if self.device != "cpu":
            self.on_device["in:" + name].update_inplace(host)
        return pointer

    def _buffer(self, key: str, dtype: Any, size: int) -> int:
        host = self.host.get(key)
        if host is None or host.size < size or host.dtype != dtype:
            capacity = max(_MIN_CAPACITY, 1 << (max(size, 1) - 1).bit_length())
            host = self.host[key] = np.zeros(capacity, dtype=dtype)
            self.grown += 1
            if self.device != "cpu":
                self.on_device[key] = ort.OrtValue.ortvalue_from_numpy(host, self.device, self.device_id)
        if self.device == "cpu":
            return int(host.ctypes.data)
        return int(self.on_device[key].data_ptr())


def _resolve(shape: Sequence[Any], symbols: dict[str, int]) -> list[int] | None:
    dims = []
    for d in shape:
        if isinstance(d, int):
            dims.append(d)
        elif d in symbols:
            dims.append(symbols[d])
        else:
            return None
    return dims


def _numpy(ort_type: str) -> type | None:
    """The numpy type feeds are cast to (None: leave as given, for element types we do not map)."""
    found = DTYPES.get(numpy_name(ort_type))
    return found.numpy if found else None
