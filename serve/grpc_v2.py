"""KServe v2 over gRPC: the protocol ``tritonclient.grpc`` speaks (the proto ships with tritonclient), served on
the HTTP server's event loop and through the same services, limits and error kinds as the HTTP routes.

Implemented: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelConfig, RepositoryIndex,
ModelInfer (the BYTES ``text`` input or the model's raw tensors; data as typed contents or raw_input_contents).
ModelConfig and RepositoryIndex answer what the HTTP routes answer (one document each, in routes_v2.py). Everything
else (model loading, shared memory, statistics, trace and log settings) answers UNIMPLEMENTED, as grpc does for a
method a servicer leaves out.
"""
from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import serialize_byte_tensor

from onnxformer import __version__
from onnxformer.errors import OnnxformerError
from onnxformer.serve.guard import record_internal
from onnxformer.serve.httpio import within
from onnxformer.serve.kserve import BYTES, InferRequest, Tensor, _from_binary, _numpy, _v2_dtype, check_header
from onnxformer.serve.routes_v2 import _infer, model_config_doc, model_metadata_doc, repository_index_doc
from onnxformer.serve.state import ServerState
from onnxformer.serve.statuses import KINDS, ErrorKind, ServingError, error_kind

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
             BYTES: "bytes_contents"}  # the typed ``contents`` field of each datatype (FP16/BF16: raw only)


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServerState):
        self.state = state

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="onnxformer", version=__version__, extensions=["binary_tensor_data"])

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return await self._guard(context, self._model_ready, request)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return await self._guard(context, self._model_metadata, request)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return await self._guard(context, self._model_config, request)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        return await self._guard(context, self._repository_index, request)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._guard(context, self._infer, request)

    async def _guard(self, context: Any, handler: Any, request: Any) -> Any:
        """Run ``handler``; an error ends the call with the status code of its kind (``KINDS``). As over HTTP, a
        server-side failure is logged and counted under an id, and the client gets the id, not the error."""
        try:
            return await handler(request)
        except Exception as e:  # every escape is answered in the protocol's shape; CancelledError is not caught
            kind = error_kind(e)
            public = isinstance(e, ServingError) or (isinstance(e, OnnxformerError) and KINDS[kind].status < 500)
            message = str(e) if public else record_internal(f"gRPC {handler.__name__}", e, self.state.metrics)
        await context.abort(getattr(grpc.StatusCode, KINDS[kind].grpc), message)

    async def _model_ready(self, request: Any) -> Any:
        try:
            self.state.require_service(request.name)
        except ServingError as e:
            if e.kind != ErrorKind.UNAVAILABLE:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.state.ready)

    async def _model_metadata(self, request: Any) -> Any:
        doc = model_metadata_doc(self.state.require_service(request.name))
        tensors = lambda specs: [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"],
                                                                         shape=t["shape"]) for t in specs]
        return pb.ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"],
                                        inputs=tensors(doc["inputs"]), outputs=tensors(doc["outputs"]))

    async def _model_config(self, request: Any) -> Any:
        if request.version not in ("", "1"):
            raise ServingError(f"model {request.name!r} has only version 1", ErrorKind.NOT_FOUND)
        doc = model_config_doc(self.state.require_service(request.name), self.state.config)
        return pb.ModelConfigResponse(config=config_message(doc))

    async def _repository_index(self, request: Any) -> Any:
        if request.repository_name:
            raise ServingError(f"this server has one repository, not {request.repository_name!r}; send no "
                               "repository_name", ErrorKind.NOT_FOUND)
        self.state.require_ready()
        models = [pb.RepositoryIndexResponse.ModelIndex(**m) for m in repository_index_doc(self.state)]
        return pb.RepositoryIndexResponse(models=models)

    async def _infer(self, request: Any) -> Any:
        service = self.state.model_service("KServe infer", request.model_name)
        if request.model_version not in ("", "1"):
            raise ServingError(f"model {request.model_name!r} has only version 1", ErrorKind.NOT_FOUND)
        self.state.refuse_if_full()
        req = parse_request(request)
        outputs = await within(self.state.config.timeout_s, _infer(service, req))
        return encode_response(service.name, req, outputs)


def config_message(doc: dict[str, Any]) -> mc.ModelConfig:
    """The HTTP route's model configuration document as Triton's ``ModelConfig`` (parameters as strings)."""
    tensors = lambda kind, specs: [kind(name=t["name"], data_type=mc.DataType.Value(t["data_type"]), dims=t["dims"])
                                   for t in specs]
    config = mc.ModelConfig(name=doc["name"], platform=doc["platform"], backend=doc["backend"],
                            max_batch_size=doc["max_batch_size"], input=tensors(mc.ModelInput, doc["input"]),
                            output=tensors(mc.ModelOutput, doc["output"]))
    if doc["dynamic_batching"] is not None:
        config.dynamic_batching.max_queue_delay_microseconds = doc["dynamic_batching"]["max_queue_delay_microseconds"]
    for key, value in doc["parameters"].items():
        config.parameters[key].string_value = str(value)
    return config


def parse_request(request: Any) -> InferRequest:
    """A ModelInferRequest as the HTTP route's InferRequest: each tensor checked against datatype and shape."""
    if not request.inputs:
        raise ServingError("the request has no inputs", ErrorKind.BAD_REQUEST)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ServingError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input",
                           ErrorKind.BAD_REQUEST)
    inputs: dict[str, Tensor] = {}
    for i, spec in enumerate(request.inputs):
        if spec.name in inputs:
            raise ServingError(f"input {spec.name!r} appears twice", ErrorKind.BAD_REQUEST)
        inputs[spec.name] = _tensor(spec, raw[i] if raw else None)
    outputs = [o.name for o in request.outputs] or None
    return InferRequest(request.id or None, inputs, outputs)


def _tensor(spec: Any, raw: bytes | None) -> Tensor:
    name, datatype, shape = spec.name, spec.datatype, [int(d) for d in spec.shape]
    count = check_header(name, datatype, shape)  # the HTTP route's checks, its kinds
    if raw is not None:
        flat = _from_binary(name, datatype, raw)
    elif datatype in _CONTENTS:
        values = list(getattr(spec.contents, _CONTENTS[datatype]))
        flat = np.array(values, dtype=object) if datatype == BYTES else np.array(values, dtype=_numpy(datatype))
    else:
        raise ServingError(f"input {name!r}: {datatype} data must come as raw_input_contents", ErrorKind.BAD_REQUEST)
    if flat.size != count:
        raise ServingError(f"input {name!r}: {flat.size} elements for shape {shape}", ErrorKind.BAD_REQUEST)
    return Tensor(name, datatype, shape, flat.reshape(shape))


def encode_response(model: str, req: InferRequest, outputs: dict[str, np.ndarray]) -> Any:
    names = req.outputs if req.outputs is not None else list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise ServingError(f"unknown output(s) {unknown}; this request yields {sorted(outputs)}", ErrorKind.BAD_REQUEST)
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=req.id or "")
    for name in names:
        arr = np.ascontiguousarray(outputs[name])
        datatype = _v2_dtype(name, arr)  # the HTTP encoder's naming (an unnameable dtype: its error)
        data = (serialize_byte_tensor(arr).item() if arr.size else b"") if datatype == BYTES else arr.tobytes()
        response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        response.raw_output_contents.append(data)
    return response


async def start_grpc(state: ServerState, host: str, port: int) -> Any:
    """A grpc.aio server on ``host:port`` serving ``state``'s models; returns it (stop it with ``.stop(grace)``)."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(state), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise ServingError(f"cannot listen for gRPC on {address}; choose another --grpc-port")
    await server.start()
    return server
