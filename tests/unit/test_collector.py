"""The collector app over a real SQLite store: joins, duplicates, redaction, errors, metrics."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from textops.components.monitor.collector import create_app
from textops.components.monitor.collector_cli import add_collect_arguments
from textops.components.monitor.events import REQUEST_TYPE, RESPONSE_TYPE
from textops.components.monitor.group_commit import MAX_BATCH_EVENTS, GroupCommitWriter
from textops.components.monitor.store import PayloadEvent, open_store
from textops.pipelines.cli import main

MAX_BODY_BYTES = 2000
EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"


def headers(event_id: str, kind: str, **extra: str) -> dict[str, str]:
    return {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": "sentiment",
        "Ce-Component": "predictor",
        "Content-Type": "application/json",
        **extra,
    }


def v1_response(*labels: str) -> dict[str, Any]:
    return {
        "predictions": [
            {"label": label, "probabilities": {"negative": 0.25, "positive": 0.75}}
            for label in labels
        ],
        "model_version": "3",
    }


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'payloads.db'}"


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    app = create_app(open_store(store_url), max_body_bytes=MAX_BODY_BYTES)
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, event_id: str, kind: str, body: Any, path: str = "/events") -> Any:
    return client.post(path, content=json.dumps(body), headers=headers(event_id, kind))


def window(store_url: str) -> Any:
    with open_store(store_url) as store:
        return store.fetch_window()


def metric(client: TestClient, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {series}")


@pytest.mark.parametrize("order", ["request-first", "response-first"])
def test_request_and_response_join_in_either_order(
    client: TestClient, store_url: str, order: str
) -> None:
    events = [("request", {"instances": ["great", "awful"]}), ("response", v1_response("a", "b"))]
    if order == "response-first":
        events.reverse()
    for kind, body in events:
        answer = post(client, "id-1", kind, body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"stored": 1, "duplicates": 0}
    rows = window(store_url)
    assert rows[["event_id", "item", "text", "prediction", "model_version"]].values.tolist() == [
        ["id-1", 0, "great", "a", "3"],
        ["id-1", 1, "awful", "b", "3"],
    ]
    assert rows["confidence"].tolist() == [0.75, 0.75]
    assert set(rows["model_name"]) == {"sentiment"}


def test_a_response_alone_is_stored_but_not_in_the_window(
    client: TestClient, store_url: str
) -> None:
    assert post(client, "id-2", "response", v1_response("a")).status_code == 200
    assert window(store_url).empty  # no text yet: the request has not arrived
    with open_store(store_url) as store:
        assert store.missing_events([("id-2", "response"), ("id-2", "request")]) == [
            ("id-2", "request")
        ]


def test_a_repeated_event_is_stored_once(client: TestClient, store_url: str) -> None:
    assert post(client, "dup", "request", {"instances": ["first"]}).json()["stored"] == 1
    again = post(client, "dup", "request", {"instances": ["second", "third"]})
    assert again.status_code == 200
    assert again.json() == {"stored": 0, "duplicates": 1}
    assert window(store_url)["text"].tolist() == ["first"]
    assert metric(client, "textops_collector_events_stored_total") == 1
    assert metric(client, "textops_collector_events_duplicate_total") == 1
    assert metric(client, "textops_collector_events_received_total") == 2


def test_personal_data_is_redacted_counted_and_never_stored_or_logged(
    client: TestClient, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [f"mail {EMAIL} now", f"call {PHONE}", f"pay with {CARD}"]
    assert post(client, "pii", "request", {"instances": texts}).status_code == 200
    # A malformed event with personal data in it: refused, and its values not logged either.
    bad = post(client, "pii-bad", "request", {"instances": [{"body": EMAIL}]})
    assert bad.status_code == 400 and EMAIL not in bad.text
    # The same request again is a duplicate: its redactions are not counted twice.
    post(client, "pii", "request", {"instances": texts})

    assert window(store_url)["text"].tolist() == [
        "mail [EMAIL] now",
        "call [PHONE]",
        "pay with [CARD]",
    ]
    for kind, count in {"EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 0}.items():
        assert metric(client, f'textops_collector_redactions_total{{kind="{kind}"}}') == count
    files = b"".join(p.read_bytes() for p in Path(store_url[len("sqlite:///") :]).parent.iterdir())
    for secret in (EMAIL, PHONE, CARD):
        assert secret.encode() not in files
        assert secret not in caplog.text
    assert "reason=malformed" in caplog.text  # the rejection itself is logged


MALFORMED: list[tuple[dict[str, str], bytes, str]] = [
    ({"Content-Type": "application/json"}, b'{"instances": ["x"]}', "not a CloudEvent"),
    ({**headers("a", "request"), "Ce-Specversion": "2.0"}, b"{}", "unsupported CloudEvents"),
    ({k: v for k, v in headers("a", "request").items() if k != "Ce-Id"}, b"{}", "has no id"),
    (headers("a", "request", **{"Ce-Type": "com.example.other"}), b"{}", "expected org.kubeflow"),
    (headers("a", "request"), b"", "has no data"),
    (headers("a", "request"), b"instances=x", "the data is not JSON"),
    (headers("a", "request"), b'{"text": "x"}', "unknown payload shape; expected V1"),
    (headers("a", "request"), b'{"instances": "x"}', "'instances' must be a list"),
    (headers("a", "request"), b'{"instances": ["x", 3]}', "instances[1] is int, not a text"),
    (
        headers("a", "request"),
        b'{"inputs": [{"name": "a", "datatype": "BYTES", "data": ["x"]}, '
        b'{"name": "b", "datatype": "BYTES", "data": ["y"]}]}',
        "no inputs tensor named 'text' and 2 BYTES tensors",
    ),
    (
        headers("a", "request"),
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "data": [1]}]}',
        "element 0 is int, not a string",
    ),
    (headers("a", "response"), b'{"predictions": [{"score": 1}]}', "predictions[0] is neither"),
    (headers("a", "response"), b'{"result": []}', "unknown payload shape; expected V1"),
    (
        headers("a", "response"),
        b'{"outputs": [{"name": "label", "datatype": "BYTES", "data": ["a", "b"]}, '
        b'{"name": "probabilities", "datatype": "FP32", "data": [0.5, 0.2, 0.3]}]}',
        "has 3 values for 2 labels",
    ),
    ({"Content-Type": "application/cloudevents+json"}, b"[1]", "must be a JSON object"),
    ({"Content-Type": "application/cloudevents+json"}, b"{oops", "is not valid JSON"),
    (
        {"Content-Type": "application/cloudevents+json"},
        b'{"specversion": "1.0", "id": "a", "type": "' + REQUEST_TYPE.encode() + b'"}',
        "has neither data nor data_base64",
    ),
    (
        {"Content-Type": "application/cloudevents+json"},
        b'{"specversion": "1.0", "id": "a", "data_base64": "%%%"}',
        "data_base64 is not base64",
    ),
    ({"Content-Type": "application/cloudevents-batch+json"}, b"{}", "must be a JSON array"),
    (headers("x" * 600, "request"), b'{"instances": []}', "at most 512"),
]


@pytest.mark.parametrize(("request_headers", "body", "message"), MALFORMED)
def test_malformed_events_get_400_with_the_reason(
    client: TestClient, request_headers: dict[str, str], body: bytes, message: str
) -> None:
    answer = client.post("/events", content=body, headers=request_headers)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert metric(client, 'textops_collector_events_rejected_total{reason="malformed"}') == 1
    assert metric(client, "textops_collector_events_stored_total") == 0


def test_body_over_the_limit_gets_413(client: TestClient) -> None:
    body = json.dumps({"instances": ["x" * MAX_BODY_BYTES]})
    answer = client.post("/events", content=body, headers=headers("big", "request"))
    assert answer.status_code == 413
    assert f"at most {MAX_BODY_BYTES}" in answer.json()["error"]
    # Without a Content-Length (chunked), the limit holds while the body streams in.
    chunked = client.post(
        "/",
        content=iter([body[:1500].encode(), body[1500:].encode()]),
        headers=headers("big", "request"),
    )
    assert chunked.status_code == 413
    assert metric(client, 'textops_collector_events_rejected_total{reason="too_large"}') == 2


def test_root_route_and_batches(client: TestClient, store_url: str) -> None:
    batch = [
        {
            "specversion": "1.0",
            "id": f"b{i}",
            "type": REQUEST_TYPE,
            "source": "s",
            "data": {"instances": [f"t{i}"]},
        }
        for i in range(3)
    ]
    answer = client.post(
        "/",
        content=json.dumps(batch),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert answer.json() == {"stored": 3, "duplicates": 0}
    assert window(store_url)["text"].tolist() == ["t0", "t1", "t2"]


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    text = client.get("/metrics").text
    for name in (
        "textops_collector_events_received_total",
        "textops_collector_events_stored_total",
        'textops_collector_events_rejected_total{reason="store_unavailable"}',
        'textops_collector_redactions_total{kind="IBAN"}',
    ):
        assert name in text
    client.app.state.collector.writer.stop()  # type: ignore[attr-defined]
    assert client.get("/healthz").status_code == 503
    assert post(client, "late", "request", {"instances": ["x"]}).status_code == 503


def test_a_failing_store_gets_503(client: TestClient, store_url: str) -> None:
    with sqlite3.connect(store_url[len("sqlite:///") :]) as other:
        other.execute("DROP TABLE textops_payload_items")
    answer = post(client, "lost", "request", {"instances": ["x"]})
    assert answer.status_code == 503
    assert (
        metric(client, 'textops_collector_events_rejected_total{reason="store_unavailable"}') == 1
    )


def test_labels_posted_before_and_after_the_request(client: TestClient, store_url: str) -> None:
    early = client.post("/labels", json=[{"id": "lab", "item": 1, "label": "negative"}])
    assert early.json() == {"labels": 1, "matched": 0}
    post(client, "lab", "request", {"instances": ["good", "bad"]})
    late = client.post("/labels", json=[{"id": "lab", "label": "positive"}])  # item 0
    assert late.json() == {"labels": 1, "matched": 1}
    assert window(store_url)["label"].tolist() == ["positive", "negative"]
    assert metric(client, "textops_collector_labels_total") == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "a", "label": "x"}', "must be a JSON list"),
        (b'[{"label": "x"}]', "label 0: 'id' must be a non-empty string, not missing"),
        (b'[{"id": "a", "item": -1, "label": "x"}]', "'item' must be an integer >= 0"),
        (b'[{"id": "a"}]', "'label' must be a non-empty string"),
        (b"[{", "not valid JSON"),
    ],
)
def test_bad_labels_get_400(client: TestClient, body: bytes, message: str) -> None:
    answer = client.post("/labels", content=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_concurrent_writes_share_transactions(store_url: str) -> None:
    store = open_store(store_url)
    writer = GroupCommitWriter(store)
    writer.start()

    async def write_all() -> list[list[bool]]:
        return await asyncio.gather(
            *(
                writer.write_events([PayloadEvent(f"e{i}", "request", 0.0, "m", texts=("t",))])
                for i in range(200)
            )
        )

    try:
        results = asyncio.run(write_all())
    finally:
        writer.stop()
        store.close()
    assert results == [[True]] * 200
    assert writer.batches < 50  # one transaction per event would be 200
    assert len(window(store_url)) == 200


def write_concurrently(
    store_url: str, sizes: list[int], max_batch_events: int
) -> tuple[list[list[bool]], list[int]]:
    """Submit one write per size (that many events each) at once; (flags, events per commit)."""
    store = open_store(store_url)
    committed: list[int] = []
    writer = GroupCommitWriter(store, on_batch=committed.append, max_batch_events=max_batch_events)
    writer.start()

    async def write_all() -> list[list[bool]]:
        return await asyncio.gather(
            *(
                writer.write_events(
                    [PayloadEvent(f"w{i}-{j}", "request", 0.0, "m", texts=("t",)) for j in range(n)]
                )
                for i, n in enumerate(sizes)
            )
        )

    try:
        results = asyncio.run(write_all())
    finally:
        writer.stop()
        store.close()
    assert writer.batches == len(committed)
    return results, committed


def test_a_commit_batch_of_one_gives_one_transaction_per_event(store_url: str) -> None:
    results, committed = write_concurrently(store_url, [1] * 200, max_batch_events=1)
    assert results == [[True]] * 200
    assert committed == [1] * 200  # the same concurrent load shares transactions by default
    assert len(window(store_url)) == 200


def test_the_commit_batch_bound_holds_and_never_splits_a_request(store_url: str) -> None:
    sizes = [1, 2, 5, 1, 2, 2, 1] * 30
    results, committed = write_concurrently(store_url, sizes, max_batch_events=3)
    assert results == [[True] * n for n in sizes]
    assert sum(committed) == sum(sizes)
    # A 5-event request is committed whole and alone; every other commit keeps to the bound.
    assert committed.count(5) == sizes.count(5)
    assert max(n for n in committed if n != 5) <= 3
    assert len(window(store_url)) == sum(sizes)


def test_max_commit_batch_flag_reaches_the_writer(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_collect_arguments(parser)
    assert parser.parse_args([]).max_commit_batch is None
    assert parser.parse_args(["--max-commit-batch", "1"]).max_commit_batch == 1
    assert str(MAX_BATCH_EVENTS) in parser.format_help()  # the default the help text names
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--max-commit-batch", bad])
        assert exited.value.code == 2
        assert "--max-commit-batch: expected a whole number of 1 or more" in capsys.readouterr().err
    for flag, bound in ((None, MAX_BATCH_EVENTS), (1, 1), (64, 64)):
        app = create_app(open_store(store_url), max_commit_batch=flag)
        assert app.state.collector.writer.max_batch_events == bound
        app.state.collector.writer.store.close()
    with open_store(store_url) as store, pytest.raises(ValueError, match="1 or more"):
        GroupCommitWriter(store, max_batch_events=0)


def test_labels_command_loads_a_file(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(store_url) as store:
        store.write_events([PayloadEvent("r1", "request", 0.0, "m", texts=("a", "b"))])
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "r1", "item": 1, "label": "neg"}\n{"id": "r2", "label": "pos"}\n')
    assert main(["labels", "--store", store_url, str(labels)]) == 0
    assert "stored 2 labels" in capsys.readouterr().out
    assert window(store_url)["label"].tolist() == [None, "neg"]

    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\nr1,pos\n")  # no item column: item 0
    assert main(["labels", "--store", store_url, str(csv)]) == 0
    assert "1 match logged texts" in capsys.readouterr().out
    assert window(store_url)["label"].tolist() == ["pos", "neg"]

    csv.write_text("request,label\nr1,pos\n")
    assert main(["labels", "--store", store_url, str(csv)]) == 2
    assert "has no column 'id'" in capsys.readouterr().err
