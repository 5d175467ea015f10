"""Request bodies in, texts out; probabilities in, response bodies out (V1 and V2).

Every way a request can be wrong is checked here and answered with a `BadRequestError` (400)
that names the field, or a `BatchTooLargeError` (413); nothing a client sends reaches ONNX
Runtime unchecked. Each text must be Unicode (no lone surrogate, which the tokenizer refuses)
and hold something to classify: an empty text, or one of whitespace and control or format
characters only, is refused with its index rather than given a label it cannot have earned.

V1:  {"instances": ["text", ...]} or {"instances": [{"text": "..."}, ...]}
     -> {"predictions": [{"label": ..., "probabilities": {label: p, ...}}, ...],
         "model_version": "3"}
V2:  one input tensor `text`, datatype BYTES, shape [n] (or [n, 1])
     -> outputs `label` (BYTES [n]) and `probabilities` (FP32 [n, k]), `model_version`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from textops.components.common.blank_text import is_blank
from textops.components.common.errors import TextopsError
from textops.components.common.long_text import bound_text

#: The V2 input tensor and output tensors.
INPUT_NAME = "text"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, PROBABILITIES_OUTPUT)
#: Request-level and output parameters this predictor understands; others are refused.
_REQUEST_PARAMETERS = frozenset({"binary_data_output"})
_OUTPUT_PARAMETERS = frozenset({"binary_data"})


class ServedVersion(Protocol):
    """What a response is written from: the predictor's `runtime.ClassifierRuntime`, or the
    Triton transformer's `transformer.TransformerBundle`."""

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in the column order of the probabilities."""

    @property
    def version(self) -> str:
        """The version reported as `model_version`."""

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text."""


class BadRequestError(InvalidInput):
    """A malformed request (HTTP 400); the message names the field and what was wrong."""


class BatchTooLargeError(TextopsError):
    """A request holds more texts than --max-batch-size allows (HTTP 413)."""


@dataclass(frozen=True)
class ParsedRequest:
    """The texts of one request and how to answer it.

    Attributes:
        texts: The texts, in request order.
        protocol: `v1` or `v2`.
        request_id: The V2 response id (the request's own id when it gave one).
        infer_request: The decoded V2 request (its requested outputs and parameters).
    """

    texts: list[str]
    protocol: str
    request_id: str | None = None
    infer_request: InferRequest | None = None


def parse_request(
    payload: Any,
    headers: Mapping[str, str] | None,
    max_batch_size: int,
    max_chars: int | None = None,
) -> ParsedRequest:
    """Check a decoded request body and take its texts.

    Args:
        payload: What KServe decoded: a dict (V1 JSON), an `InferRequest` (V2), or raw bytes
            when the body was not JSON.
        headers: The request headers (lower-case names).
        max_batch_size: Texts allowed per request.
        max_chars: A text longer than twice `max_chars` characters is cut to its first and
            last `max_chars` before it is checked (`long_text.bound_text`: they hold what the
            model reads, whichever end its long-text strategy reads, see
            `ServeSettings.max_text_chars`), so that a 4 MB text costs no more to check than a
            short one; None keeps texts whole.

    Raises:
        BadRequestError: The body is malformed; the message says which field and why.
        BatchTooLargeError: More than `max_batch_size` texts.
    """
    if isinstance(payload, InferRequest):
        texts = _v2_texts(payload, max_chars)
        parsed = ParsedRequest(texts, "v2", _request_id(payload, headers), payload)
    else:
        parsed = ParsedRequest(_v1_texts(payload, max_chars), "v1")
    if len(parsed.texts) > max_batch_size:
        raise BatchTooLargeError(
            f"the request holds {len(parsed.texts)} texts; at most {max_batch_size} are allowed "
            "per request (--max-batch-size): split it into smaller requests"
        )
    return parsed


def _v1_texts(payload: Any, max_chars: int | None) -> list[str]:
    if isinstance(payload, bytes | bytearray):
        # KServe hands over the raw body when the Content-Type is not JSON (`curl -d` sends
        # a form type): JSON in it is still accepted.
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise BadRequestError(
                f"the request body is not JSON ({e}); send "
                '{"instances": ["text", ...]} with Content-Type: application/json'
            ) from e
    if not isinstance(payload, dict):
        raise BadRequestError(
            f'the request body must be a JSON object {{"instances": [...]}}, got a JSON '
            f"{_json_type(payload)}"
        )
    if "instances" not in payload:
        keys = ", ".join(sorted(map(str, payload))) or "none"
        raise BadRequestError(f'the request body lacks "instances" (keys given: {keys})')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequestError(f'"instances" must be a list, got a JSON {_json_type(instances)}')
    if not instances:
        raise BadRequestError('"instances" is empty: send at least one text')
    return [_v1_text(i, item, max_chars) for i, item in enumerate(instances)]


def _v1_text(index: int, item: Any, max_chars: int | None) -> str:
    if isinstance(item, str):
        return checked_text(_ends(item, max_chars), f"instances[{index}]")
    if isinstance(item, dict):
        if "text" not in item:
            raise BadRequestError(f'instances[{index}] is an object without a "text" field')
        text = item["text"]
        if isinstance(text, str):
            return checked_text(_ends(text, max_chars), f"instances[{index}].text")
        raise BadRequestError(
            f"instances[{index}].text must be a string, got a JSON {_json_type(text)}"
        )
    raise BadRequestError(
        f'instances[{index}] must be a string or an object {{"text": "..."}}, got a JSON '
        f"{_json_type(item)}"
    )


def _v2_texts(request: InferRequest, max_chars: int | None) -> list[str]:
    _check_v2_parameters(request.parameters, "the request", _REQUEST_PARAMETERS)
    for output in request.request_outputs or []:
        if output.name not in OUTPUT_NAMES:
            raise BadRequestError(
                f"unknown output {output.name!r} requested; this model has "
                f"{', '.join(OUTPUT_NAMES)}"
            )
        _check_v2_parameters(output.parameters, f"output {output.name!r}", _OUTPUT_PARAMETERS)
    if len(request.inputs) != 1:
        raise BadRequestError(
            f"expected exactly one input tensor named {INPUT_NAME!r}, got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise BadRequestError(f"the input tensor must be named {INPUT_NAME!r}, not {tensor.name!r}")
    if tensor.datatype != "BYTES":
        raise BadRequestError(
            f"input {INPUT_NAME!r} must have datatype BYTES, not {tensor.datatype}"
        )
    shape = _check_shape(tensor.shape)
    values = _flatten(tensor.data)
    expected = math.prod(shape)
    if expected != len(values):
        raise BadRequestError(
            f"input {INPUT_NAME!r} has shape {shape} ({expected} elements) but "
            f"{len(values)} data elements"
        )
    if not values:
        raise BadRequestError(f"input {INPUT_NAME!r} is empty: send at least one text")
    return [_v2_text(i, value, max_chars) for i, value in enumerate(values)]


def _check_v2_parameters(parameters: Any, where: str, allowed: frozenset[str]) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, Mapping):
        raise BadRequestError(f"{where}: parameters must be an object")
    for key, value in parameters.items():
        if key in allowed and not isinstance(value, bool):
            raise BadRequestError(f"{where}: parameter {key!r} must be true or false")


def _check_shape(shape: Any) -> list[int]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise BadRequestError(f"input {INPUT_NAME!r}: shape must be a list of integers")
    dims = list(shape)
    if len(dims) not in (1, 2) or (len(dims) == 2 and dims[1] != 1):
        raise BadRequestError(
            f"input {INPUT_NAME!r} must have shape [n] or [n, 1] (n texts), got {dims}"
        )
    if any(d < 0 for d in dims):
        raise BadRequestError(f"input {INPUT_NAME!r}: shape {dims} has a negative dimension")
    return dims


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1))
    if not isinstance(data, list | tuple):
        raise BadRequestError(f"input {INPUT_NAME!r}: data must be a list of strings")
    values: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:  # iterative, so nesting depth cannot exhaust the stack
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list | tuple):
            stack.append(iter(item))
        else:
            values.append(item)
    return values


_END = object()


def _ends(text: str, max_chars: int | None) -> str:
    return text if max_chars is None else bound_text(text, max_chars)


def _v2_text(index: int, value: Any, max_chars: int | None) -> str:
    where = f"input {INPUT_NAME!r} element {index}"
    if isinstance(value, str):
        return checked_text(_ends(value, max_chars), where)
    if isinstance(value, bytes | np.bytes_):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequestError(f"{where} is not UTF-8: {e}") from e
        return checked_text(_ends(text, max_chars), where)
    raise BadRequestError(f"{where} must be a string, got {_json_type(value)}")


def checked_text(text: str, where: str) -> str:
    """`text`, once it is known to be Unicode with something in it to classify.

    Args:
        text: One text of a request.
        where: How the error names it: `instances[3]`, `input 'text' element 3`.

    Raises:
        BadRequestError: The text holds a lone surrogate, or nothing but whitespace, control
            and format characters (or nothing at all).
    """
    if not text.isascii():
        # Half of a UTF-16 surrogate pair: JSON's \uD800 escapes can carry one, UTF-8 cannot.
        # Encoding finds it ten times faster than a regular expression would.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequestError(
                f"{where} holds a lone surrogate (U+{ord(text[e.start]):04X} at character "
                f"{e.start}), which is not Unicode text: send the text as UTF-8, or escape it "
                "as a surrogate pair"
            ) from e
    if is_blank(text):
        shown = "is empty" if not text else "holds only whitespace or control characters"
        raise BadRequestError(
            f"{where} {shown}: there is nothing to classify; leave it out of the request"
        )
    return text


def _request_id(request: InferRequest, headers: Mapping[str, str] | None) -> str:
    if isinstance(request.id, str) and request.id:
        return request.id
    header = (headers or {}).get("x-request-id")
    return header or str(uuid.uuid4())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def predicted_labels(probabilities: np.ndarray, labels: Sequence[str]) -> list[str]:
    """The most probable label of each row."""
    return [labels[i] for i in probabilities.argmax(axis=-1)]


def v1_response(probabilities: np.ndarray, runtime: ServedVersion) -> dict[str, Any]:
    """The V1 body: one prediction per text, with every label's probability."""
    labels = runtime.labels
    rows = probabilities.tolist()
    predictions = [
        {"label": label, "probabilities": dict(zip(labels, row, strict=True))}
        for label, row in zip(predicted_labels(probabilities, labels), rows, strict=True)
    ]
    return {"predictions": predictions, "model_version": runtime.version}


def v2_response(
    parsed: ParsedRequest, probabilities: np.ndarray, runtime: ServedVersion, model_name: str
) -> InferResponse:
    """The V2 response: `label` and `probabilities`, in the model metadata's label order."""
    assert parsed.infer_request is not None
    labels = predicted_labels(probabilities, runtime.labels)
    n, k = probabilities.shape
    # numpy data: KServe encodes it as JSON lists, or as binary data when the request asks.
    # Every `parameters` is filled: KServe writes empty ones as null, which the Open
    # Inference Protocol schema (an object) does not allow.
    outputs = [
        InferOutput(
            LABEL_OUTPUT,
            [n],
            "BYTES",
            np.array(labels, dtype=np.object_),
            parameters={"content_type": "str"},
        ),
        InferOutput(
            PROBABILITIES_OUTPUT,
            [n, k],
            "FP32",
            probabilities.astype(np.float32),
            parameters={"labels": orjson.dumps(list(runtime.labels)).decode()},
        ),
    ]
    binary = bool((parsed.infer_request.parameters or {}).get("binary_data_output", False))
    return InferResponse(
        response_id=parsed.request_id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=outputs,
        model_version=runtime.version,
        parameters={"max_seq_length": runtime.max_seq_length},
        use_binary_outputs=binary,
        requested_outputs=parsed.infer_request.request_outputs,
    )


def input_metadata() -> list[dict[str, Any]]:
    """The V2 metadata of the input tensor."""
    return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]


def output_metadata(labels: Sequence[str]) -> list[dict[str, Any]]:
    """The V2 metadata of the output tensors; `probabilities` columns follow `labels`."""
    return [
        {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(labels)]},
    ]
