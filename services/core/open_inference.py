"""The Open Inference Protocol (KServe V2 REST, also spoken by Triton and MLServer clients).

`register_open_inference` adds to a service, next to `/v1/{task}/predict`:

- `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready`;
- `GET /v2/models/{name}` (metadata) and `GET /v2/models/{name}/ready`;
- `POST /v2/models/{name}/infer`;

the last three also under `/v2/models/{name}/versions/{version}/...`. The model's name is
the task. Inputs are BYTES tensors of shape `[n]` or `[n, 1]`, sent in JSON (strings) or as
binary tensor data (`services.core.binary_tensors`); each kind's `TensorAdapter` turns them
into the items of its v1 route, with the same checks and limits, and predicts them through
the same dataplane. Outputs: `label` (BYTES) and `score` (FP32), both `[n, k]`, every label
of the model per item in rank order. Errors are the protocol's `{"error": message}`, with
the status of the domain error (`OpenInferenceErrors` rewrites every error under `/v2`).
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Final, TypeAlias

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictBool, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.binary_tensors import (
    INFERENCE_HEADER_LENGTH,
    binary_parts,
    decode_bytes_elements,
    encode_bytes_elements,
    encode_fp32,
    split_inference_body,
)
from services.core.dataplane import DataPlane, ItemLimit, PredictionResult
from services.core.errors import (
    BatchTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    MtcError,
    UnknownTask,
    UnsupportedMediaType,
    UnusableContent,
)
from services.core.http_errors import error_responses, without_addresses
from services.core.json_body import FIELD_ALLOWANCE, within_json_values
from services.core.kinds import SERVING_ERRORS, SIZE_ERRORS
from services.core.model import ClassifierModel, Prediction

BYTES: Final = "BYTES"
FP32: Final = "FP32"
LABEL_OUTPUT: Final = "label"
SCORE_OUTPUT: Final = "score"
OUTPUT_NAMES: Final = (LABEL_OUTPUT, SCORE_OUTPUT)
EXTENSIONS: Final = ("binary_tensor_data",)
SERVER_NAME: Final = "mtc"
MAX_TENSORS = 8
"""Inputs or requested outputs one request may name (a model takes at most two)."""
MAX_RANK = 8
"""Dimensions of a tensor's shape (the inputs take one or two)."""
V2_PREFIX: Final = "/v2"


def server_version() -> str:
    """The installed mtc version (what `GET /v2` reports)."""
    try:
        return importlib.metadata.version("mtc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- Wire schemas -------------------------------------------------------------------------

Parameters = dict[str, StrictBool | int | float | str]


class TensorMetadata(BaseModel):
    """An input or output of a model: its name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    """Body of `GET /v2/models/{name}`."""

    name: str = Field(description="The model's name: the task.")
    versions: list[str] = Field(description="The loaded model's version (none while loading).")
    platform: str = Field(description="What executes the model (`mtc_<runtime>`).")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadataResponse(BaseModel):
    """Body of `GET /v2`."""

    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(BaseModel):
    """Body of `GET /v2/health/live`."""

    live: bool


class ServerReadyResponse(BaseModel):
    """Body of a passing `GET /v2/health/ready`."""

    ready: bool


class ModelReadyResponse(BaseModel):
    """Body of a passing `GET /v2/models/{name}/ready`."""

    name: str
    ready: bool


class InferenceErrorBody(BaseModel):
    """Body of every error under `/v2` (the protocol's error object)."""

    error: str


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    name: str = Field(max_length=256)
    shape: list[NonNegativeInt] = Field(max_length=MAX_RANK)
    datatype: str = Field(max_length=32)
    parameters: Parameters | None = Field(
        default=None,
        description="`binary_data_size`: the tensor's bytes after the JSON (binary tensor "
        "data extension); `data` is then left out.",
    )
    data: list[Any] | None = Field(
        default=None,
        description="The elements in row-major order, flat or nested. BYTES elements are "
        "strings: the text itself, or a base64-encoded file for images and audio.",
    )


class RequestOutput(BaseModel):
    """One output asked for, and how (`parameters.binary_data`: as binary data)."""

    name: str = Field(max_length=256)
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """An Open Inference Protocol request: the JSON object, or the JSON header of a body with
    binary tensor data (its length in `Inference-Header-Content-Length`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "review-1",
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["An absolute triumph, moving and beautifully acted"],
                        }
                    ],
                }
            ]
        }
    )

    id: str | None = Field(default=None, max_length=256)
    parameters: Parameters | None = Field(
        default=None,
        description="`binary_data_output: true` returns every output as binary data.",
    )
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestOutput] | None = Field(
        default=None,
        max_length=MAX_TENSORS,
        description="The outputs to return (default: `label` and `score`).",
    )


class ResponseOutput(BaseModel):
    """One output tensor: in `data`, or as binary data after the JSON
    (`parameters.binary_data_size` bytes)."""

    # Fields left out of a body are optional in the document too (FastAPI would otherwise
    # mark every field with a default as required in a response schema).
    model_config = ConfigDict(json_schema_mode_override="validation")

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[str] | list[float] | None = None


class InferenceResponse(BaseModel):
    """An Open Inference Protocol answer; with binary outputs, the JSON header of the body
    (its length in the `Inference-Header-Content-Length` response header)."""

    model_config = ConfigDict(json_schema_mode_override="validation")

    model_name: str
    model_version: str | None = None
    id: str | None = Field(default=None, description="The request's `id`, if it had one.")
    outputs: list[ResponseOutput]


# --- Input tensors -------------------------------------------------------------------------


@dataclass(frozen=True)
class InputTensor:
    """An input a kind of model takes: a BYTES tensor of shape `[n]` or `[n, 1]`."""

    name: str
    required: bool = True


_DATA_URL_MARK: Final = ";base64,"


def base64_file(label: str, text: str, max_bytes: int, setting: str, hint: str = "") -> bytes:
    """A file sent in JSON as a base64 string (a `data:...;base64,` prefix allowed). A string
    too long to hold at most `max_bytes` is refused before it is decoded."""
    if text.startswith("data:") and _DATA_URL_MARK in text[:100]:
        text = text.split(_DATA_URL_MARK, 1)[1]
    # base64 is 4 characters per 3 bytes.
    if len(text) * 3 // 4 > max_bytes + 3:
        raise ItemTooLarge(
            f"{label}: about {len(text) * 3 // 4} bytes; the limit is {max_bytes} ({setting})"
        )
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{label}: not valid base64{hint}") from None


@dataclass(frozen=True)
class BytesTensor:
    """The elements of one BYTES input: `str` when sent in JSON, `bytes` when sent as
    binary tensor data."""

    name: str
    elements: Sequence[str | bytes]

    def label(self, index: int) -> str:
        """How an error names element `index`."""
        return f"{self.name}[{index}]"

    def texts(self) -> list[str]:
        """The elements as text (binary elements must be UTF-8)."""
        texts: list[str] = []
        for index, element in enumerate(self.elements):
            try:
                texts.append(element if isinstance(element, str) else element.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"{self.label(index)} is not valid UTF-8") from None
        return texts

    def files(self, max_bytes: int, setting: str) -> list[tuple[str, bytes]]:
        """(label, file bytes) per element: binary elements as sent, JSON strings decoded
        by `base64_file`."""
        hint = " (in JSON, a file is sent as a base64 string; or send it as binary tensor data)"
        files: list[tuple[str, bytes]] = []
        for index, element in enumerate(self.elements):
            label = self.label(index)
            if isinstance(element, str):
                element = base64_file(label, element, max_bytes, setting, hint)
            files.append((label, element))
        return files


TensorPredict: TypeAlias = Callable[
    [Mapping[str, BytesTensor], DataPlane[Any, Any]], Awaitable[PredictionResult[Any]]
]
"""Ranked predictions of the `n` items the tensors describe (every required input is there,
every given one holds `n` elements)."""


@dataclass(frozen=True)
class TensorAdapter:
    """How a kind of model reads Open Inference input tensors: into the same items, with the
    same checks and limits, as its `/v1/{task}/predict` route, predicted by the same
    dataplane. Each kind makes one in its `api.py`."""

    inputs: tuple[InputTensor, ...]
    limit: ItemLimit
    predict: TensorPredict


# --- Reading a request ---------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceCall:
    """A checked inference request: its `id`, its input tensors and the outputs to return."""

    id: str | None
    tensors: dict[str, BytesTensor]
    outputs: list[tuple[str, bool]]
    """(output name, as binary data) in the order to return them."""


def json_values_budget(adapter: TensorAdapter) -> int:
    """Most JSON values a request's JSON may hold: each input's elements nested as `[n, 1]`
    (four values per element by `json_values_bound`), plus the fields around them."""
    return 4 * adapter.limit.count * len(adapter.inputs) + 4 * FIELD_ALLOWANCE


def read_inference_call(
    body: bytes, header_length: str | None, adapter: TensorAdapter
) -> InferenceCall:
    """Parse and check an inference request body against what `adapter` takes.

    Bad requests (JSON, tensor names, datatypes, shapes, binary sizes) raise `InvalidInput`;
    more items than the kind's limit `BatchTooLarge`, before any element is read."""
    header, binary = split_inference_body(body, header_length)
    budget = json_values_budget(adapter)
    if not within_json_values(header, budget):
        raise BatchTooLarge(
            f"the request's JSON holds more than {budget:,} values; at most "
            f"{adapter.limit.count} {adapter.limit.noun} in one request ({adapter.limit.setting})"
        )
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as error:
        raise InvalidInput(f"not a valid inference request: {_first_issue(error)}") from None
    count = _checked_count(request.inputs, adapter)
    sizes: list[tuple[str, int]] = []
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise InvalidInput(
                    f"input '{tensor.name}' has no `data` and no `binary_data_size` parameter"
                )
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(
                f"input '{tensor.name}': binary_data_size must be a byte count, not {size!r}"
            )
        if tensor.data is not None:
            raise InvalidInput(
                f"input '{tensor.name}' has both `data` and a binary_data_size; send one"
            )
        sizes.append((tensor.name, size))
    parts = binary_parts(binary, sizes)
    tensors: dict[str, BytesTensor] = {}
    for tensor in request.inputs:
        elements: Sequence[str | bytes]
        if tensor.name in parts:
            elements = decode_bytes_elements(
                parts[tensor.name], count, f"input '{tensor.name}' (binary)"
            )
        else:
            elements = _json_strings(tensor, count)
        tensors[tensor.name] = BytesTensor(tensor.name, elements)
    return InferenceCall(request.id, tensors, _requested_outputs(request))


def _first_issue(error: ValidationError) -> str:
    issue = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in issue["loc"])
    return f"{where}: {issue['msg']}" if where else str(issue["msg"])


def _describe_inputs(adapter: TensorAdapter) -> str:
    return ", ".join(
        f"'{spec.name}' (BYTES [-1]{'' if spec.required else ', optional'})"
        for spec in adapter.inputs
    )


def _checked_count(inputs: Sequence[RequestInput], adapter: TensorAdapter) -> int:
    """The number of items `n` all inputs agree on, after their names, datatypes and
    shapes are checked."""
    known = {spec.name: spec for spec in adapter.inputs}
    counts: dict[str, int] = {}
    for tensor in inputs:
        if tensor.name not in known:
            raise InvalidInput(
                f"unknown input '{tensor.name}'; this model takes {_describe_inputs(adapter)}"
            )
        if tensor.name in counts:
            raise InvalidInput(f"input '{tensor.name}' is given twice")
        if tensor.datatype != BYTES:
            raise InvalidInput(
                f"input '{tensor.name}' has datatype {tensor.datatype[:32]}; this model "
                f"takes {BYTES}"
            )
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(
                f"input '{tensor.name}' has shape {shape}; this model takes [n] or [n, 1]"
            )
        if shape[0] == 0:
            raise InvalidInput(f"input '{tensor.name}' has no elements (shape {shape})")
        adapter.limit.check(shape[0])
        counts[tensor.name] = shape[0]
    missing = [spec.name for spec in adapter.inputs if spec.required and spec.name not in counts]
    if missing:
        raise InvalidInput(
            f"missing input '{missing[0]}'; this model takes {_describe_inputs(adapter)}"
        )
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"'{name}' {count}" for name, count in counts.items())
        raise InvalidInput(f"the inputs must hold as many elements each; they hold {listed}")
    return next(iter(counts.values()))


def _json_strings(tensor: RequestInput, count: int) -> list[str]:
    """The JSON `data` of a BYTES input, flattened (nested no deeper than its shape)."""
    assert tensor.data is not None
    flat: list[Any] = []
    for element in tensor.data:
        if isinstance(element, list) and len(tensor.shape) == 2:
            flat.extend(element)
        else:
            flat.append(element)
    if len(flat) != count:
        raise InvalidInput(
            f"input '{tensor.name}' has shape {tensor.shape} ({count} elements), but its "
            f"data holds {len(flat)}"
        )
    for index, element in enumerate(flat):
        if not isinstance(element, str):
            raise InvalidInput(
                f"input '{tensor.name}'[{index}] is a {type(element).__name__}; BYTES elements "
                "in JSON are strings"
            )
    return flat


def _binary_flag(parameters: Parameters | None, name: str, where: str) -> bool | None:
    value = (parameters or {}).get(name)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"{where}: the `{name}` parameter must be true or false, not {value!r}")


def _requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    binary_default = bool(_binary_flag(request.parameters, "binary_data_output", "parameters"))
    if not request.outputs:
        return [(name, binary_default) for name in OUTPUT_NAMES]
    chosen: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in OUTPUT_NAMES:
            raise InvalidInput(
                f"unknown output '{output.name[:64]}'; this model returns 'label' (BYTES "
                "[n, k]) and 'score' (FP32 [n, k])"
            )
        if any(name == output.name for name, _ in chosen):
            raise InvalidInput(f"output '{output.name}' is asked for twice")
        if "classification" in (output.parameters or {}):
            raise InvalidInput(
                f"output '{output.name}': the classification extension is not supported; "
                "'label' and 'score' are already ranked, highest score first"
            )
        binary = _binary_flag(output.parameters, "binary_data", f"output '{output.name}'")
        chosen.append((output.name, binary_default if binary is None else binary))
    return chosen


# --- Answering -----------------------------------------------------------------------------


def inference_response(
    call: InferenceCall,
    predictions: Sequence[Prediction],
    *,
    model_name: str,
    model_version: str,
    headers: Mapping[str, str],
) -> Response:
    """The answer: `label` and `score` as `[n, k]` tensors, each in JSON or, when asked, as
    binary data after the JSON (whose length goes in `Inference-Header-Content-Length`)."""
    rankings = [prediction.scores for prediction in predictions]
    width = len(rankings[0]) if rankings else 0
    if any(len(scores) != width for scores in rankings):
        raise RuntimeError("predictions of one request rank different numbers of labels")
    shape = [len(rankings), width]
    outputs: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for name, as_binary in call.outputs:
        is_label = name == LABEL_OUTPUT
        datatype = BYTES if is_label else FP32
        output: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
        data: list[Any] = [
            entry.label if is_label else entry.score for scores in rankings for entry in scores
        ]
        if as_binary:
            encoded = (
                encode_bytes_elements(label.encode("utf-8") for label in data)
                if is_label
                else encode_fp32(data)
            )
            output["parameters"] = {"binary_data_size": len(encoded)}
            binary.append(encoded)
        else:
            output["data"] = data
        outputs.append(output)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if call.id is not None:
        body["id"] = call.id
    body["outputs"] = outputs
    content = orjson.dumps(body)
    if not binary:
        return Response(content, media_type="application/json", headers=dict(headers))
    return Response(
        content + b"".join(binary),
        media_type="application/octet-stream",
        headers={**headers, INFERENCE_HEADER_LENGTH: str(len(content))},
    )


def model_metadata(
    task: str, model: ClassifierModel[Any, Any], adapter: TensorAdapter
) -> ModelMetadataResponse:
    """What `GET /v2/models/{task}` answers; the label count is known once loaded."""
    labels = len(model.metadata.labels) if model.ready else -1
    return ModelMetadataResponse(
        name=task,
        versions=[model.metadata.version] if model.ready else [],
        platform=f"mtc_{model.runtime}",
        inputs=[
            TensorMetadata(name=spec.name, datatype=BYTES, shape=[-1]) for spec in adapter.inputs
        ],
        outputs=[
            TensorMetadata(name=LABEL_OUTPUT, datatype=BYTES, shape=[-1, labels]),
            TensorMetadata(name=SCORE_OUTPUT, datatype=FP32, shape=[-1, labels]),
        ],
    )


# --- OpenAPI -------------------------------------------------------------------------------


def inference_error_responses(*errors: type[MtcError]) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` entries for the errors of a `/v2` route, in the protocol's
    error shape."""
    responses = error_responses(*errors)
    for entry in responses.values():
        entry["model"] = InferenceErrorBody
    return responses


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, for an `openapi_extra`
    request body (which has no components of its own to point at)."""
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


INFER_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": inline_schema(InferenceRequest)},
        "application/octet-stream": {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "Binary tensor data extension: the JSON request (its length "
                "in the `Inference-Header-Content-Length` header), then each input with a "
                "`binary_data_size` parameter, in input order; a BYTES element is a 4-byte "
                "little-endian length and its bytes.",
            }
        },
    },
}
"""The request body of `POST /v2/models/{name}/infer`, as OpenAPI documents it."""

INFER_OK_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`label` and `score` per item, highest score first. With binary "
        "outputs, the JSON's length is in `Inference-Header-Content-Length` and the "
        "tensors follow it.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""The binary form of a successful inference answer (FastAPI adds the JSON one)."""

INFER_ERRORS: tuple[type[MtcError], ...] = (
    InvalidInput,
    UnknownTask,
    *SIZE_ERRORS,
    UnsupportedMediaType,
    UnusableContent,
    *SERVING_ERRORS,
)
"""What `POST /v2/models/{name}/infer` may answer besides 200, on every kind."""

INFER_DESCRIPTION = (
    "Classify a batch with the Open Inference Protocol (KServe V2). The model's name is "
    "the task; its inputs (`GET /v2/models/{name}`) are BYTES tensors of shape [n] or "
    "[n, 1]: `text` (text models), `image` (encoded JPEG, PNG or WebP files), `audio` "
    "(encoded WAV, FLAC, OGG or MP3 files) and optionally `transcript` (one per clip; empty: "
    "transcribe). In JSON a BYTES element is a string: the text, or a file in base64. With "
    "Triton's binary tensor data extension (`Inference-Header-Content-Length`, inputs with "
    "`parameters.binary_data_size`) files go as they are. Outputs: `label` (BYTES) and "
    "`score` (FP32), [n, k], every label per item, highest score first; as binary data "
    "when an output's `parameters.binary_data` or the request's "
    "`parameters.binary_data_output` is true. The same limits as `/v1/{task}/predict` apply."
)


# --- Routes --------------------------------------------------------------------------------

ModelName = Annotated[str, Path(description="The model's name: the task.")]


@dataclass(frozen=True)
class ModelRoute:
    """How one side (a service, the gateway) answers a `/v2/models/{name}...` route."""

    endpoint: Callable[..., Awaitable[Any]]
    errors: tuple[type[MtcError], ...]
    """What the route may answer besides 200, in the order the document lists them."""
    description: str | None = None
    """Default: the endpoint's docstring."""
    name: str | None = None
    """The route's name, for its operation id (default: the endpoint's)."""


MODEL_ROUTES: Final = {
    "": ("GET", "Model metadata", ModelMetadataResponse),
    "/ready": ("GET", "Model ready", ModelReadyResponse),
    "/infer": ("POST", "Inference", InferenceResponse),
}
"""Suffix of `/v2/models/{name}` -> the method, summary and answer of that route."""


def add_protocol_routes(
    router: FastAPI | APIRouter,
    *,
    live: str,
    ready: str,
    check_ready: Callable[..., Awaitable[None]],
    model_routes: Mapping[str, ModelRoute],
) -> None:
    """Add the protocol's routes: the server-wide ones, documented by `live` and `ready`
    (`check_ready`, a dependency, raises when not ready), and each of `MODEL_ROUTES` answered
    by `model_routes`, also under `versions/{model_version}` (undocumented)."""
    tags: list[str | Enum] = ["open inference"]

    @router.get(V2_PREFIX, tags=tags, summary="Server metadata")
    async def server_metadata() -> ServerMetadataResponse:
        """The server's name, version and protocol extensions."""
        return ServerMetadataResponse(
            name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS)
        )

    @router.get(f"{V2_PREFIX}/health/live", tags=tags, summary="Server live", description=live)
    async def server_live() -> ServerLiveResponse:
        return ServerLiveResponse(live=True)

    @router.get(
        f"{V2_PREFIX}/health/ready",
        tags=tags,
        summary="Server ready",
        description=ready,
        responses=inference_error_responses(ModelNotReady),
        dependencies=[Depends(check_ready)],
    )
    async def server_ready() -> ServerReadyResponse:
        return ServerReadyResponse(ready=True)

    model_path = f"{V2_PREFIX}/models/{{model_name}}"
    for suffix, (method, summary, answer) in MODEL_ROUTES.items():
        route = model_routes[suffix]
        responses = inference_error_responses(*route.errors)
        extra: dict[str, Any] = {}
        if suffix == "/infer":
            responses = {**INFER_OK_RESPONSE, **responses}
            extra["openapi_extra"] = {"requestBody": INFER_REQUEST_BODY}
        for path, documented in (
            (f"{model_path}{suffix}", True),
            (f"{model_path}/versions/{{model_version}}{suffix}", False),
        ):
            router.add_api_route(
                path,
                route.endpoint,
                methods=[method],
                tags=tags,
                summary=summary,
                description=route.description,
                response_model=answer,
                responses=responses,
                name=route.name,
                include_in_schema=documented,
                **extra,
            )


def register_open_inference(
    app: FastAPI, dataplane: DataPlane[Any, Any], adapter: TensorAdapter
) -> None:
    """Add the protocol's routes for the dataplane's one model, named after its task."""
    task = dataplane.settings.task
    model = dataplane.model

    def require_loaded() -> None:
        if not model.ready:
            raise ModelNotReady(f"the {task} model is not loaded yet")

    def check_model(model_name: str, request: Request) -> None:
        if model_name != task:
            raise UnknownTask(f"unknown model '{model_name[:100]}'; this service serves '{task}'")
        version: str | None = request.path_params.get("model_version")
        if version is None:
            return
        require_loaded()
        if version != model.metadata.version:
            raise UnknownTask(
                f"model '{task}' has no version '{version[:100]}'; it serves version "
                f"'{model.metadata.version}'"
            )

    async def server_loaded() -> None:
        require_loaded()

    async def model_metadata_route(
        model_name: ModelName, request: Request
    ) -> ModelMetadataResponse:
        """The model's inputs and outputs with their datatypes and shapes."""
        check_model(model_name, request)
        return model_metadata(task, model, adapter)

    async def model_ready_route(model_name: ModelName, request: Request) -> ModelReadyResponse:
        """The model is loaded (else 503)."""
        check_model(model_name, request)
        require_loaded()
        return ModelReadyResponse(name=task, ready=True)

    async def infer_route_handler(model_name: ModelName, request: Request) -> Response:
        check_model(model_name, request)
        # Before the tensors are read: a model that cannot answer yet costs no decoding.
        dataplane.require_ready()
        call = read_inference_call(
            await request.body(), request.headers.get(INFERENCE_HEADER_LENGTH), adapter
        )
        result = await adapter.predict(call.tensors, dataplane)
        # Imported here: services.core.api imports this module to register these routes.
        from services.core.api import timing_headers

        return inference_response(
            call,
            result.predictions,
            model_name=task,
            model_version=model.metadata.version,
            headers=timing_headers(result.queue_seconds, result.inference_seconds),
        )

    add_protocol_routes(
        app,
        live="The process is up (does not mean the model is loaded).",
        ready="The model is loaded and requests will be served (else 503).",
        check_ready=server_loaded,
        model_routes={
            "": ModelRoute(model_metadata_route, (UnknownTask,)),
            "/ready": ModelRoute(model_ready_route, (UnknownTask, ModelNotReady)),
            "/infer": ModelRoute(infer_route_handler, INFER_ERRORS, INFER_DESCRIPTION),
        },
    )


# --- Error shape ---------------------------------------------------------------------------


MAX_REWRITTEN_ERROR_BYTES = 64 * 1024
"""Error bodies longer than this pass unchanged (none of the apps' own is)."""


def is_open_inference_path(path: str) -> bool:
    """Whether `path` belongs to the Open Inference Protocol (`/v2` and below)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def as_inference_error(body: bytes) -> bytes | None:
    """`{"error": message}` for an error body of the apps' shapes (`{"detail", ...}`, or
    FastAPI's list of validation issues), or None to leave it as it is."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or "error" in document or "detail" not in document:
        return None
    detail = document["detail"]
    if isinstance(detail, list):
        message = "; ".join(
            f"{'.'.join(str(part) for part in issue.get('loc', []))}: {issue.get('msg', '')}"
            if isinstance(issue, dict)
            else str(issue)
            for issue in detail
        )
    else:
        message = str(detail)
    return json.dumps({"error": without_addresses(message)}).encode()


class OpenInferenceErrors:
    """ASGI middleware giving every error under `/v2` the protocol's `{"error": message}`
    body, whichever layer refused the request (a route, the body-size limit, the API key
    check, the quota, an unknown path): one place, so no refusal keeps the other shape.
    Status and headers stay as they were; other paths and successful answers pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_open_inference_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        held_start: Message | None = None
        held_body = bytearray()

        async def rewriting_send(message: Message) -> None:
            nonlocal held_start
            starting = message["type"] == "http.response.start"
            if starting and message["status"] >= 400 and _is_json(message):
                held_start = message
                return
            if held_start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held_body.extend(message.get("body", b""))
            more = bool(message.get("more_body", False))
            too_long = len(held_body) > MAX_REWRITTEN_ERROR_BYTES
            if more and not too_long:
                return
            start, held_start = held_start, None
            rewritten = None if too_long else as_inference_error(bytes(held_body))
            if rewritten is None:
                await send(start)
                await send(
                    {"type": "http.response.body", "body": bytes(held_body), "more_body": more}
                )
                return
            headers = [
                (name, value)
                for name, value in start.get("headers", [])
                if name != b"content-length"
            ]
            headers.append((b"content-length", str(len(rewritten)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": rewritten})

        await self.app(scope, receive, rewriting_send)


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"application/json"
    return False
