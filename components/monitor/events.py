"""Reading the CloudEvents of KServe's payload logger into events for the payload store.

KServe's agent sends each inference request and its response as two CloudEvents (spec 1.0) in
binary mode: headers `Ce-Specversion`, `Ce-Id` (the request id, the same for both), `Ce-Type`
(`org.kubeflow.serving.inference.request` or `.response`), `Ce-Source`, `Ce-Time` and the
extensions `Ce-Inferenceservicename`, `Ce-Namespace`, `Ce-Component`, `Ce-Endpoint`; the HTTP
body is the raw request or response body, with the inference request's Content-Type (which may
be absent). Structured mode (`application/cloudevents+json`, the payload in `data` or
`data_base64`) and batches (`application/cloudevents-batch+json`) are read too.

Payloads are KServe's V1 and V2 (Open Inference Protocol) JSON bodies. Texts are redacted here,
before anything stores them; only the counts of what was redacted leave this module. Error
messages name fields and positions, never the values, so they are safe to log and to return.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from textops.components.common.errors import EventFormatError
from textops.components.common.redaction import redact
from textops.components.monitor.store import EventKind, PayloadEvent

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_KINDS: dict[str, EventKind] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
SPEC_VERSIONS = ("1.0", "0.3")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
#: Longest event id accepted; KServe's are uuids or the client's X-Request-Id.
MAX_ID_LENGTH = 512

REQUEST_SHAPES = (
    'V1 {"instances": ["text", ...]} or {"instances": [{"text": "..."}, ...]}, or V2 '
    '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": ["...", ...]}]}'
)
RESPONSE_SHAPES = (
    'V1 {"predictions": [{"label": "...", "probabilities": {"label": p, ...}}, ...]} or '
    '{"predictions": ["label", ...]}, or V2 {"outputs": [{"name": "label", "datatype": '
    '"BYTES", ...}, {"name": "probabilities", "datatype": "FP32", "shape": [n, k], ...}]}'
)


@dataclass(frozen=True)
class CloudEvent:
    """The attributes the collector uses, and the event's data parsed from JSON."""

    id: str
    kind: EventKind
    model_name: str | None
    data: Any


def parse_cloudevents(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """The CloudEvents of one HTTP request, in binary, structured or batch mode.

    Args:
        headers: The HTTP headers (any case).
        body: The HTTP body.

    Raises:
        EventFormatError: Not a CloudEvent the collector reads; the message says why.
    """
    lower = {key.lower(): value for key, value in headers.items()}
    # The media type decides structured mode (as in the CloudEvents SDKs); else Ce- headers.
    content_type = lower.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == STRUCTURED_CONTENT_TYPE:
        return [_structured(_json_body(body, "structured CloudEvent"))]
    if content_type == BATCH_CONTENT_TYPE:
        batch = _json_body(body, "CloudEvents batch")
        if not isinstance(batch, list):
            raise EventFormatError("a CloudEvents batch must be a JSON array of events")
        return [_structured(item) for item in batch]
    if "ce-specversion" in lower:
        attributes = {k[3:]: _header_value(v) for k, v in lower.items() if k.startswith("ce-")}
        return [_event(attributes, lambda event_id: _json_data(body, event_id))]
    raise EventFormatError(
        "not a CloudEvent: send binary mode (headers Ce-Specversion, Ce-Id, Ce-Type, ...) or "
        f"structured mode (Content-Type {STRUCTURED_CONTENT_TYPE}); got Content-Type "
        f"{content_type or 'none'} and no Ce-Specversion header"
    )


def to_payload_event(event: CloudEvent, received_at: float) -> tuple[PayloadEvent, Counter[str]]:
    """The store's event for a parsed CloudEvent, its texts redacted.

    Returns:
        The event and how many pieces of personal data of each kind were redacted.

    Raises:
        EventFormatError: The payload is not a V1 or V2 request or response of this shape.
    """
    counts: Counter[str] = Counter()
    if event.kind == "request":
        texts = []
        for text in request_texts(event.data, event.id):
            redacted, found = redact(text)
            texts.append(redacted)
            counts.update(found)
        return PayloadEvent(
            event.id, "request", received_at, event.model_name, texts=tuple(texts)
        ), counts
    predictions, version, body_model = response_predictions(event.data, event.id)
    return PayloadEvent(
        event.id,
        "response",
        received_at,
        event.model_name or body_model,
        model_version=version,
        predictions=tuple(predictions),
    ), counts


def request_texts(data: Any, event_id: str = "?") -> list[str]:
    """The texts of a V1 or V2 inference request body."""
    where = f"request {event_id!r}"
    if isinstance(data, dict) and "instances" in data:
        instances = data["instances"]
        if not isinstance(instances, list):
            raise EventFormatError(
                f"{where}: 'instances' must be a list; expected {REQUEST_SHAPES}"
            )
        return [_instance_text(value, i, where) for i, value in enumerate(instances)]
    if isinstance(data, dict) and isinstance(data.get("inputs"), list):
        tensor = _pick_tensor(data["inputs"], "text", "inputs", where, REQUEST_SHAPES)
        return _strings(_flatten(tensor.get("data")), f"{where}: input {tensor.get('name')!r}")
    raise EventFormatError(f"{where}: unknown payload shape; expected {REQUEST_SHAPES}")


def response_predictions(
    data: Any, event_id: str = "?"
) -> tuple[list[tuple[str, float | None]], str | None, str | None]:
    """(label, confidence) per text, the model version and model name of a V1 or V2 response."""
    where = f"response {event_id!r}"
    if not isinstance(data, dict):
        raise EventFormatError(f"{where}: unknown payload shape; expected {RESPONSE_SHAPES}")
    version = _optional_str(data.get("model_version"), f"{where}: model_version")
    model = _optional_str(data.get("model_name"), f"{where}: model_name")
    if "predictions" in data:
        predictions = data["predictions"]
        if not isinstance(predictions, list):
            raise EventFormatError(
                f"{where}: 'predictions' must be a list; expected {RESPONSE_SHAPES}"
            )
        return [_v1_prediction(p, i, where) for i, p in enumerate(predictions)], version, model
    if isinstance(data.get("outputs"), list):
        return _v2_predictions(data["outputs"], where), version, model
    raise EventFormatError(f"{where}: unknown payload shape; expected {RESPONSE_SHAPES}")


def _header_value(value: str) -> str:
    # Binary mode percent-encodes characters outside printable ASCII, '"' and '%'.
    return unquote(value) if "%" in value else value


def _event(attributes: Mapping[str, Any], data: Any) -> CloudEvent:
    """Check the attributes; `data` is the parsed data or a function of the event id giving it."""
    version = attributes.get("specversion")
    if version not in SPEC_VERSIONS:
        raise EventFormatError(
            f"unsupported CloudEvents specversion {version!r}: expected one of {SPEC_VERSIONS}"
        )
    event_id = attributes.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise EventFormatError("the CloudEvent has no id (Ce-Id): KServe sets it per request")
    if len(event_id) > MAX_ID_LENGTH:
        raise EventFormatError(
            f"the CloudEvent id is {len(event_id)} characters long; at most {MAX_ID_LENGTH} "
            "are accepted"
        )
    kind = EVENT_KINDS.get(attributes.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise EventFormatError(
            f"event {event_id!r} has type {attributes.get('type')!r}: expected "
            f"{REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    model_name = attributes.get("inferenceservicename")
    return CloudEvent(
        id=event_id,
        kind=kind,
        model_name=model_name if isinstance(model_name, str) and model_name else None,
        data=data(event_id) if callable(data) else data,
    )


def _structured(envelope: Any) -> CloudEvent:
    if not isinstance(envelope, dict):
        raise EventFormatError("a structured CloudEvent must be a JSON object")
    event_id = envelope.get("id")
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise EventFormatError(f"event {event_id!r}: data_base64 is not base64") from e
        return _event(envelope, _json_data(raw, str(event_id)))
    if "data" not in envelope:
        raise EventFormatError(f"event {event_id!r} has neither data nor data_base64")
    data = envelope["data"]
    if isinstance(data, str):
        # Some senders put the JSON payload as a string rather than as JSON.
        data = _json_data(data.encode("utf-8"), str(event_id))
    return _event(envelope, data)


def _json_body(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventFormatError(f"the {what} is not valid JSON: {_position(e)}") from e


def _json_data(body: bytes, event_id: str) -> Any:
    if not body.strip():
        raise EventFormatError(f"event {event_id!r} has no data: expected a JSON inference body")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventFormatError(
            f"event {event_id!r}: the data is not JSON ({_position(e)}); the collector reads "
            "KServe V1/V2 JSON bodies"
        ) from e


def _position(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return "not UTF-8"


def _instance_text(value: Any, index: int, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if not isinstance(value.get("text"), str):
            raise EventFormatError(
                f"{where}: instances[{index}] has no string 'text' field; expected {REQUEST_SHAPES}"
            )
        return str(value["text"])
    raise EventFormatError(
        f"{where}: instances[{index}] is {type(value).__name__}, not a text; "
        f"expected {REQUEST_SHAPES}"
    )


def _pick_tensor(
    tensors: list[Any], name: str, field: str, where: str, shapes: str
) -> dict[str, Any]:
    """The tensor called `name`, else the only BYTES tensor."""
    if not all(isinstance(t, dict) for t in tensors):
        raise EventFormatError(f"{where}: every entry of '{field}' must be an object")
    named = [t for t in tensors if t.get("name") == name]
    if named:
        return dict(named[0])
    strings = [t for t in tensors if str(t.get("datatype", "")).upper() == "BYTES"]
    if len(strings) == 1:
        return dict(strings[0])
    raise EventFormatError(
        f"{where}: no {field} tensor named {name!r} and {len(strings)} BYTES tensors; "
        f"expected {shapes}"
    )


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for value in data:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


def _strings(values: list[Any], where: str) -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise EventFormatError(f"{where}: element {i} is {type(value).__name__}, not a string")
    return values


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise EventFormatError(f"{where} must be a string")


def _v1_prediction(value: Any, index: int, where: str) -> tuple[str, float | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        label = value["label"]
        probabilities = value.get("probabilities")
        if isinstance(probabilities, dict) and probabilities:
            scores = {k: v for k, v in probabilities.items() if _is_number(v)}
            if len(scores) != len(probabilities):
                raise EventFormatError(
                    f"{where}: predictions[{index}] has a non-numeric probability"
                )
            return label, float(scores.get(label, max(scores.values())))
        confidence: Any = value.get("confidence")
        return label, float(confidence) if _is_number(confidence) else None
    raise EventFormatError(
        f"{where}: predictions[{index}] is neither a label nor an object with a string 'label'; "
        f"expected {RESPONSE_SHAPES}"
    )


def _v2_predictions(outputs: list[Any], where: str) -> list[tuple[str, float | None]]:
    tensor = _pick_tensor(outputs, "label", "outputs", where, RESPONSE_SHAPES)
    labels = _strings(_flatten(tensor.get("data")), f"{where}: output {tensor.get('name')!r}")
    probabilities = [t for t in outputs if t.get("name") == "probabilities"]
    if not probabilities or not labels:
        return [(label, None) for label in labels]
    rows = _probability_rows(probabilities[0], len(labels), where)
    return [(label, max(row)) for label, row in zip(labels, rows, strict=True)]


def _probability_rows(tensor: dict[str, Any], count: int, where: str) -> list[list[float]]:
    data = tensor.get("data")
    values = _flatten(data)
    if not values or not all(_is_number(v) for v in values):
        raise EventFormatError(f"{where}: output 'probabilities' must hold numbers")
    if len(values) % count:
        raise EventFormatError(
            f"{where}: output 'probabilities' has {len(values)} values for {count} labels"
        )
    width = len(values) // count
    return [[float(v) for v in values[i : i + width]] for i in range(0, len(values), width)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
