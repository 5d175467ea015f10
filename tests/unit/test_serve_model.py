"""The KServe model in-process: loading, pickling for --workers, batching, swapping, logging."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from prometheus_client import REGISTRY

from textops.components.common.long_text import bound_text
from textops.components.serve.batching import InferenceBatcher
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.payload_logger import (
    REQUEST_EVENT,
    PayloadLogger,
    cloudevent_headers,
    event_id,
)
from textops.components.serve.runtime import ClassifierRuntime
from textops.components.serve.settings import PayloadLoggerSettings, ServeSettings

TEXTS = ["great food", "awful service", "it was fine", "never again"]


@pytest.fixture
def model(tiny_bundle_dir: Path) -> TextClassifierModel:
    loaded = TextClassifierModel(
        ServeSettings(model_name="unit-model", bundle=tiny_bundle_dir, model_version="4")
    )
    loaded.load()
    return loaded


def test_load_makes_the_model_ready_with_its_version(model: TextClassifierModel) -> None:
    assert model.ready
    extras = model.metadata_extras()
    assert (extras["versions"], extras["platform"]) == (["4"], "onnxruntime_onnx")
    labels = model.runtime.labels
    assert extras["parameters"] == {
        **model.runtime.execution.parameters(),
        "labels": '["negative","positive"]',  # as each answer names its columns
    }
    assert model.get_output_types()[1] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [-1, len(labels)],
    }
    gauge = REGISTRY.get_sample_value(
        "textops_model_version_info", {"model_name": "unit-model", "version": "4"}
    )
    assert gauge == 1


def test_idle_onnxruntime_threads_do_not_spin_unless_asked(
    model: TextClassifierModel, tiny_bundle_dir: Path
) -> None:
    entry = "session.intra_op.allow_spinning"
    options = model.runtime.classifier.session.get_session_options()
    assert options.get_session_config_entry(entry) == "0"
    spinning = TextClassifierModel(
        ServeSettings(model_name="spin", bundle=tiny_bundle_dir, intra_op_spinning=True)
    )
    spinning.load()
    options = spinning.runtime.classifier.session.get_session_options()
    assert options.get_session_config_entry(entry) == "1"


def test_pickled_model_builds_its_own_session(model: TextClassifierModel) -> None:
    blob = pickle.dumps(model)  # an ORT session cannot be pickled: it must not be in there
    copy = pickle.loads(blob)
    assert copy.ready
    assert copy.runtime.classifier is not model.runtime.classifier
    assert copy.runtime.classifier.session is not model.runtime.classifier.session
    np.testing.assert_allclose(
        copy.runtime.predict_proba(TEXTS, 8), model.runtime.predict_proba(TEXTS, 8)
    )


def test_kserve_call_answers_v1_and_v2(model: TextClassifierModel) -> None:
    async def both() -> tuple[Any, Any]:
        v1, _ = await model({"instances": TEXTS}, headers={})
        request = InferRequest("unit-model", [InferInput("text", [2], "BYTES", TEXTS[:2])])
        v2, _ = await model(request, headers={})
        return v1, v2

    v1, v2 = asyncio.run(both())
    expected = model.runtime.predict_proba(TEXTS, 8)
    labels = model.runtime.labels
    assert [p["label"] for p in v1["predictions"]] == [labels[i] for i in expected.argmax(1)]
    assert isinstance(v2, InferResponse) and v2.model_version == "4"
    np.testing.assert_allclose(v2.get_output_by_name("probabilities").data, expected[:2], atol=1e-6)


def test_concurrent_requests_share_batches(model: TextClassifierModel) -> None:
    sizes: list[int] = []

    async def run() -> list[Any]:
        batcher = InferenceBatcher(lambda: model.runtime, max_texts=64, on_batch=sizes.append)
        results = await asyncio.gather(*(batcher.classify([t]) for t in TEXTS * 5))
        batcher.close()
        return results

    results = asyncio.run(run())
    assert sum(sizes) == 20 and len(sizes) < 20
    alone = model.runtime.predict_proba(TEXTS * 5, 8)
    for result, row in zip(results, alone, strict=True):
        np.testing.assert_allclose(result.probabilities[0], row, atol=1e-6)


class _SlowRuntime:
    """The real runtime, with each call held for a while (blocking, as a big batch would)."""

    def __init__(self, runtime: ClassifierRuntime) -> None:
        self.runtime = runtime

    def predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        time.sleep(0.3)
        return self.runtime.predict_proba(texts, batch_size)


class _GatedRuntime:
    """The real runtime, each call held until the event loop lets it go: on the loop's own
    thread it would wait for itself, and fail after `timeout` seconds."""

    def __init__(self, runtime: ClassifierRuntime, timeout: float = 30) -> None:
        self.runtime = runtime
        self.timeout = timeout
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []

    def predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.threads.append(threading.get_ident())
        self.started.set()
        if not self.release.wait(self.timeout):
            raise AssertionError("the event loop did not run while inference was in progress")
        return self.runtime.predict_proba(texts, batch_size)


def test_inference_never_blocks_the_event_loop(model: TextClassifierModel) -> None:
    gated = _GatedRuntime(model.runtime)

    async def run() -> tuple[Any, int]:
        batcher = InferenceBatcher(lambda: gated, max_texts=64)  # type: ignore[arg-type,return-value]
        task = asyncio.ensure_future(batcher.classify(TEXTS))
        # The loop waits for inference to start, then lets it finish: both need the loop to
        # turn while the call is in progress.
        assert await asyncio.to_thread(gated.started.wait, gated.timeout)
        gated.release.set()
        result = await task
        batcher.close()
        return result, threading.get_ident()

    result, loop_thread = asyncio.run(run())
    assert gated.threads and loop_thread not in gated.threads
    np.testing.assert_allclose(
        result.probabilities, model.runtime.predict_proba(TEXTS, 8), atol=1e-6
    )


def test_closing_fails_waiting_requests_instead_of_leaving_them_hanging(
    model: TextClassifierModel,
) -> None:
    slow = _SlowRuntime(model.runtime)

    async def run() -> list[Any]:
        batcher = InferenceBatcher(lambda: slow, max_texts=1)  # type: ignore[arg-type,return-value]
        waiting = [asyncio.ensure_future(batcher.classify([t])) for t in TEXTS]
        await asyncio.sleep(0.05)  # the first batch is running, the others queued
        batcher.close(RuntimeError("unloaded"))
        return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=5)

    outcomes = asyncio.run(run())
    assert [str(o) for o in outcomes] == ["unloaded"] * len(TEXTS)


def test_reload_swaps_the_runtime_and_the_version_gauge(
    model: TextClassifierModel, tiny_bundle_dir: Path
) -> None:
    old = model.runtime
    model.settings = ServeSettings(
        model_name="unit-model", bundle=tiny_bundle_dir, model_version="5"
    )
    new = asyncio.run(model.reload())
    assert new is model.runtime and new is not old and new.version == "5"
    gauge = "textops_model_version_info"
    assert REGISTRY.get_sample_value(gauge, {"model_name": "unit-model", "version": "5"}) == 1
    assert REGISTRY.get_sample_value(gauge, {"model_name": "unit-model", "version": "4"}) is None


def test_the_runtime_gauge_says_how_the_served_version_runs(tiny_bundle_dir: Path) -> None:
    fp16 = TextClassifierModel(
        ServeSettings(model_name="gpu-model", bundle=tiny_bundle_dir, precision="fp16")
    )
    fp16.load()
    execution = fp16.runtime.execution
    labels = {"model_name": "gpu-model", "version": fp16.runtime.version}
    labels |= {"provider": execution.provider, "precision": execution.precision}
    labels |= {"requested_precision": "fp16", "fallback": execution.fallback}
    labels |= {"variant": execution.variant, "engine": "onnxruntime", "variant_choice": "setting"}
    gauge = "textops_model_runtime_info"
    assert REGISTRY.get_sample_value(gauge, labels) == 1
    parameters = fp16.metadata_extras()["parameters"]
    assert {k: parameters[k] for k in ("provider", "precision", "fallback")} == {
        "provider": execution.provider,
        "precision": execution.precision,
        "fallback": execution.fallback,
    }
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert (labels["provider"], labels["precision"]) == ("CPUExecutionProvider", "fp32")
        assert labels["fallback"] == "no_cuda_provider"

    fp16.settings = ServeSettings(
        model_name="gpu-model", bundle=tiny_bundle_dir, precision="fp32", model_version="9"
    )
    asyncio.run(fp16.reload())
    assert REGISTRY.get_sample_value(gauge, labels) is None
    now = {**labels, "version": "9", "requested_precision": "fp32", "precision": "fp32"}
    now |= {"fallback": "none", "variant": "fp32"}
    assert REGISTRY.get_sample_value(gauge, now) == 1


def test_cloudevent_headers_are_the_agents() -> None:
    settings = PayloadLoggerSettings(url="http://c/events", source="http://localhost:8080/")
    headers = cloudevent_headers(
        settings, model_name="m", event_type=REQUEST_EVENT, event_id="id-1", content_type=""
    )
    assert headers == {
        "Ce-Specversion": "1.0",
        "Ce-Id": "id-1",
        "Ce-Type": "org.kubeflow.serving.inference.request",
        "Ce-Source": "http://localhost:8080/",
        "Ce-Time": headers["Ce-Time"],
        "Ce-Inferenceservicename": "m",
        "Ce-Namespace": "default",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "default",
        "Ce-Metadata": "{}",
        "Content-Type": "application/json",
    }
    assert headers["Ce-Time"].endswith("Z") and "T" in headers["Ce-Time"]
    assert event_id({"ce-id": "a", "x-request-id": "b"}) == "a"
    assert event_id({"x-request-id": "b"}) == "b"
    assert len(event_id({})) == 36


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/events"
    settings = PayloadLoggerSettings(url=dead, source="s", queue_size=1, timeout_seconds=1)

    def dropped(reason: str) -> float:
        value = REGISTRY.get_sample_value(
            "textops_payload_events_dropped_total", {"model_name": "q", "reason": reason}
        )
        return value or 0.0

    async def run() -> float:
        logger = PayloadLogger(settings, "q")
        for i in range(5):
            logger.log_request(str(i), b"{}", "application/json")
        # Nothing has yielded to the event loop yet, so the sender cannot have taken an event:
        # the four drops were counted by log_request itself, which returned without waiting.
        dropped_before_yielding = dropped("queue_full")
        deadline = time.monotonic() + 10
        while dropped("send_failed") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await logger.aclose()
        return dropped_before_yielding

    assert not asyncio.iscoroutinefunction(PayloadLogger.log_request)
    before = dropped("queue_full")
    dropped_before_yielding = asyncio.run(run())
    assert dropped_before_yielding - before == 4
    assert dropped("queue_full") - before == 4
    assert dropped("send_failed") >= 1


class _RecordingTokenizer:
    """The runtime's real tokenizer, recording the texts it is handed."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.seen: list[str] = []

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.seen.extend(texts)
        return self.tokenizer.encode_batch(texts, *args, **kwargs)


def _record_tokenizer(model: TextClassifierModel) -> _RecordingTokenizer:
    classifier = model.runtime.classifier
    recording = _RecordingTokenizer(classifier.tokenizer)
    classifier.tokenizer = recording  # type: ignore[assignment]
    return recording


def test_a_4mb_text_is_cut_before_the_tokenizer_sees_it(model: TextClassifierModel) -> None:
    tokenizer = _record_tokenizer(model)
    huge = " ".join(["word", "great"] * 400_000)[: 4 * 1024 * 1024]
    limit = model.settings.max_text_chars(model.runtime.max_seq_length)
    assert limit < 4096 < len(huge)

    answer, _ = asyncio.run(model({"instances": [huge, "short text"]}, headers={}))

    cut = bound_text(huge, limit)  # its first and last `limit` characters
    assert sorted(tokenizer.seen, key=len) == ["short text", cut]
    # The model reads max_seq_length tokens either way: the answer is the cut text's.
    expected = model.runtime.predict_proba([cut], 8)[0]
    probabilities = answer["predictions"][0]["probabilities"]
    np.testing.assert_allclose([probabilities[label] for label in model.runtime.labels], expected)


def test_the_cut_follows_max_chars_per_token(tiny_bundle_dir: Path) -> None:
    settings = ServeSettings(model_name="cut", bundle=tiny_bundle_dir, max_chars_per_token=3)
    small = TextClassifierModel(settings)
    small.load()
    tokenizer = _record_tokenizer(small)
    text = "abcdefghij " * 100
    parsed = small.parse({"instances": [text]}, {})
    assert parsed.texts == [bound_text(text, 3 * small.runtime.max_seq_length)]
    asyncio.run(small({"instances": [text]}, headers={}))
    assert tokenizer.seen == [bound_text(text, 3 * small.runtime.max_seq_length)]


class _RecordingRuntime:
    """The real runtime, recording the texts of every call and which runtime ran it."""

    def __init__(self, runtime: ClassifierRuntime, calls: list[tuple[str, list[str]]]) -> None:
        self.runtime = runtime
        self.calls = calls
        self.version = runtime.version

    def predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.calls.append((self.version, list(texts)))
        return self.runtime.predict_proba(texts, batch_size)


def test_long_texts_are_never_padded_with_short_ones(model: TextClassifierModel) -> None:
    calls: list[tuple[str, list[str]]] = []
    runtime = _RecordingRuntime(model.runtime, calls)
    long_text = "word " * 400

    async def run() -> list[Any]:
        batcher = InferenceBatcher(lambda: runtime, max_texts=64)  # type: ignore[arg-type,return-value]
        requests = [[t] for t in TEXTS] + [[long_text]] + [[t] for t in TEXTS] + [[long_text]]
        results = await asyncio.gather(*(batcher.classify(texts) for texts in requests))
        batcher.close()
        return results

    results = asyncio.run(run())
    for _, texts in calls:
        lengths = [len(t) for t in texts]
        assert max(lengths) <= 4 * max(128, min(lengths)), lengths
    assert sorted(t for _, texts in calls for t in texts) == sorted(
        [*TEXTS, *TEXTS, *[long_text] * 2]
    )
    expected = model.runtime.predict_proba([*TEXTS, long_text], 8)
    np.testing.assert_allclose(results[0].probabilities[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(results[4].probabilities[0], expected[4], atol=1e-6)


def test_a_big_request_runs_in_parts_between_the_others(model: TextClassifierModel) -> None:
    calls: list[tuple[str, list[str]]] = []
    first = _RecordingRuntime(model.runtime, calls)
    big = [f"{'long text ' * 60} number {i}" for i in range(40)]  # 600+ characters each

    async def run() -> tuple[Any, list[Any]]:
        current: list[_RecordingRuntime] = [first]
        batcher = InferenceBatcher(lambda: current[0], max_texts=64)  # type: ignore[arg-type,return-value]
        big_request = asyncio.ensure_future(batcher.classify(big))
        while not calls:  # the big request's first part is running
            await asyncio.sleep(0.001)
        # A new version is swapped in while the big request is running: it keeps the old one.
        current[0] = _RecordingRuntime(model.runtime, calls)
        current[0].version = "new"
        small = await asyncio.gather(*(batcher.classify([t]) for t in TEXTS))
        answer = await big_request
        batcher.close()
        return answer, small

    answer, small = asyncio.run(run())
    big_calls = [i for i, (_, texts) in enumerate(calls) if texts[0] in big]
    small_calls = [i for i, (_, texts) in enumerate(calls) if texts[0] in TEXTS]
    per_call = max(1, 64 * 128 // max(len(t) for t in big))
    assert len(big_calls) == -(-len(big) // per_call) > 1
    assert all(len(calls[i][1]) <= per_call for i in big_calls)
    # The small requests ran before the big one's last part, not after all of it.
    assert max(small_calls) < max(big_calls)
    assert {calls[i][0] for i in big_calls} == {model.runtime.version}
    assert answer.runtime is first
    assert {result.runtime.version for result in small} == {"new"}
    np.testing.assert_allclose(
        answer.probabilities, model.runtime.predict_proba(big, 64), atol=1e-6
    )


def test_the_triton_transformer_cuts_texts_by_the_same_rule(tiny_bundle_dir: Path) -> None:
    from kserve.predictor_config import PredictorConfig

    from textops.components.serve.transformer import TritonTransformer

    settings = ServeSettings(model_name="t", bundle=tiny_bundle_dir, max_chars_per_token=5)
    transformer = TritonTransformer(settings, PredictorConfig("triton:8000", "v2"))
    transformer.load()
    text = "word " * 100_000
    parsed = transformer.parse({"instances": [text, "short"]}, {})
    limit = 5 * transformer.bundle.max_seq_length
    assert parsed.texts == [bound_text(text, limit), "short"]
