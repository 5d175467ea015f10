"""The drift job's gauges reach Prometheus with the labels the alerts group by, and alert there.

Run for real on loopback: the Pushgateway of manifests/observability (Debian's
prometheus-pushgateway, started with the Deployment's own arguments and probed on its probes'
paths), the drift job's own `push_gauges`, and a Prometheus (Debian's prometheus) that scrapes
the Pushgateway as the Prometheus Operator does from the ServiceMonitor (its path and
honorLabels; the target labels namespace, service, endpoint, pod and job) and evaluates the
PrometheusRule's groups. Without the binaries these tests fail, naming the packages, rather
than skip (CI installs them: .ci/run).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RULE = ROOT / "manifests" / "observability" / "prometheusrule.yaml"
PUSHGATEWAY = "textops-pushgateway"
MODEL = "textops-classifier"
#: How long a server may take to start, and Prometheus to scrape and evaluate.
WAIT_SECONDS = 30.0


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(f"/usr/bin/{name}")
    if found is None:
        pytest.fail(
            f"{name} is not installed: install the Debian package `{package}` "
            f"(apt-get install {package}), as .ci/run does"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Server:
    """A server started for a test: its base URL, process and log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.process.args!r} exited:\n{self.log.read_text()}")
            try:
                if _get(self.url + path)[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        pytest.fail(
            f"{self.url}{path} not ready within {WAIT_SECONDS:g} s:\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(command: list[str], port: int, log: Path) -> Server:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", process, log)


@pytest.fixture(scope="module")
def observability(manifests: Any) -> tuple[dict[str, Any], ...]:
    return tuple(manifests.render("observability"))


@pytest.fixture
def pushgateway(
    manifests: Any, observability: tuple[dict[str, Any], ...], tmp_path: Path
) -> Iterator[Server]:
    """The Pushgateway as the Deployment runs it, on a loopback port and a local file."""
    deployment = manifests.only(observability, "Deployment", PUSHGATEWAY)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = _free_port()
    here = {
        "--web.listen-address": f"127.0.0.1:{port}",
        "--persistence.file": str(tmp_path / "pushgateway-metrics"),
    }
    args = [
        f"{flag}={here[flag]}" if (flag := arg.split("=", 1)[0]) in here else arg
        for arg in container["args"]
    ]
    binary = _binary("prometheus-pushgateway", "prometheus-pushgateway")
    server = _start([binary, *args], port, tmp_path / "pushgateway.log")
    try:
        server.wait_ready(container["readinessProbe"]["httpGet"]["path"])
        assert _get(server.url + container["livenessProbe"]["httpGet"]["path"])[0] == 200
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(
    manifests: Any, observability: tuple[dict[str, Any], ...], pushgateway: Server, tmp_path: Path
) -> Iterator[Server]:
    """A Prometheus that scrapes the Pushgateway as the operator would from the
    ServiceMonitor, and evaluates the PrometheusRule's groups every second."""
    monitor = manifests.only(observability, "ServiceMonitor", PUSHGATEWAY)
    service = manifests.only(observability, "Service", PUSHGATEWAY)
    (endpoint,) = monitor["spec"]["endpoints"]
    rules = tmp_path / "rules.yaml"
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    rules.write_text(yaml.safe_dump({"groups": groups}))
    # The labels the operator's relabelling gives each target of a ServiceMonitor.
    target_labels = {
        "namespace": service["metadata"]["namespace"],
        "service": service["metadata"]["name"],
        "endpoint": endpoint["port"],
        "pod": f"{PUSHGATEWAY}-0",
        "container": "pushgateway",
        "job": service["metadata"]["name"],
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": f"serviceMonitor/{target_labels['namespace']}/{PUSHGATEWAY}/0",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint["path"],
                "static_configs": [
                    {"targets": [pushgateway.url.removeprefix("http://")], "labels": target_labels}
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    binary = _binary("prometheus", "prometheus")
    command = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = _start(command, port, tmp_path / "prometheus.log")
    try:
        server.wait_ready("/-/ready")
        yield server
    finally:
        server.stop()


def _query(prometheus: Server, query: str) -> list[dict[str, Any]]:
    """The labels of each series an instant query returns, once it returns any."""
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        status, body = _get(url)
        assert status == 200, body
        result = json.loads(body)["data"]["result"]
        if result:
            return [series["metric"] for series in result]
        time.sleep(0.5)
    pytest.fail(
        f"{query} returned nothing within {WAIT_SECONDS:g} s:\n{prometheus.log.read_text()}"
    )


def test_pushed_drift_gauges_keep_their_labels_and_fire_the_drift_alert(
    pushgateway: Server, prometheus: Server
) -> None:
    from textops.components.monitor.drift import DriftResult
    from textops.components.monitor.drift_report import PUSH_JOB, drift_gauges, push_gauges

    result = DriftResult(
        status="drift",
        reasons=("the prediction distribution drifted",),
        tests=(),
        window_rows=500,
        labelled_rows=0,
        reference_rows=500,
        min_window_rows=100,
    )
    push_gauges(drift_gauges(result, MODEL), pushgateway.url, MODEL)

    (series,) = _query(prometheus, "textops_drift_last_run_timestamp_seconds")
    # Pushed labels win (honorLabels); the target adds the namespace the alerts group by.
    assert series["job"] == PUSH_JOB
    assert series["model_name"] == MODEL
    assert series["namespace"] == "textops"
    assert not [label for label in series if label.startswith("exported_")]

    (alert,) = _query(prometheus, 'ALERTS{alertname="TextopsDriftDetected", alertstate="firing"}')
    assert (alert["namespace"], alert["model_name"]) == ("textops", MODEL)

    # The drift step pushes its InferenceService's namespace: the same model name served in
    # another namespace keeps a group of its own, and that namespace wins over the target's.
    push_gauges(drift_gauges(result, MODEL), pushgateway.url, MODEL, namespace="reviews")
    (other,) = _query(prometheus, 'textops_drift_last_run_timestamp_seconds{namespace="reviews"}')
    assert other["model_name"] == MODEL and other["job"] == PUSH_JOB
    assert len(_query(prometheus, "textops_drift_last_run_timestamp_seconds")) == 2
