"""The predictor's own Prometheus metrics, beside KServe's `request_*_seconds` histograms.

They live in prometheus_client's default registry, which KServe's `/metrics` route exports.
The dashboard and the alerts use these names; change them only together.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "textops_predictions",
    "Texts classified, by predicted label.",
    ["model_name", "label"],
)
REQUEST_ERRORS = Counter(
    "textops_request_errors",
    "Requests the predictor answered with a 4xx or 5xx status.",
    ["model_name", "status"],
)
MODEL_VERSION = Gauge(
    "textops_model_version_info",
    "1 for the model version being served.",
    ["model_name", "version"],
)
#: The labels of `MODEL_RUNTIME` besides model_name, in its order.
RUNTIME_LABELS = ("version", "provider", "precision", "requested_precision", "fallback")
MODEL_RUNTIME = Gauge(
    "textops_model_runtime_info",
    "1 for how the served model version runs: the ONNX Runtime execution provider, the "
    "precision served and the one asked for, and the fallback that explains a difference "
    "(none when there is no difference).",
    ["model_name", *RUNTIME_LABELS],
)
INFERENCE_BATCH_TEXTS = Histogram(
    "textops_inference_batch_texts",
    "Texts per ONNX Runtime call, after coalescing concurrent requests.",
    ["model_name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PAYLOAD_EVENTS_SENT = Counter(
    "textops_payload_events_sent",
    "CloudEvents the payload logger delivered, by type (request or response).",
    ["model_name", "type"],
)
PAYLOAD_EVENTS_DROPPED = Counter(
    "textops_payload_events_dropped",
    "CloudEvents the payload logger gave up on: queue_full, send_failed or rejected.",
    ["model_name", "reason"],
)


def set_served_version(model_name: str, version: str, previous: str | None) -> None:
    """Point `textops_model_version_info` at `version` (and drop `previous`)."""
    if previous is not None and previous != version:
        with contextlib.suppress(KeyError):  # never exported in this process
            MODEL_VERSION.remove(model_name, previous)
    MODEL_VERSION.labels(model_name=model_name, version=version).set(1)


def clear_served(model_name: str, version: str, runtime: dict[str, str]) -> None:
    """Drop both info gauges of a model taken out of service (unloaded), so no dashboard or
    alert counts it as serving `version` while it answers nothing."""
    with contextlib.suppress(KeyError):
        MODEL_VERSION.remove(model_name, version)
    with contextlib.suppress(KeyError):
        MODEL_RUNTIME.remove(model_name, *(runtime[label] for label in RUNTIME_LABELS))


def set_served_runtime(
    model_name: str, runtime: dict[str, str], previous: dict[str, str] | None
) -> None:
    """Point `textops_model_runtime_info` at `runtime` (and drop `previous`).

    Args:
        model_name: The served model's name.
        runtime: A value for each of `RUNTIME_LABELS`.
        previous: The labels of the version served until now; None on the first load.
    """
    if previous is not None and previous != runtime:
        with contextlib.suppress(KeyError):  # never exported in this process
            MODEL_RUNTIME.remove(model_name, *(previous[label] for label in RUNTIME_LABELS))
    MODEL_RUNTIME.labels(model_name, *(runtime[label] for label in RUNTIME_LABELS)).set(1)
