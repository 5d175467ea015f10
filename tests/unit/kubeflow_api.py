"""A Kubeflow Pipelines API for the real `kfp.Client`: the v2beta1 REST routes textops uses,
served from memory on a loopback port (the `kubeflow` fixture of tests/unit/conftest.py).

No Kubeflow runs here, so this stands in for the API server only. The client under test is
kfp's own: it builds real requests (JSON bodies, multipart uploads, filters, page tokens) and
parses real JSON answers, shaped as the API's swagger says (e.g. `recurringRuns`).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"
CREATED_AT = "2026-01-05T03:00:00Z"


class ApiError(Exception):
    """An answer other than 200, as the API server sends it (a google.rpc.Status)."""

    def __init__(self, status: int, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, "code": code, "message": message, "details": []}


class FakeKubeflow:
    """The server's state, inspectable by tests; `fail` makes one route answer an error."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        #: The bearer token every request must carry; None: no authentication.
        self.token: str | None = None
        #: The most items one page holds, whatever the client asks: small, so paging is used.
        self.page_limit = 2
        #: Stand in for a gateway that sends callers without a session to a login page.
        self.login_page = False
        self.url = ""
        self._failures: list[tuple[str, re.Pattern[str], ApiError]] = []
        self._ids = itertools.count(1)
        self.lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("GET", re.compile(r"/pipelines"), self._list_pipelines),
            ("POST", re.compile(r"/pipelines"), self._create_pipeline),
            ("POST", re.compile(r"/pipelines/upload"), self._upload_pipeline),
            ("POST", re.compile(r"/pipelines/upload_version"), self._upload_version),
            ("GET", re.compile(r"/pipelines/(?P<pid>[^/]+)/versions"), self._list_versions),
            ("GET", re.compile(r"/experiments"), self._list_experiments),
            ("POST", re.compile(r"/experiments"), self._create_experiment),
            ("POST", re.compile(r"/runs"), self._create_run),
            ("GET", re.compile(r"/runs/(?P<id>[^/:]+)"), self._get_run),
            ("POST", re.compile(r"/recurringruns"), self._create_recurring_run),
            ("GET", re.compile(r"/recurringruns"), self._list_recurring_runs),
            ("GET", re.compile(r"/recurringruns/(?P<id>[^/:]+)"), self._get_recurring_run),
            ("POST", re.compile(r"/recurringruns/(?P<id>[^/:]+):enable"), self._enable),
            ("POST", re.compile(r"/recurringruns/(?P<id>[^/:]+):disable"), self._disable),
            ("DELETE", re.compile(r"/recurringruns/(?P<id>[^/:]+)"), self._delete_recurring),
        ]

    def fail(self, method: str, path: str, status: int, message: str) -> None:
        """Make `method` on paths matching the regex `path` (below /apis/v2beta1) fail."""
        self._failures.append((method, re.compile(path), ApiError(status, message)))

    def requested(self, method: str, path: str) -> int:
        """How many requests matched `method` and the regex `path`."""
        return sum(1 for m, p in self.requests if m == method and re.fullmatch(path, p))

    # ---- dispatch

    def handle(self, method: str, url: str, headers: Any, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(url)
        path = parts.path.removeprefix(API)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append((method, path))
            try:
                if self.token and headers.get("Authorization") != f"Bearer {self.token}":
                    raise ApiError(401, "Unauthenticated: no valid bearer token", code=16)
                for fail_method, pattern, error in self._failures:
                    if fail_method == method and pattern.fullmatch(path):
                        raise error
                for route_method, pattern, handler in self._routes:
                    match = pattern.fullmatch(path)
                    if route_method == method and match:
                        return 200, handler(
                            query=query, headers=headers, body=body, **match.groupdict()
                        )
                raise ApiError(404, f"no route {method} {path}", code=5)
            except ApiError as e:
                return e.status, e.body

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], key: str) -> dict[str, Any]:
        size = min(int(query.get("page_size") or 20), self.page_limit)
        start = int(query.get("page_token") or 0)
        page: dict[str, Any] = {key: items[start : start + size], "total_size": len(items)}
        if start + size < len(items):
            page["next_page_token"] = str(start + size)
        return page

    @staticmethod
    def _filtered(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        if not query.get("filter"):
            return items
        for predicate in json.loads(query["filter"])["predicates"]:
            assert predicate["operation"] in (1, "EQUALS"), predicate
            items = [i for i in items if i.get(predicate["key"]) == predicate["stringValue"]]
        return items

    # ---- pipelines and versions

    def _healthz(self, **_: Any) -> dict[str, Any]:
        return {"multi_user": False, "pipeline_store": "database"}

    def _list_pipelines(self, query: dict[str, str], **_: Any) -> dict[str, Any]:
        items = self._filtered(list(self.pipelines.values()), query)
        return self._page(items, query, "pipelines")

    def add_pipeline(self, display_name: str) -> dict[str, Any]:
        if any(p["display_name"] == display_name for p in self.pipelines.values()):
            raise ApiError(409, f"pipeline {display_name} already exists", code=6)
        pipeline = {
            "pipeline_id": self._new_id("pipeline"),
            "name": display_name,
            "display_name": display_name,
            "created_at": CREATED_AT,
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def add_version(self, pipeline_id: str, name: str, content: bytes) -> dict[str, Any]:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id} not found", code=5)
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == name
            for v in self.versions.values()
        ):
            raise ApiError(409, f"version {name} already exists", code=6)
        spec = next(yaml.safe_load_all(content))
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._new_id("version"),
            "name": name,
            "display_name": name,
            "created_at": CREATED_AT,
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _create_pipeline(self, body: bytes, **_: Any) -> dict[str, Any]:
        return self.add_pipeline(json.loads(body)["display_name"])

    @staticmethod
    def _uploaded_file(headers: Any, body: bytes) -> bytes:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
        )
        for part in message.iter_parts():  # type: ignore[attr-defined]
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return bytes(part.get_payload(decode=True))
        raise ApiError(400, "no uploadfile in the form")

    def _upload_pipeline(
        self, query: dict[str, str], headers: Any, body: bytes, **_: Any
    ) -> dict[str, Any]:
        pipeline = self.add_pipeline(query["name"])
        self.add_version(pipeline["pipeline_id"], query["name"], self._uploaded_file(headers, body))
        return pipeline

    def _upload_version(
        self, query: dict[str, str], headers: Any, body: bytes, **_: Any
    ) -> dict[str, Any]:
        version = self.add_version(
            query["pipelineid"], query["name"], self._uploaded_file(headers, body)
        )
        return {k: v for k, v in version.items() if k != "pipeline_spec"}

    def _list_versions(self, pid: str, query: dict[str, str], **_: Any) -> dict[str, Any]:
        if pid not in self.pipelines:
            raise ApiError(404, f"pipeline {pid} not found", code=5)
        items = [
            {k: v for k, v in version.items() if k != "pipeline_spec"}
            for version in self.versions.values()
            if version["pipeline_id"] == pid
        ]
        return self._page(self._filtered(items, query), query, "pipeline_versions")

    # ---- experiments and runs

    def _list_experiments(self, query: dict[str, str], **_: Any) -> dict[str, Any]:
        items = self._filtered(list(self.experiments.values()), query)
        return self._page(items, query, "experiments")

    def _create_experiment(self, body: bytes, **_: Any) -> dict[str, Any]:
        request = json.loads(body)
        if any(e["display_name"] == request["display_name"] for e in self.experiments.values()):
            raise ApiError(409, "experiment already exists", code=6)
        experiment = {
            "experiment_id": self._new_id("experiment"),
            "display_name": request["display_name"],
            "namespace": request.get("namespace") or "",
            "created_at": CREATED_AT,
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _check_job(self, request: dict[str, Any]) -> None:
        """What the server checks of a run or recurring run before it accepts it."""
        if request.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"experiment {request.get('experiment_id')} not found", code=5)
        reference = request.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise ApiError(404, f"pipeline version {reference} not found", code=5)
        declared = (
            version["pipeline_spec"]["root"].get("inputDefinitions", {}).get("parameters", {})
        )
        given = (request.get("runtime_config") or {}).get("parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ApiError(400, f"unknown parameters {unknown}")

    def _create_run(self, body: bytes, **_: Any) -> dict[str, Any]:
        request = json.loads(body)
        self._check_job(request)
        run = {
            **request,
            "run_id": self._new_id("run"),
            "state": "PENDING",
            "created_at": CREATED_AT,
        }
        self.runs[run["run_id"]] = run
        return run

    def _get_run(self, id: str, **_: Any) -> dict[str, Any]:
        if id not in self.runs:
            raise ApiError(404, f"run {id} not found", code=5)
        return self.runs[id]

    # ---- recurring runs

    def _create_recurring_run(self, body: bytes, **_: Any) -> dict[str, Any]:
        request = json.loads(body)
        self._check_job(request)
        cron = ((request.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
        if len(cron.split()) != 6:
            raise ApiError(400, f"invalid cron schedule {cron!r}")
        if not 1 <= int(request.get("max_concurrency") or 0) <= 10:
            raise ApiError(400, "max_concurrency must be within 1 and 10")
        run = {
            **request,
            "recurring_run_id": self._new_id("recurring"),
            "status": "ENABLED" if request.get("mode") == "ENABLE" else "DISABLED",
            "created_at": CREATED_AT,
            "updated_at": CREATED_AT,
        }
        self.recurring_runs[run["recurring_run_id"]] = run
        return run

    def _list_recurring_runs(self, query: dict[str, str], **_: Any) -> dict[str, Any]:
        items = [
            r
            for r in self.recurring_runs.values()
            if not query.get("experiment_id") or r["experiment_id"] == query["experiment_id"]
        ]
        return self._page(self._filtered(items, query), query, "recurringRuns")

    def _recurring(self, id: str) -> dict[str, Any]:
        if id not in self.recurring_runs:
            raise ApiError(404, f"recurring run {id} not found", code=5)
        return self.recurring_runs[id]

    def _get_recurring_run(self, id: str, **_: Any) -> dict[str, Any]:
        return self._recurring(id)

    def _enable(self, id: str, **_: Any) -> dict[str, Any]:
        self._recurring(id).update(mode="ENABLE", status="ENABLED")
        return {}

    def _disable(self, id: str, **_: Any) -> dict[str, Any]:
        self._recurring(id).update(mode="DISABLE", status="DISABLED")
        return {}

    def _delete_recurring(self, id: str, **_: Any) -> dict[str, Any]:
        self._recurring(id)
        del self.recurring_runs[id]
        return {}


def _handler_for(fake: FakeKubeflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if fake.login_page:
                self._login()
                return
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = fake.handle(
                self.command, self.path, self.headers, self.rfile.read(length)
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _login(self) -> None:
            if self.path.startswith("/login"):
                page = b"<html><body>Log in</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            else:
                self.send_response(302)
                self.send_header("Location", "/login?next=" + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the requests are in fake.requests

    return Handler


@contextmanager
def serve_fake_kubeflow() -> Iterator[FakeKubeflow]:
    """A fresh fake API on a free loopback port while the block runs; `.url` is its address."""
    fake = FakeKubeflow()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
