"""The alerts and the Grafana dashboard in manifests/observability.

Every query must name metrics and labels of the serving and monitoring contracts, and every
metric it names must be defined: KServe's in the installed kserve package, textops's own in
components/. A name missing from components/ fails here, so that a rename on either side shows.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY = ROOT / "manifests" / "observability"
DASHBOARD = OBSERVABILITY / "dashboards" / "textops.json"

#: The metrics of the serving and monitoring contracts: name -> (type, labels).
CONTRACT_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    # KServe's ModelServer (kserve/metrics.py).
    "request_preprocess_seconds": ("histogram", frozenset({"model_name"})),
    "request_predict_seconds": ("histogram", frozenset({"model_name"})),
    "request_postprocess_seconds": ("histogram", frozenset({"model_name"})),
    # The textops predictor.
    "textops_predictions_total": ("counter", frozenset({"model_name", "label"})),
    "textops_request_errors_total": ("counter", frozenset({"model_name", "status"})),
    "textops_model_version_info": ("gauge", frozenset({"model_name", "version"})),
    "textops_payload_events_sent_total": ("counter", frozenset({"model_name", "type"})),
    "textops_payload_events_dropped_total": ("counter", frozenset({"model_name", "reason"})),
    # The payload collector.
    "textops_collector_events_received_total": ("counter", frozenset()),
    "textops_collector_events_stored_total": ("counter", frozenset()),
    "textops_collector_events_rejected_total": ("counter", frozenset({"reason"})),
    "textops_collector_redactions_total": ("counter", frozenset({"kind"})),
    # The drift job.
    "textops_drift_detected": ("gauge", frozenset({"model_name"})),
    "textops_drift_score": ("gauge", frozenset({"model_name", "test"})),
    "textops_drift_window_rows": ("gauge", frozenset({"model_name"})),
    "textops_drift_last_run_timestamp_seconds": ("gauge", frozenset({"model_name"})),
}
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"namespace", "pod", "container", "job", "instance", "service"})
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w$])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def _series_labels(series: str) -> frozenset[str]:
    """The labels a queried series may carry: its metric's, the target's, `le` on buckets."""
    if series in CONTRACT_METRICS:
        return CONTRACT_METRICS[series][1] | TARGET_LABELS
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and CONTRACT_METRICS.get(base, ("",))[0] == "histogram":
            extra = {"le"} if suffix == "_bucket" else set()
            return CONTRACT_METRICS[base][1] | TARGET_LABELS | extra
    raise KeyError(series)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, not a series
        names.add(match.group())
    return names


def label_names(expr: str) -> Iterator[tuple[str | None, str]]:
    """(series, label) for each label matched in a selector; (None, label) when grouped by."""
    for match in _SELECTOR.finditer(expr):
        for label in _MATCHER.findall(match.group(2)):
            yield match.group(1), label
    for match in _GROUPING.finditer(expr):
        for label in match.group(1).split(","):
            if label.strip():
                yield None, label.strip()


def test_the_query_parser_finds_series_and_labels() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (model_name, le) (rate(request_predict_seconds_bucket"
        '{namespace="$namespace", status=~"5.."}[5m]))) / ignoring (label) group_left '
        "sum(textops_predictions_total) > 1e3 and on (namespace) up"
    )
    assert metric_names(expr) == {
        "request_predict_seconds_bucket",
        "textops_predictions_total",
        "up",
    }
    assert set(label_names(expr)) == {
        ("request_predict_seconds_bucket", "namespace"),
        ("request_predict_seconds_bucket", "status"),
        (None, "model_name"),
        (None, "le"),
        (None, "label"),
        (None, "namespace"),
    }


@pytest.fixture(scope="module")
def objects(manifests: Any) -> tuple[dict[str, Any], ...]:
    """manifests/observability, rendered (conftest.py fails when kubectl is absent)."""
    return tuple(manifests.render("observability"))


def _one(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def _rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups, read from its file: these checks need no kubectl."""
    rule = yaml.safe_load((OBSERVABILITY / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return list(rule["spec"]["groups"])


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _rule_groups() for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _all_queries() -> list[str]:
    queries = [rule["expr"] for rule in _rules()]
    queries += [t["expr"] for p in _dashboard_panels() for t in p["targets"]]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<selector>, <label>): the selector is a query, the label one of its.
            call = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert call, variable["query"]["query"]
            queries.append(f"max by ({call.group(2)}) ({call.group(1)})")
    return queries


# --- alerts ------------------------------------------------------------------------------------

REQUIRED_ALERTS = {
    "TextopsDriftDetected": "textops_drift_detected",
    "TextopsPredictorErrorRate": "textops_request_errors_total",
    "TextopsPredictorLatencyP99": "request_predict_seconds_bucket",
    "TextopsCollectorRejectingEvents": "textops_collector_events_rejected_total",
    "TextopsPayloadEventsDropped": "textops_payload_events_dropped_total",
}


def test_the_alerts_are_well_formed() -> None:
    groups = _rule_groups()
    assert len({g["name"] for g in groups}) == len(groups)
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert re.fullmatch(r"Textops[A-Z]\w+", rule["alert"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert "$" not in rule["expr"].replace("$labels", ""), "dashboard variables in a rule"
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_required_alerts_watch_the_right_metrics() -> None:
    rules = {rule["alert"]: rule["expr"] for rule in _rules()}
    for alert, metric in REQUIRED_ALERTS.items():
        assert metric in metric_names(rules[alert]), alert
    assert "histogram_quantile(0.99" in rules["TextopsPredictorLatencyP99"]
    assert 'status=~"5.."' in rules["TextopsPredictorErrorRate"]


# --- the dashboard -------------------------------------------------------------------------------


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    for panel in _dashboard_panels():
        assert panel["title"] and panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queries = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in _dashboard_panels()}
    everything = " ".join(queries.values())
    # Latency, throughput, errors, prediction mix, drift.
    assert re.search(r"histogram_quantile\(0\.99, .*request_predict_seconds_bucket", everything)
    assert "rate(request_predict_seconds_count" in everything
    assert "rate(textops_predictions_total" in everything
    assert "textops_request_errors_total" in everything
    assert any("sum by (label)" in q and "textops_predictions_total" in q for q in queries.values())
    assert "textops_drift_detected" in everything and "textops_drift_score" in everything


def test_the_rendered_objects_are_the_expected_kinds(objects: tuple[dict[str, Any], ...]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "ServiceMonitor",
    ]
    assert _one(objects, "PrometheusRule")["spec"]["groups"] == _rule_groups()


def test_the_configmap_carries_the_dashboard_for_grafana(
    objects: tuple[dict[str, Any], ...],
) -> None:
    configmap = _one(objects, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"textops.json": DASHBOARD.read_text()}


# --- metric names ------------------------------------------------------------------------------


def test_queries_use_only_the_contracts_metrics_and_labels() -> None:
    allowed_grouping = frozenset().union(
        *(labels for _, labels in CONTRACT_METRICS.values()), TARGET_LABELS, {"le"}
    )
    for query in _all_queries():
        for series in metric_names(query):
            try:
                _series_labels(series)
            except KeyError:
                pytest.fail(f"{series} is not a metric of the contracts: {query}")
        for series, label in label_names(query):
            allowed = allowed_grouping if series is None else _series_labels(series)
            assert label in allowed, f"label {label} of {series or 'a grouping'} in {query}"


def _kserve_metrics() -> str:
    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.origin is not None, "kserve is not installed"
    return (Path(spec.origin).parent / "metrics.py").read_text()


def _components_source() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "components").rglob("*.py")))


def _base_metric(series: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in CONTRACT_METRICS:
            return series.removesuffix(suffix)
    return series


def test_every_queried_metric_is_defined() -> None:
    """KServe's histograms in kserve, textops's metrics in components/ (fails until defined)."""
    queried = {_base_metric(s) for q in _all_queries() for s in metric_names(q)}
    assert queried >= {_base_metric(metric) for metric in REQUIRED_ALERTS.values()}
    kserve, components = _kserve_metrics(), _components_source()
    missing = []
    for metric in sorted(queried):
        if not metric.startswith("textops_"):
            if not re.search(rf"""Histogram\(\s*["']{metric}["']""", kserve):
                missing.append(f"{metric} (not a KServe histogram)")
            continue
        # prometheus_client adds _total to counters and _info to Info metrics, so the code
        # may name them without the suffix.
        spellings = {metric, re.sub(r"_(total|info)$", "", metric)}
        if not any(re.search(rf"""["']{name}["']""", components) for name in spellings):
            missing.append(metric)
    assert not missing, f"queried but defined nowhere in components/: {missing}"


# --- scraping ----------------------------------------------------------------------------------


def test_prometheus_scrapes_the_predictor_and_the_collector(
    objects: tuple[dict[str, Any], ...],
) -> None:
    pod_monitor = _one(objects, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "textops-classifier",
        "component": "predictor",
    }
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["targetPort"] == 8080 and endpoint["path"] == "/metrics"
    service_monitor = _one(objects, "ServiceMonitor", "textops-collector")
    assert service_monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "textops-collector"
    }
    (endpoint,) = service_monitor["spec"]["endpoints"]
    service = yaml.safe_load((ROOT / "manifests/base/collector/service.yaml").read_text())
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"


def test_only_prometheus_is_let_in_for_the_metrics(objects: tuple[dict[str, Any], ...]) -> None:
    policy = _one(objects, "NetworkPolicy", "textops-collector-metrics")
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "textops-collector"
    }
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8088}]


# --- the drift gauges' way in: the Pushgateway ---------------------------------------------------

PUSHGATEWAY = "textops-pushgateway"
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
#: The label Kubeflow Pipelines (v2) puts on every pod of a run, the drift step's included.
PIPELINE_POD_PEER = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}},
}


def _flag_value(args: list[str], flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}=")]
    return value


def _pushgateway_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    deployment = _one(objects, "Deployment", PUSHGATEWAY)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _pushgateway_url(objects: tuple[dict[str, Any], ...]) -> str:
    service = _one(objects, "Service", PUSHGATEWAY)
    (port,) = service["spec"]["ports"]
    return (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}"
        f".svc.cluster.local:{port['port']}"
    )


def test_prometheus_scrapes_the_pushgateway_keeping_the_pushed_labels(
    objects: tuple[dict[str, Any], ...],
) -> None:
    deployment = _one(objects, "Deployment", PUSHGATEWAY)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one(objects, "Service", PUSHGATEWAY)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container = _pushgateway_container(objects)
    (container_port,) = container["ports"]
    assert port["targetPort"] == container_port["name"]
    listen = _flag_value(container["args"], "--web.listen-address")
    assert listen == f":{container_port['containerPort']}"
    monitor = _one(objects, "ServiceMonitor", PUSHGATEWAY)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    # The pushed job and model_name win over the target's labels (the operator's default
    # would rename the pushed job exported_job); the target adds namespace.
    assert endpoint["honorLabels"] is True


def test_the_pushgateway_keeps_its_pushes_on_a_writable_volume(
    objects: tuple[dict[str, Any], ...],
) -> None:
    container = _pushgateway_container(objects)
    persistence = Path(_flag_value(container["args"], "--persistence.file"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (mount,) = [m for m in container["volumeMounts"] if persistence.parent == Path(m["mountPath"])]
    pod = _one(objects, "Deployment", PUSHGATEWAY)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_only_prometheus_and_pipeline_pods_reach_the_pushgateway(
    objects: tuple[dict[str, Any], ...],
) -> None:
    policy = _one(objects, "NetworkPolicy", f"{PUSHGATEWAY}-ingress")
    pod_labels = _one(objects, "Deployment", PUSHGATEWAY)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (port,) = _pushgateway_container(objects)["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    assert sorted(rule["from"], key=str) == sorted([PROMETHEUS_PEER, PIPELINE_POD_PEER], key=str)


def test_the_documented_pushgateway_url_is_the_manifests(
    objects: tuple[dict[str, Any], ...],
) -> None:
    """Every `--param pushgateway=...` in the docs, and the Deployment's own comment, name the
    Service this kustomization deploys."""
    url = _pushgateway_url(objects)
    documents = [ROOT / "docs" / "operations.md", ROOT / "manifests" / "README.md"]
    for document in documents:
        given = re.findall(r"--param pushgateway=(\w+://[^\s`]+)", document.read_text())
        assert given, f"{document.name} gives the drift job no pushgateway"
        assert set(given) == {url}, document.name
    deployment = (OBSERVABILITY / "pushgateway" / "deployment.yaml").read_text()
    assert f"--pushgateway {url}" in deployment
