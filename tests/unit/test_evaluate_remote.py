"""Scoring the model in production through a server's V2 infer route (`champion_url`).

The server is a stand-in on a loopback port, built on `http.server`, that answers the V2
model metadata and infer routes as the serving contract describes them, with real ONNX
Runtime predictions of the tiny bundle behind them; `mode` makes it misbehave in the ways a
real server can. Against the real predictor (`textops serve` on a loopback port), the evaluate
step's scores are checked in tests/integration/test_champion_url.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.common.settings import GateSettings
from textops.components.deploy.publish import publish_bundle
from textops.components.evaluate.champion import score_champion, score_served_champion
from textops.components.evaluate.classifiers import EVALUATION_REQUEST_PREFIX
from textops.components.evaluate.evaluation import evaluate_challenger

MODEL_NAME = "textops-classifier"
OPEN_GATE = GateSettings(
    min_accuracy=0.0, min_macro_f1=0.0, max_regression=0.01, enforce_production_labels=True
)


class StandInPredictor(ThreadingHTTPServer):
    """V2 metadata and infer for one model, answered by a real ONNX classifier.

    As the textops predictor does, the metadata lists the served version, and each answer
    names its probability columns in the `probabilities` output's `parameters.labels` (a
    JSON-encoded list); in mode "ok" only the answers name them (the textops predictor's
    metadata does too: tests/integration/test_champion_labels.py). Modes: "ok";
    "metadata-labels" (the labels in the metadata instead);
    "no-labels" (neither); "other-labels" (the classes are called spam and ham);
    "other-labels-metadata" (the metadata says so up front); "swapped" (probability columns
    in the wrong order); "relabelled" (the second answer orders its columns otherwise);
    "mixed-versions" (the second answer comes from version 4); "short" (one row too few);
    "no-outputs"; "not-json"; "error" (HTTP 500).
    """

    def __init__(self, classifier: OnnxClassifier) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.classifier = classifier
        self.mode = "ok"
        self.batches: list[int] = []
        self.request_ids: list[str] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def labels(self) -> list[str]:
        if self.mode.startswith("other-labels"):
            return ["spam", "ham"]
        return list(self.classifier.labels.names)

    def metadata(self) -> tuple[int, Any]:
        document: dict[str, Any] = {
            "name": MODEL_NAME,
            "versions": ["3"],
            "platform": "onnxruntime",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]},
            ],
        }
        if self.mode in ("metadata-labels", "other-labels-metadata"):
            document["labels"] = self.labels
        return 200, document

    def infer(self, request: dict[str, Any], request_id: str) -> tuple[int, Any]:
        if self.mode == "error":
            return 500, {"error": "ONNXRuntimeError: out of memory"}
        [tensor] = request["inputs"]
        assert (tensor["name"], tensor["datatype"]) == ("text", "BYTES")
        texts = tensor["data"]
        assert tensor["shape"] == [len(texts)]
        self.batches.append(len(texts))
        self.request_ids.append(request_id)
        later = len(self.batches) > 1
        names = self.labels
        probabilities = self.classifier.predict_proba(texts)
        if self.mode == "relabelled" and later:  # consistent, but another order
            names, probabilities = names[::-1], probabilities[:, ::-1]
        labels = [names[i] for i in probabilities.argmax(axis=1)]
        if self.mode == "swapped":
            probabilities = probabilities[:, ::-1]
        if self.mode == "short":
            probabilities, labels = probabilities[:-1], labels[:-1]
        unnamed = self.mode in ("metadata-labels", "no-labels")
        parameters = {} if unnamed else {"labels": json.dumps(names)}
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.reshape(-1).tolist(),
                "parameters": parameters,
            },
        ]
        return 200, {
            "model_name": MODEL_NAME,
            "model_version": "4" if self.mode == "mixed-versions" and later else "3",
            "id": request.get("id"),
            "outputs": [] if self.mode == "no-outputs" else outputs,
        }


class _Handler(BaseHTTPRequestHandler):
    server: StandInPredictor

    def do_GET(self) -> None:
        if self.path == f"/v2/models/{MODEL_NAME}":
            self._send(*self.server.metadata())
        else:
            self._send(404, {"error": f"Model with name {self.path} does not exist."})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != f"/v2/models/{MODEL_NAME}/infer":
            self._send(404, {"error": "no such route"})
        elif self.server.mode == "not-json":
            self._send(200, None, raw=b"<html>gateway timeout</html>")
        else:
            request_id = self.headers.get("X-Request-Id", "")
            # KServe's logger agent reads only Ce-Id: both must carry the evaluate prefix.
            same = self.headers.get("Ce-Id", "") == request_id
            self._send(*self.server.infer(body, request_id if same else ""))

    def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def classifier(tiny_bundle_dir: Path) -> OnnxClassifier:
    return OnnxClassifier.from_bundle(tiny_bundle_dir)


@pytest.fixture
def predictor(classifier: OnnxClassifier) -> Iterator[StandInPredictor]:
    server = StandInPredictor(classifier)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def test_split(tiny_splits: dict[str, Path]) -> pd.DataFrame:
    return pd.read_parquet(tiny_splits["test"])


def score(url: str, frame: pd.DataFrame, labels: tuple[str, ...], **kwargs: Any) -> Any:
    return score_served_champion(
        url, MODEL_NAME, frame["text"].tolist(), frame["label"].tolist(), labels, **kwargs
    )


def test_the_served_champion_scores_as_the_same_bundle_does_from_the_repository(
    predictor: StandInPredictor,
    classifier: OnnxClassifier,
    test_split: pd.DataFrame,
    tiny_bundle_dir: Path,
    tmp_path: Path,
) -> None:
    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL_NAME)
    labels = classifier.labels.names
    texts, truth = test_split["text"].tolist(), test_split["label"].tolist()

    served = score_champion(
        tmp_path / "no-repository", MODEL_NAME, texts, truth, labels, champion_url=predictor.url
    )
    local = score_champion(repository, MODEL_NAME, texts, truth, labels)

    assert served.status == local.status == "scored"
    assert served.scores is not None and local.scores is not None
    assert served.scores.scalars() == pytest.approx(local.scores.scalars(), abs=1e-6)
    assert served.scores.confusion_matrix == local.scores.confusion_matrix
    assert served.version == 3
    assert served.labels == labels
    host, port = predictor.server_address[:2]
    assert str(served.path) == f"{host}:{port}/v2/models/{MODEL_NAME}"


def test_texts_go_in_batches_tagged_as_evaluation_traffic(
    predictor: StandInPredictor, classifier: OnnxClassifier, test_split: pd.DataFrame
) -> None:
    result = score(predictor.url, test_split, classifier.labels.names, batch_size=16)

    assert result.status == "scored"
    rows = len(test_split)
    assert predictor.batches == [16] * (rows // 16) + ([rows % 16] if rows % 16 else [])
    assert all(i.startswith(EVALUATION_REQUEST_PREFIX) for i in predictor.request_ids)
    assert len(set(predictor.request_ids)) == len(predictor.request_ids)


@pytest.mark.parametrize("mode", ["other-labels", "other-labels-metadata"])
def test_a_served_champion_with_other_labels_is_reported_as_such(
    predictor: StandInPredictor, test_split: pd.DataFrame, mode: str
) -> None:
    predictor.mode = mode

    result = score(predictor.url, test_split, ("negative", "positive"))

    assert result.status == "labels_differ"
    assert result.labels == ("spam", "ham")
    assert result.scores is None
    if mode == "other-labels-metadata":
        assert predictor.batches == []  # known from the metadata: nothing was scored


@pytest.mark.parametrize("mode", ["ok", "metadata-labels"])
@pytest.mark.parametrize(
    "challenger_labels",
    [("negative", "neutral", "positive"), ("negative",), ("negative", "mixed")],
    ids=["class-added", "class-dropped", "class-swapped"],
)
def test_a_served_champion_whose_labels_overlap_but_differ_is_reported_as_such(
    predictor: StandInPredictor,
    test_split: pd.DataFrame,
    mode: str,
    challenger_labels: tuple[str, ...],
) -> None:
    # "ok": the labels arrive with the answers; "metadata-labels": with the metadata only.
    predictor.mode = mode

    result = score(predictor.url, test_split, challenger_labels)

    assert result.status == "labels_differ"
    assert result.labels == ("negative", "positive")
    assert result.version == 3
    assert result.scores is None
    if mode == "metadata-labels":
        assert predictor.batches == []  # known from the metadata: nothing was scored


def test_labels_listed_in_the_metadata_are_used_when_answers_do_not_name_them(
    predictor: StandInPredictor, classifier: OnnxClassifier, test_split: pd.DataFrame
) -> None:
    predictor.mode = "metadata-labels"

    result = score(predictor.url, test_split, classifier.labels.names)

    assert result.status == "scored"
    assert result.labels == classifier.labels.names


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("error", 'answered HTTP 500: {"error": "ONNXRuntimeError: out of memory"}'),
        ("no-labels", "names no labels for its probabilities"),
        ("swapped", "the probability columns are not in the label order"),
        ("relabelled", "orders its probabilities as ['positive', 'negative'], but earlier"),
        ("mixed-versions", "answered from model versions 3, 4: a rollout is in progress"),
        ("short", "probabilities for 16 texts"),
        ("no-outputs", "not a V2 inference response"),
        ("not-json", "answered something that is not JSON"),
    ],
)
def test_a_server_that_answers_badly_is_unreadable(
    predictor: StandInPredictor,
    classifier: OnnxClassifier,
    test_split: pd.DataFrame,
    mode: str,
    expected: str,
) -> None:
    predictor.mode = mode

    result = score(predictor.url, test_split, classifier.labels.names, batch_size=16)

    assert result.status == "unreadable"
    assert result.scores is None
    assert expected in result.error
    assert predictor.url in result.error
    assert "leave champion_url empty" in result.error


def test_a_server_that_does_not_answer_is_unreadable(
    classifier: OnnxClassifier, test_split: pd.DataFrame
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    result = score(url, test_split, classifier.labels.names, timeout_seconds=5)

    assert result.status == "unreadable"
    assert f"no answer from GET {url}/v2/models/{MODEL_NAME}" in result.error


def test_the_gate_compares_with_the_served_champion_and_refuses_when_it_is_unreadable(
    predictor: StandInPredictor,
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tmp_path: Path,
) -> None:
    def evaluate(out: Path) -> Any:
        # What the evaluate component passes when champion_url is set.
        return evaluate_challenger(
            model_dir=tiny_model_dir,
            test_path=tiny_splits["test"],
            train_path=tiny_splits["train"],
            validation_path=tiny_splits["validation"],
            model_repository=out / "empty-repository",
            model_name=MODEL_NAME,
            settings=OPEN_GATE,
            slice_column="",
            behaviour_tests=[],
            report_path=out / "report.html",
            summary_path=out / "summary.md",
            decision_path=out / "decision.json",
            champion_url=predictor.url,
        )

    # The tiny bundle is the tiny model exported: the same model, so it may ship.
    compared = evaluate(tmp_path / "ok")
    assert compared.champion.status == "scored"
    assert compared.deploy, compared.reasons
    assert any(r.startswith("champion v3 macro-F1") for r in compared.reasons)
    champion = json.loads((tmp_path / "ok" / "decision.json").read_text())["champion"]
    assert champion["status"] == "scored" and champion["version"] == 3
    assert np.isclose(champion["scores"]["macro_f1"], compared.scores.macro_f1, atol=1e-6)

    predictor.mode = "swapped"
    refused = evaluate(tmp_path / "swapped")
    assert not refused.deploy
    assert refused.champion.status == "unreadable"
    assert "could not be scored" in refused.reasons[0]
    assert "not in the label order" in refused.reasons[0]
