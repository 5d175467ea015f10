"""What the drift job leaves behind: the HTML report, the JSON summary, Prometheus gauges, and a
run in an Evidently workspace (so that `evidently ui --workspace DIR` shows the history).

Gauges (the dashboard and alerts use these names):
    textops_drift_detected{model_name}                 1 when the window drifted, else 0
    textops_drift_score{model_name,test}               each test's value (p-value, ROC AUC,
                                                       distance or quality metric; see the
                                                       summary for its threshold and direction)
    textops_drift_window_rows{model_name}              rows in the window
    textops_drift_last_run_timestamp_seconds{model_name}
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textops.components.monitor.drift import DriftResult
from textops.components.monitor.drift_evidently import TEST_COLUMNS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "drift.prom"
#: The Prometheus job name the gauges are pushed under.
PUSH_JOB = "textops-drift"


def write_report(result: DriftResult, path: str | Path) -> Path:
    """Write Evidently's HTML report; a short page saying why when no test ran."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if result.snapshot is not None:
        result.snapshot.save_html(str(path))
    else:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons)
        path.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>textops drift</title>"
            f"</head><body><h1>No drift report: {html.escape(result.status)}</h1>"
            f"<ul>{reasons}</ul></body></html>\n",
            encoding="utf-8",
        )
    return path


def write_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """Write the JSON summary (see `DriftResult.summary`, plus what the job adds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def drift_gauges(result: DriftResult, model_name: str) -> CollectorRegistry:
    """The drift gauges of one run in a registry of their own."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    detected = Gauge(
        "textops_drift_detected",
        "1 when the last drift run found drift, else 0",
        ["model_name"],
        registry=registry,
    )
    score = Gauge(
        "textops_drift_score",
        "Value of each drift test in the last run (its threshold is in the summary)",
        ["model_name", "test"],
        registry=registry,
    )
    rows = Gauge(
        "textops_drift_window_rows",
        "Rows in the last drift run's window",
        ["model_name"],
        registry=registry,
    )
    last_run = Gauge(
        "textops_drift_last_run_timestamp_seconds",
        "When the last drift run measured, in seconds since the epoch",
        ["model_name"],
        registry=registry,
    )
    detected.labels(model_name).set(1 if result.drifted else 0)
    for test in result.tests:
        if test.value is not None:
            score.labels(model_name, test.name).set(test.value)
    rows.labels(model_name).set(result.window_rows)
    last_run.labels(model_name).set(result.measured_at.timestamp())
    return registry


def write_gauges(registry: CollectorRegistry, path: str | Path) -> Path:
    """Write the gauges in the Prometheus text format (for node_exporter's textfile collector)."""
    from prometheus_client import write_to_textfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


def push_gauges(
    registry: CollectorRegistry, url: str, model_name: str, namespace: str | None = None
) -> None:
    """Push the gauges to a Prometheus Pushgateway, grouped by model name (and namespace).

    Args:
        registry: The gauges.
        url: The Pushgateway.
        model_name: The model the gauges are about.
        namespace: The model's InferenceService's namespace, when it has one. Pushed as a
            grouping label, so the same model name in two namespaces keeps two groups and the
            alerts (which group by namespace and model_name) name the right one.

    Raises:
        OSError: The Pushgateway cannot be reached or refused the push.
    """
    from prometheus_client import push_to_gateway

    grouping = {"model_name": model_name, **({"namespace": namespace} if namespace else {})}
    push_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key=grouping)
    logger.info("pushed drift gauges url=%s grouping=%s", url, grouping)


def workspace_project_name(model_name: str) -> str:
    return f"{model_name} drift"


def add_to_workspace(result: DriftResult, workspace: str | Path, model_name: str) -> str | None:
    """Add the run to the Evidently workspace's project for `model_name` (created if absent).

    Returns:
        The id of the stored run, or None when no test ran (nothing to show).
    """
    if result.snapshot is None:
        return None
    from evidently.ui.workspace import Workspace

    Path(workspace).mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    name = workspace_project_name(model_name)
    found = ws.search_project(name)
    project = found[0] if found else _create_project(ws, name, model_name)
    ref = ws.add_run(project.id, result.snapshot, include_data=False)
    logger.info("added drift run to workspace=%s project=%s run=%s", workspace, name, ref.id)
    return str(ref.id)


def _create_project(ws: Any, name: str, model_name: str) -> Any:
    """A project whose dashboard plots every data test's score over time."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    project = ws.create_project(
        name, description=f"textops drift runs of {model_name} against its reference sample"
    )
    panels = [
        line_plot_panel(
            title=f"{test} drift score",
            values=[
                PanelMetric(legend=test, metric="ValueDrift", metric_labels={"column": column})
            ],
            size="half",
        )
        for test, column in TEST_COLUMNS.items()
    ]
    # Saved whole: adding panels one by one to a named tab lists each of them twice.
    tab = DashboardTabModel(title="Drift", panels=[panel.id for panel in panels])
    ws.save_dashboard(project.id, DashboardModel(tabs=[tab], panels=panels))
    return project
