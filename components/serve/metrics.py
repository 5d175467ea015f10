"""The predictor's own Prometheus metrics, beside KServe's `request_*_seconds` histograms.

They live in prometheus_client's default registry, which KServe's `/metrics` route exports.
The dashboard and the alerts use these names; change them only together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

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
RUNTIME_LABELS = (
    "version",
    "provider",
    "precision",
    "requested_precision",
    "fallback",
    "variant",
    "engine",
    "variant_choice",
)
MODEL_RUNTIME = Gauge(
    "textops_model_runtime_info",
    "1 for how the served model version runs: the variant and engine served and how they "
    "were chosen (probe: measured on this host; setting: named), the execution provider, the "
    "graph's precision served and what was asked, and the fallback that explains a "
    "difference (none when there is no difference).",
    ["model_name", *RUNTIME_LABELS],
)
VARIANT_PROBE_SECONDS = Gauge(
    "textops_variant_probe_seconds",
    "What the load-time probe measured for each variant of the served version on this host: "
    "seconds for one text alone (texts=1) and per text at the full inference batch "
    "(texts=batch).",
    ["model_name", "version", "variant", "texts"],
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


def set_probe_figures(
    model_name: str,
    served: tuple[str, Mapping[str, tuple[float, float]]],
    previous: tuple[str, Mapping[str, tuple[float, float]]] | None,
) -> None:
    """Export the probe's figures of the version served now (and drop the previous one's).

    Args:
        model_name: The served model's name.
        served: The version served now and its figures: variant name to (seconds for one
            text alone, seconds a text at the full batch); empty where no probe ran.
        previous: The same for the version served until now; None on the first load.
    """
    if previous is not None:
        version, figures = previous
        for variant in figures:
            for texts in ("1", "batch"):
                with contextlib.suppress(KeyError):  # never exported in this process
                    VARIANT_PROBE_SECONDS.remove(model_name, version, variant, texts)
    version, figures = served
    for variant, (single, per_text) in figures.items():
        VARIANT_PROBE_SECONDS.labels(model_name, version, variant, "1").set(single)
        VARIANT_PROBE_SECONDS.labels(model_name, version, variant, "batch").set(per_text)
