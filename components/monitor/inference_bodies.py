"""KServe V1 and V2 (Open Inference Protocol) bodies: a request's texts, a response's predictions.

The bodies come parsed from JSON, so any JSON value may arrive here: every function either
returns what it promises or raises `EventFormatError` naming the field and position, never the
values, so the message is safe to log and to return.
"""

from __future__ import annotations

import math
from typing import Any

from textops.components.common.errors import EventFormatError

REQUEST_SHAPES = (
    'V1 {"instances": ["text", ...]} or {"instances": [{"text": "..."}, ...]}, or V2 '
    '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": ["...", ...]}]}'
)
RESPONSE_SHAPES = (
    'V1 {"predictions": [{"label": "...", "probabilities": {"label": p, ...}}, ...]} or '
    '{"predictions": ["label", ...]}, or V2 {"outputs": [{"name": "label", "datatype": '
    '"BYTES", ...}, {"name": "probabilities", "datatype": "FP32", "shape": [n, k], ...}]}'
)


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
    """The leaves of nested lists, in order (without recursion: any depth JSON allows)."""
    flat: list[Any] = []
    stack = [iter([data])]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
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
            return label, _as_float(scores.get(label, max(scores.values())))
        confidence: Any = value.get("confidence")
        return label, _as_float(confidence) if _is_number(confidence) else None
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
    return [[_as_float(v) for v in values[i : i + width]] for i in range(0, len(values), width)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: float) -> float:
    """`value` as a float; an integer too large for one is infinite (then stored unknown)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
