"""The local deploy target: publish the bundle, then hot-load it into a running server.

The server here is a stand-in on a loopback port, built on `http.server`: it implements the
two routes the deploy step uses exactly as the serving contract describes them (KServe's
`POST /v2/repository/models/<name>/load` re-reads the real `current.json`, and `GET
/v2/models/<name>` lists the served version in `versions`). The end-to-end test against the
real predictor (components/serve) belongs with it, once it exists.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from textops.components.common.errors import DeployError
from textops.components.common.model_repository import current_version
from textops.components.common.settings import DeploySettings
from textops.components.deploy.deployment import deploy_bundle
from textops.components.deploy.publish import publish_bundle

MODEL = "textops-classifier"


class StandInServer(ThreadingHTTPServer):
    """Serves the version current.json named when it last (re)loaded.

    `on_load` is what a load request does: "swap" (read current.json again), "ignore"
    (answer 200 and keep the old version) or "refuse" (answer 503 as KServe does when a
    model fails to load).
    """

    def __init__(self, repository: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repository = repository
        self.on_load = "swap"
        self.requests: list[tuple[str, str]] = []
        self.served = self._current()

    def _current(self) -> str | None:
        published = current_version(self.repository, MODEL)
        return str(published.version) if published else None

    def load(self) -> tuple[int, dict[str, Any]]:
        if self.on_load == "refuse":
            return 503, {"error": f"Model with name {MODEL} is not ready: no model.onnx"}
        if self.on_load == "swap":
            self.served = self._current()
        return 200, {"name": MODEL, "load": True}

    def metadata(self) -> tuple[int, dict[str, Any]]:
        return 200, {
            "name": MODEL,
            "versions": [self.served] if self.served else [],
            "platform": "",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ],
        }

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInServer

    def do_POST(self) -> None:
        self._answer("POST")

    def do_GET(self) -> None:
        self._answer("GET")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.requests.append((method, self.path))
        routes = {
            ("POST", f"/v2/repository/models/{MODEL}/load"): self.server.load,
            ("GET", f"/v2/models/{MODEL}"): self.server.metadata,
        }
        route = routes.get((method, self.path))
        status, body = route() if route else (404, {"error": f"no route {self.path}"})
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def repository(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A model repository whose version 1 is being served."""
    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)
    return repository


@pytest.fixture
def server(repository: Path) -> Iterator[StandInServer]:
    server = StandInServer(repository)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def deploy_locally(bundle: Path, repository: Path, serve_url: str) -> str:
    return deploy_bundle(
        bundle_path=bundle,
        bundle_uri=str(bundle),
        model_repository=repository,
        model_name=MODEL,
        deploy_target="local",
        # 2 s, under the 10 s a run is held to, keeps the wait for a server that never swaps
        # short; model_copy takes it unchecked.
        settings=DeploySettings(serve_url=serve_url).model_copy(
            update={"rollout_timeout_seconds": 2}
        ),
    )


def test_the_published_version_is_loaded_into_the_running_server(
    tiny_bundle_dir: Path, repository: Path, server: StandInServer
) -> None:
    assert server.served == "1"

    path = deploy_locally(tiny_bundle_dir, repository, server.url + "/")

    assert path == str(repository / MODEL / "2")
    assert server.served == "2"
    assert server.requests == [
        ("POST", f"/v2/repository/models/{MODEL}/load"),
        ("GET", f"/v2/models/{MODEL}"),
    ]


def test_without_a_server_url_the_bundle_is_only_published(
    tiny_bundle_dir: Path, repository: Path, server: StandInServer
) -> None:
    path = deploy_locally(tiny_bundle_dir, repository, "")

    assert path == str(repository / MODEL / "2")
    assert server.requests == []
    assert server.served == "1"


def test_a_server_that_keeps_the_old_version_is_an_error_and_the_bundle_stays_published(
    tiny_bundle_dir: Path, repository: Path, server: StandInServer
) -> None:
    server.on_load = "ignore"

    with pytest.raises(DeployError) as raised:
        deploy_locally(tiny_bundle_dir, repository, server.url)

    message = str(raised.value)
    assert f"version 2 of {MODEL} is published" in message
    assert "still serves the old one" in message
    assert "reports 1 in its metadata's versions, not 2" in message
    assert f"curl -X POST {server.url}/v2/repository/models/{MODEL}/load" in message
    published = current_version(repository, MODEL)
    assert published is not None and published.version == 2


def test_a_refused_load_reports_the_servers_answer(
    tiny_bundle_dir: Path, repository: Path, server: StandInServer
) -> None:
    server.on_load = "refuse"

    with pytest.raises(DeployError, match="still serves the old one") as raised:
        deploy_locally(tiny_bundle_dir, repository, server.url)

    assert "HTTP 503" in str(raised.value)
    assert "is not ready: no model.onnx" in str(raised.value)
    assert server.served == "1"


def test_a_server_that_is_not_running_is_an_error_naming_its_url(
    tiny_bundle_dir: Path, repository: Path
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DeployError, match="the load request failed") as raised:
        deploy_locally(tiny_bundle_dir, repository, f"http://127.0.0.1:{port}")

    assert f"no answer from POST http://127.0.0.1:{port}/v2/repository" in str(raised.value)
    published = current_version(repository, MODEL)
    assert published is not None and published.version == 2
