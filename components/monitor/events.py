"""Reading the CloudEvents of KServe's payload logger into events for the payload store.

KServe's agent sends each inference request and its response as two CloudEvents (spec 1.0) in
binary mode: headers `Ce-Specversion`, `Ce-Id` (the request id, the same for both), `Ce-Type`
(`org.kubeflow.serving.inference.request` or `.response`), `Ce-Source`, `Ce-Time` and the
extensions `Ce-Inferenceservicename`, `Ce-Namespace`, `Ce-Component`, `Ce-Endpoint`; the HTTP
body is the raw request or response body, with the inference request's Content-Type (which may
be absent). Structured mode (`application/cloudevents+json`, the payload in `data` or
`data_base64`) and batches (`application/cloudevents-batch+json`) are read too.

Payloads are KServe's V1 and V2 (Open Inference Protocol) JSON bodies. Texts are redacted here,
before anything stores them; only the counts of what was redacted leave this module. Every
value is also made storable here (`storable.py`), before the event joins a shared transaction:
an identifier the store cannot hold is refused, free text is normalized. Any bytes and any
headers either give events the store can hold or raise `EventFormatError`, nothing else. Error
messages name fields and positions, never the texts, so they are safe to log and to return.

The CloudEvents SDK (`cloudevents.http.from_http`, 1.13, a KServe dependency) reads these modes
too, but not under these guarantees, so it serves as the reference in the tests instead
(tests/unit/test_collector_events.py reads its `to_binary` and `to_structured` output): its
error messages quote the body, texts included; it lets `RecursionError` out on deeply nested
JSON; it refuses a binary event without `Ce-Source`, then parses the body as a structured one;
it does not percent-decode `Ce-` headers; it has no batch mode; and it parses a structured body
two or three times (measured on one core: 42 us against 13 us for a binary event, 88 us against
16 us for a structured one of 50 texts).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote

from textops.components.common.errors import EventFormatError
from textops.components.common.redaction import redact
from textops.components.monitor.inference_bodies import request_texts, response_predictions
from textops.components.monitor.storable import (
    UNSTORABLE_CHARACTERS,
    storable_confidence,
    storable_text,
    unstorable_reason,
)
from textops.components.monitor.store import EventKind, PayloadEvent

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_KINDS: dict[str, EventKind] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
SPEC_VERSIONS = ("1.0", "0.3")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
#: Longest event id accepted; KServe's are uuids or the client's X-Request-Id.
MAX_ID_LENGTH = 512
#: Characters of a refused attribute's value shown in an error message.
_SHOWN_CHARACTERS = 60


@dataclass(frozen=True)
class CloudEvent:
    """The attributes the collector uses, and the event's data parsed from JSON."""

    id: str
    kind: EventKind
    model_name: str | None
    data: Any


class ReadEvent(NamedTuple):
    """A CloudEvent as the store takes it, and what was changed on the way there."""

    #: The event, its texts redacted and every value storable.
    event: PayloadEvent
    #: Pieces of personal data redacted, by kind (`common.redaction.KINDS`).
    redactions: Counter[str]
    #: Values made storable, by reason (`storable.NORMALIZATION_REASONS`).
    normalized: Counter[str]


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
        return [_event(attributes, lambda event_id: _json_data(body, repr(event_id)))]
    raise EventFormatError(
        "not a CloudEvent: send binary mode (headers Ce-Specversion, Ce-Id, Ce-Type, ...) or "
        f"structured mode (Content-Type {STRUCTURED_CONTENT_TYPE}); got Content-Type "
        f"{content_type or 'none'} and no Ce-Specversion header"
    )


def to_payload_event(event: CloudEvent, received_at: float) -> ReadEvent:
    """The store's event for a parsed CloudEvent: texts redacted, every value storable.

    Raises:
        EventFormatError: The payload is not a V1 or V2 request or response of this shape, or
            an identifier in it cannot be stored.
    """
    counts: Counter[str] = Counter()
    normalized: Counter[str] = Counter()
    if event.kind == "request":
        texts = []
        for text in request_texts(event.data, event.id):
            # Normalized first, so that redaction reads the text the store will hold.
            redacted, found = redact(storable_text(text, normalized))
            texts.append(redacted)
            counts.update(found)
        stored = PayloadEvent(
            event.id, "request", received_at, event.model_name, texts=tuple(texts)
        )
        return ReadEvent(stored, counts, normalized)
    predictions, version, body_model = response_predictions(event.data, event.id)
    where = f"response {event.id!r}"
    stored = PayloadEvent(
        event.id,
        "response",
        received_at,
        event.model_name or _identifier(body_model, f"{where}: model_name"),
        model_version=_identifier(version, f"{where}: model_version"),
        predictions=tuple(
            (storable_text(label, normalized), storable_confidence(confidence, normalized))
            for label, confidence in predictions
        ),
    )
    return ReadEvent(stored, counts, normalized)


def _header_value(value: str) -> str:
    # Binary mode percent-encodes characters outside printable ASCII, '"' and '%'.
    return unquote(value) if "%" in value else value


def _event(attributes: Mapping[str, Any], data: Any) -> CloudEvent:
    """Check the attributes; `data` is the parsed data or a function of the event id giving it."""
    version = attributes.get("specversion")
    if not isinstance(version, str) or version not in SPEC_VERSIONS:
        raise EventFormatError(
            f"unsupported CloudEvents specversion {_shown(version)}: expected one of "
            f"{SPEC_VERSIONS}"
        )
    event_id = attributes.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise EventFormatError("the CloudEvent has no id (Ce-Id): KServe sets it per request")
    if len(event_id) > MAX_ID_LENGTH:
        raise EventFormatError(
            f"the CloudEvent id is {len(event_id)} characters long; at most {MAX_ID_LENGTH} "
            "are accepted"
        )
    _identifier(event_id, "the CloudEvent id (Ce-Id)")
    event_type = attributes.get("type")
    kind = EVENT_KINDS.get(event_type) if isinstance(event_type, str) else None
    if kind is None:
        raise EventFormatError(
            f"event {event_id!r} has type {_shown(event_type)}: expected "
            f"{REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    model_name = attributes.get("inferenceservicename")
    return CloudEvent(
        id=event_id,
        kind=kind,
        model_name=_identifier(
            model_name if isinstance(model_name, str) and model_name else None,
            f"event {event_id!r}: the inferenceservicename (Ce-Inferenceservicename)",
        ),
        data=data(event_id) if callable(data) else data,
    )


def _identifier(value: str | None, where: str) -> str | None:
    """`value`, which joins events or names a model, if the store can hold it unchanged."""
    reason = None if value is None else unstorable_reason(value)
    if reason is not None:
        raise EventFormatError(
            f"{where} holds {UNSTORABLE_CHARACTERS[reason]}, which the payload store cannot "
            "hold; an identifier is never altered, so send it as valid UTF-8 without NUL"
        )
    return value


def _shown(value: Any) -> str:
    """A short repr of an attribute's value for a message (attributes are not payload)."""
    shown = repr(value)
    if len(shown) <= _SHOWN_CHARACTERS:
        return shown
    return shown[:_SHOWN_CHARACTERS] + "..."


def _structured(envelope: Any) -> CloudEvent:
    if not isinstance(envelope, dict):
        raise EventFormatError("a structured CloudEvent must be a JSON object")
    event_id = _shown(envelope.get("id"))
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise EventFormatError(f"event {event_id}: data_base64 is not base64") from e
        return _event(envelope, _json_data(raw, event_id))
    if "data" not in envelope:
        raise EventFormatError(f"event {event_id} has neither data nor data_base64")
    data = envelope["data"]
    if isinstance(data, str):
        # Some senders put the JSON payload as a string rather than as JSON; lone surrogates
        # are passed through here and refused or normalized with the values they end up in.
        data = _json_data(data.encode("utf-8", "surrogatepass"), event_id)
    return _event(envelope, data)


def _json_body(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise EventFormatError(f"the {what} is not valid JSON: {_position(e)}") from e


def _json_data(body: bytes, event_id: str) -> Any:
    """The event's data parsed from JSON (`event_id` as shown in messages)."""
    if not body.strip():
        raise EventFormatError(f"event {event_id} has no data: expected a JSON inference body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise EventFormatError(
            f"event {event_id}: the data is not JSON ({_position(e)}); the collector reads "
            "KServe V1/V2 JSON bodies"
        ) from e


def _position(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    # json.loads refuses integers of more than sys.get_int_max_str_digits() digits.
    return "a number too long to read"
