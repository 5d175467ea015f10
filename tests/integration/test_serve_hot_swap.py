"""A new version goes live through KServe's repository load route, under load, with no failure.

The predictor serves a local model repository (`--model-repository`); the test publishes
versions with the deploy step's own `publish_bundle`, calls
`POST /v2/repository/models/<name>/load`, and keeps clients busy throughout. Readiness tells
the truth across `.../unload` and `.../load`: not ready (503) in between, on every route.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from textops.components.deploy.publish import publish_bundle

if TYPE_CHECKING:
    from tests.integration.conftest import StartServer

pytestmark = pytest.mark.integration

MODEL = "textops-classifier"
CLIENTS = 4


@dataclass
class Server:
    url: str
    repository: Path
    log: Path


@pytest.fixture
def server(
    tiny_bundle_dir: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A predictor of its own per test, serving version 1, so tests hold in any order."""
    work = tmp_path_factory.mktemp("hot-swap")
    repository = work / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)  # version 1
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--model-repository", str(repository)),
    ]
    running = serve_process(command, work / "server.log", model=MODEL)
    yield Server(running.url, repository, running.log)
    running.stop()


@dataclass
class Traffic:
    """Clients sending V1 and V2 requests until stopped; every answer is recorded."""

    url: str
    versions: list[list[str]] = field(default_factory=lambda: [[] for _ in range(CLIENTS)])
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, client_id: int) -> None:
        v1 = {"instances": ["great food", "slow service"]}
        v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    if i % 2:
                        response = client.post(f"/v1/models/{MODEL}:predict", json=v1)
                    else:
                        response = client.post(f"/v2/models/{MODEL}/infer", json=v2)
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                    continue
                self.versions[client_id].append(response.json()["model_version"])


@pytest.fixture
def traffic(server: Server) -> Iterator[Traffic]:
    running = Traffic(server.url)
    threads = [threading.Thread(target=running.run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    yield running
    running.stop.set()
    for thread in threads:
        thread.join(timeout=30)


def _wait_for_answers(traffic: Traffic, count: int = 20) -> None:
    deadline = time.monotonic() + 30
    start = sum(len(v) for v in traffic.versions)
    while sum(len(v) for v in traffic.versions) < start + count and time.monotonic() < deadline:
        time.sleep(0.05)


def _load(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/repository/models/{MODEL}/load", timeout=60)


def _point_current_at(repository: Path, version: int) -> None:
    """Roll back the way an operator would: rewrite current.json (atomically)."""
    pointer = repository / MODEL / "current.json"
    scratch = pointer.with_suffix(".tmp")
    scratch.write_text(json.dumps({"version": version}), encoding="utf-8")
    os.replace(scratch, pointer)


def _served(server: Server) -> list[str]:
    versions: list[str] = httpx.get(f"{server.url}/v2/models/{MODEL}").json()["versions"]
    return versions


def test_publish_then_load_swaps_with_no_failed_request(
    server: Server, traffic: Traffic, tiny_bundle_dir: Path
) -> None:
    assert _served(server) == ["1"]
    _wait_for_answers(traffic)
    publish_bundle(tiny_bundle_dir, server.repository, MODEL)  # version 2
    assert _served(server) == ["1"], "publishing alone must not change the served version"
    response = _load(server)
    assert response.status_code == 200, response.text
    assert response.json() == {"name": MODEL, "load": True}
    _wait_for_answers(traffic)
    traffic.stop.set()

    assert traffic.failures == []
    for seen in traffic.versions:
        # Each client sees version 1, then version 2, and never 1 again.
        assert seen and seen[-1] == "2"
        assert seen == sorted(seen), seen
    assert any(v == "1" for seen in traffic.versions for v in seen)
    assert _served(server) == ["2"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'textops_model_version_info{{model_name="{MODEL}",version="2"}} 1.0' in metrics
    assert 'version="1"' not in metrics.split("textops_model_version_info", 1)[1].split("#")[0]


def test_rollback_and_a_broken_version_keep_serving(
    server: Server, traffic: Traffic, tiny_bundle_dir: Path
) -> None:
    publish_bundle(tiny_bundle_dir, server.repository, MODEL)  # version 2
    assert _load(server).status_code == 200
    assert _served(server) == ["2"]
    _point_current_at(server.repository, 1)
    assert _load(server).status_code == 200
    assert _served(server) == ["1"]
    assert _load(server).status_code == 200  # current.json unchanged: nothing to swap

    broken = publish_bundle(tiny_bundle_dir, server.repository, MODEL)  # version 3
    for model_file in broken.path.glob("model*.onnx"):
        model_file.write_bytes(b"not an onnx graph")
    _wait_for_answers(traffic)
    response = _load(server)
    assert response.status_code == 503
    assert "version 1 is still served" in response.json()["error"]
    _wait_for_answers(traffic)
    traffic.stop.set()

    assert traffic.failures == []
    assert _served(server) == ["1"]
    assert all(seen and seen[-1] == "1" for seen in traffic.versions)


def _readiness(server: Server) -> dict[str, int]:
    """The status of every route that says whether the server or its model is ready."""
    routes = ["/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v1/models/{MODEL}"]
    return {route: httpx.get(server.url + route).status_code for route in routes}


def _info_gauges(server: Server) -> set[str]:
    """The info gauges that say the predictor serves MODEL (value 1)."""
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    return {
        line.split("{", 1)[0]
        for line in lines
        if line.startswith(("textops_model_version_info{", "textops_model_runtime_info{"))
        and f'model_name="{MODEL}"' in line
        and line.endswith(" 1.0")
    }


def test_readiness_follows_unload_and_load(server: Server) -> None:
    ready = {"/v2/health/ready": 200, f"/v2/models/{MODEL}/ready": 200, f"/v1/models/{MODEL}": 200}
    assert _readiness(server) == ready
    unload = f"{server.url}/v2/repository/models/{MODEL}/unload"
    assert httpx.post(unload).json() == {"name": MODEL, "unload": True}

    assert _readiness(server) == dict.fromkeys(ready, 503)
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200  # alive, not ready
    assert _info_gauges(server) == set(), "an unloaded model must not show as served"
    predict = f"{server.url}/v1/models/{MODEL}:predict"
    infer = f"{server.url}/v2/models/{MODEL}/infer"
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}
    for refused in (
        httpx.post(predict, json={"instances": ["hi"]}),
        httpx.post(infer, json={"inputs": [tensor]}),
        httpx.get(f"{server.url}/v2/models/{MODEL}/ready"),
    ):
        assert refused.status_code == 503
        assert f"/v2/repository/models/{MODEL}/load" in refused.json()["error"]
    assert httpx.post(unload).status_code == 200  # unloading again changes nothing
    assert _readiness(server) == dict.fromkeys(ready, 503)

    assert _load(server).status_code == 200
    assert _readiness(server) == ready
    assert _info_gauges(server) == {"textops_model_version_info", "textops_model_runtime_info"}
    answer = httpx.post(predict, json={"instances": ["hi"]})
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
