"""A revision's requests, server errors and p99 latency, as Prometheus recorded them.

The model server's own metrics, scraped from every predictor pod by the PodMonitor of
manifests/observability, whose podTargetLabels copy each pod's Knative revision
(`serving.knative.dev/revision`) onto its series:

- requests: calls of the model's predict, `request_predict_seconds_count` (KServe's histogram,
  which V1 and V2 inference record alike, failed predictions included; requests refused
  before predict, such as a 400 for a malformed body, are not in it);
- server errors: `textops_request_errors_total{status=~"5.."}` (every 5xx the predictor
  answered, counted by its middleware);
- the p99 predict latency, from `request_predict_seconds_bucket`.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

from textops.components.common.errors import ConfigError, TextopsError

#: `serving.knative.dev/revision` as the Prometheus Operator names a pod label it copies
#: (`podTargetLabels`): every character a label name cannot hold becomes `_`.
REVISION_LABEL = "serving_knative_dev_revision"
#: KServe's predict histogram (kserve.metrics) and the predictor's error counter (serve.metrics).
PREDICT_HISTOGRAM = "request_predict_seconds"
ERRORS_COUNTER = "textops_request_errors_total"
#: The latency quantile compared.
QUANTILE = 0.99
#: Seconds one Prometheus query may take.
QUERY_TIMEOUT_SECONDS = 30.0


class PrometheusQueryError(TextopsError):
    """Prometheus did not answer a query, refused it, or answered something unexpected."""


class InstantQuery(Protocol):
    """Evaluates a PromQL expression at a time; None when it has no value."""

    def __call__(self, promql: str, at: float) -> float | None: ...


class PrometheusApi:
    """Instant queries against Prometheus's HTTP API (`/api/v1/query`)."""

    def __init__(self, url: str, timeout_seconds: float = QUERY_TIMEOUT_SECONDS) -> None:
        """Point at Prometheus's base URL (a path prefix, as behind a proxy, is kept).

        Raises:
            ConfigError: The URL is not http(s).
        """
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(
                f"prometheus_url must be an http:// or https:// URL of Prometheus, got {url!r}"
            )
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def __call__(self, promql: str, at: float) -> float | None:
        """The one value `promql` has at `at` (a Unix time); None for an empty result or NaN.

        Raises:
            PrometheusQueryError: Prometheus did not answer, refused the query, or answered
                more than one series.
        """
        query = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        where = f"Prometheus at {self.url} (prometheus_url)"
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{query}", timeout=self.timeout_seconds
            ) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = _prometheus_error(e.read()) or e.reason
            raise PrometheusQueryError(f"{where} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise PrometheusQueryError(f"no answer from {where}: {getattr(e, 'reason', e)}") from e
        except ValueError as e:
            raise PrometheusQueryError(f"{where} answered something that is not JSON") from e
        if answer.get("status") != "success":
            raise PrometheusQueryError(f"{where} refused {promql}: {answer.get('error')}")
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            result = [{"value": result}]
        if len(result) > 1:
            raise PrometheusQueryError(f"{promql} gave {len(result)} series, not one")
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


def _prometheus_error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or "")
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300]


def _matcher(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value)


def _counted(series: str, window: int) -> str:
    """What each series of `series` counted during the last `window` seconds.

    `increase()` ignores a series' first sample, and a labelled counter only appears at its
    first event: a canary's first 5xx would count as nothing. A series that existed before the
    window counts its increase; one that appeared during it counts its whole value (it started
    from 0).
    """
    span = f"{window}s"
    return (
        f"((increase({series}[{span}]) and {series} offset {span})"
        f" or ({series} unless {series} offset {span}))"
    )


def revision_queries(namespace: str, revision: str, window: int) -> dict[str, str]:
    """The PromQL for one revision's requests, 5xx answers and p99 over the window."""
    where = f"namespace={_matcher(namespace)},{REVISION_LABEL}={_matcher(revision)}"
    count = f"{PREDICT_HISTOGRAM}_count{{{where}}}"
    errors = f'{ERRORS_COUNTER}{{{where},status=~"5.."}}'
    buckets = f"{PREDICT_HISTOGRAM}_bucket{{{where}}}"
    return {
        "requests": f"sum({_counted(count, window)})",
        "errors": f"sum({_counted(errors, window)})",
        "p99_seconds": f"histogram_quantile({QUANTILE}, sum by (le) ({_counted(buckets, window)}))",
    }
