"""Runs added to the Evidently workspace show as history in `evidently ui` (the real server on
a loopback port)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from textops.components.monitor.drift_job import OutputPaths, run_drift_job
from textops.components.monitor.drift_settings import DriftSettings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def evidently_ui(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`evidently ui` serving a workspace directory (empty at first) on a free loopback port."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    port = free_port()
    evidently = Path(sys.executable).with_name("evidently")
    server = subprocess.Popen(
        [
            str(evidently),
            "ui",
            "--workspace",
            str(workspace),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, "DO_NOT_TRACK": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{base}/api/version")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(server.stderr.read().decode()[-2000:]) from None
                time.sleep(0.3)
        yield base, workspace
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.integration
def test_each_drift_run_adds_a_point_to_the_history_the_ui_shows(
    evidently_ui, drift_bundle_dir, held_out_traffic, tweet_traffic, tmp_path
) -> None:
    base, workspace = evidently_ui
    aucs = []
    for name, window in (
        ("healthy", held_out_traffic.head(200)),
        ("tweets", tweet_traffic.head(200)),
    ):
        job = run_drift_job(
            bundle_dir=drift_bundle_dir,
            window=window,
            settings=DriftSettings(),
            paths=OutputPaths.in_dir(tmp_path / name),
            model_name="textops-classifier",
            workspace=workspace,
        )
        aucs.append(next(t.value for t in job.result.tests if t.name == "text_content"))

    (project,) = get(f"{base}/api/projects")
    assert project["name"] == "textops-classifier drift"
    snapshots = get(f"{base}/api/projects/{project['id']}/snapshots")
    assert len(snapshots) == 2
    assert all(s["tags"] == ["textops", "drift"] for s in snapshots)
    # The series the dashboard's "text_content drift score" panel plots, one value per run.
    series = get(
        f"{base}/api/v2/snapshots/{project['id']}/data_series_batch",
        {
            "series_filter": [
                {
                    "tags": [],
                    "metadata": {},
                    "metric": "evidently:metric_v2:ValueDrift",
                    "metric_labels": {"column": "text"},
                }
            ]
        },
    )
    (line,) = series["series"]
    assert line["values"] == pytest.approx(aucs)
    dashboard = get(f"{base}/api/v2/dashboards/{project['id']}")
    (tab,) = dashboard["tabs"]
    assert len(tab["panels"]) == len(dashboard["panels"]) == 6
