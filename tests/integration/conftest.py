"""Fixtures of the integration tests: servers run as subprocesses on free loopback ports.

`serve_process` starts a command (the predictor, the transformer, a stand-in for Triton) and
returns once its model answers `GET /v2/models/<name>/ready`; `send_bad_request` sends a case
of the bad-request corpus (tests/data/bad_requests/cases.yaml) to a server.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

#: Seconds a server may take to load its model and answer ready.
READY_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    """A server subprocess on a loopback port; its output goes to `log`."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        """What the server has written so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop in 15 s); again does nothing."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SendBadRequest(Protocol):
    def __call__(
        self, base_url: str, case: dict[str, Any], *, model: str, version: str
    ) -> httpx.Response: ...


class CorpusRequest(Protocol):
    def __call__(
        self, case: dict[str, Any], *, model: str, version: str
    ) -> tuple[str, str, dict[str, str], bytes | Iterator[bytes] | None]: ...


class StartServer(Protocol):
    def __call__(
        self, command: Sequence[str], log: Path, *, model: str, port: int | None = None
    ) -> ServeProcess: ...


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function giving a TCP port that is free on the loopback interface now."""
    return _free_port


@pytest.fixture(scope="session")
def serve_process() -> Iterator[StartServer]:
    """Start a server and return once `model` is ready on it; it is stopped at the latest
    when the session ends.

    The factory runs `command` (a whole argv) with its output in `log`. With no `port`, it
    picks a free one and appends `--http_port PORT` (KServe's flag); with a `port`, the command
    already names it. A server that exits or is not ready in 90 s fails the test with its log.
    """
    started: list[ServeProcess] = []

    def start(
        command: Sequence[str], log: Path, *, model: str, port: int | None = None
    ) -> ServeProcess:
        argv = list(command)
        if port is None:
            port = _free_port()
            argv += ["--http_port", str(port)]
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        server = ServeProcess(process, f"http://127.0.0.1:{port}", log)
        started.append(server)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{argv[:3]} exited with {process.returncode}:\n{server.log_text()}")
            try:
                ready = httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=2)
                if ready.status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
        pytest.fail(f"{argv[:3]} was not ready in {READY_TIMEOUT_S} s:\n{server.log_text()}")

    yield start
    for server in started:
        server.stop()


def textops_serve(bundle: Path, model: str, version: str) -> list[str]:
    """The argv of `textops serve` on `bundle` as production runs it: the model's name and
    version, nothing else."""
    return [
        *(sys.executable, "-m", "textops.pipelines", "serve"),
        *("--bundle", str(bundle), "--model_name", model, "--model-version", version),
    ]


def _corpus_body(case: dict[str, Any]) -> bytes | Iterator[bytes] | None:
    if "json" in case:
        return json.dumps(case["json"]).encode()
    if "text" in case:
        return str(case["text"]).encode()
    if "base64" in case:
        return base64.b64decode(case["base64"])
    if "generate" not in case:
        return None
    kind, size = case["generate"]["kind"], case["generate"].get("bytes", 0)
    depth = case["generate"].get("depth", 0)
    tensor = '{"name": "text", "datatype": "BYTES", "shape": [1], "data": '
    generated = {
        "nested": '{"instances": ' + "[" * depth + "]" * depth + "}",
        "nested_v2": '{"inputs": [' + tensor + "[" * depth + "]" * depth + "}]}",
        "long_text": json.dumps({"instances": ["x" * size]}),
        "long_text_chunked": json.dumps({"instances": ["x" * size]}),
        "long_text_v2": json.dumps({"inputs": [json.loads(tensor + '["' + "x" * size + '"]}')]}),
    }[kind].encode()
    if kind.endswith("_chunked"):  # no Content-Length: the limit must hold while reading
        return iter([generated[i : i + 8192] for i in range(0, len(generated), 8192)])
    return generated


def _corpus_request(
    case: dict[str, Any], *, model: str, version: str
) -> tuple[str, str, dict[str, str], bytes | Iterator[bytes] | None]:
    path = case["path"].format(model=model, version=version)
    headers = {"content-type": "application/json"} if "json" in case else {}
    headers.update(case.get("headers", {}))
    return case.get("method", "POST"), path, headers, _corpus_body(case)


def _send_corpus_case(
    base_url: str, case: dict[str, Any], *, model: str, version: str
) -> httpx.Response:
    method, path, headers, body = _corpus_request(case, model=model, version=version)
    return httpx.request(method, base_url + path, content=body, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def send_bad_request() -> SendBadRequest:
    """A function sending a bad-request corpus case to the server at `base_url`, its path
    naming `model` and `version`; it returns the answer."""
    return _send_corpus_case


@pytest.fixture(scope="session")
def corpus_request() -> CorpusRequest:
    """A function giving a corpus case's method, path (naming `model` and `version`),
    headers and body (None, bytes, or chunks for a body sent without Content-Length)."""
    return _corpus_request
