"""Explain's bounded cost: its caps, its concurrency limit and timeout, and the gate that makes
it give way to predictions."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from kserve.model import InferenceVerb

from textops.components.common.long_text import bound_text
from textops.components.serve.explain import (
    ExplainBusyError,
    ExplainTimeoutError,
    ExplainUnavailableError,
)
from textops.components.serve.inference_gate import BackgroundCancelledError, InferenceGate
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.payloads import BatchTooLargeError
from textops.components.serve.settings import ServeSettings

#: How long a test waits for something another thread does before it fails.
PATIENCE_S = 30


class _RecordingTokenizer:
    """The runtime's real tokenizer, recording the texts it is handed."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.seen: list[str] = []

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.seen.extend(texts)
        return self.tokenizer.encode_batch(texts, *args, **kwargs)


def _model(bundle: Path, **limits: Any) -> TextClassifierModel:
    model = TextClassifierModel(ServeSettings(model_name="explain", bundle=bundle, **limits))
    model.load()
    return model


def _record_tokenizer(model: TextClassifierModel) -> _RecordingTokenizer:
    classifier = model.runtime.classifier
    recording = _RecordingTokenizer(classifier.tokenizer)
    classifier.tokenizer = recording  # type: ignore[assignment]
    return recording


async def _explain(model: TextClassifierModel, texts: list[str]) -> Any:
    answer, _ = await model({"instances": texts}, headers={}, verb=InferenceVerb.EXPLAIN)
    return answer


def test_explain_scores_only_the_first_words_of_a_cut_text(tiny_bundle_dir: Path) -> None:
    model = _model(tiny_bundle_dir, explain_max_words=5)
    tokenizer = _record_tokenizer(model)
    huge = " ".join(f"word{i}" for i in range(200_000))  # about 1.3 MB
    limit = model.settings.max_text_chars(model.runtime.max_seq_length)

    body = asyncio.run(_explain(model, [huge, "great food"]))

    first, second = body["explanations"]
    assert [w["word"] for w in first["words"]] == ["word0", "word1", "word2", "word3", "word4"]
    assert [w["word"] for w in second["words"]] == ["great", "food"]
    # Each text and one variant per scored word, nothing longer than the cut.
    assert len(tokenizer.seen) == (1 + 5) + (1 + 2)
    cut = bound_text(huge, limit)  # its first and last `limit` characters
    assert max(len(text) for text in tokenizer.seen) == len(cut) == 2 * limit + 1
    assert cut in tokenizer.seen
    probabilities = model.runtime.predict_proba([cut], 8)[0]
    assert first["probability"] == pytest.approx(float(probabilities.max()), abs=1e-6)


def test_explain_refuses_more_texts_than_its_limit(tiny_bundle_dir: Path) -> None:
    model = _model(tiny_bundle_dir, explain_max_texts=2)
    with pytest.raises(BatchTooLargeError, match=r"at most 2 texts, got 3 \(--explain-max-texts"):
        asyncio.run(_explain(model, ["a", "b", "c"]))


def test_explain_over_the_concurrency_limit_is_refused_and_predictions_go_on(
    tiny_bundle_dir: Path,
) -> None:
    # No share while predictions wait: the first explanation waits as long as one does.
    model = _model(tiny_bundle_dir, explain_concurrency=1, explain_share=0.0)

    async def run() -> tuple[Any, Any, Any]:
        gate = model._get_gate()
        gate.prediction_queued()  # a prediction holds the model
        first = asyncio.ensure_future(_explain(model, ["great food here"]))
        while model._get_explainer().running == 0:
            await asyncio.sleep(0.001)
        with pytest.raises(ExplainBusyError) as refused:
            await _explain(model, ["awful"])
        predicted, _ = await model({"instances": ["ok"]}, headers={})
        gate.prediction_finished()  # the model is free: the first explanation goes on
        return refused.value, predicted, await asyncio.wait_for(first, PATIENCE_S)

    refused, predicted, explained = asyncio.run(run())
    assert refused.status_code == 503
    assert "--explain-concurrency=1" in refused.detail
    assert len(predicted["predictions"]) == 1
    assert [w["word"] for w in explained["explanations"][0]["words"]] == ["great", "food", "here"]


def test_explain_over_its_timeout_is_stopped_and_answered_503(tiny_bundle_dir: Path) -> None:
    model = _model(tiny_bundle_dir, explain_timeout_seconds=0.2, explain_share=0.0)

    async def run() -> tuple[ExplainUnavailableError, Any, Any]:
        gate = model._get_gate()
        gate.prediction_queued()  # the model stays busy with predictions past the timeout
        with pytest.raises(ExplainTimeoutError) as timed_out:
            await _explain(model, ["great food here"])
        gate.prediction_finished()
        predicted, _ = await model({"instances": ["ok"]}, headers={})
        return timed_out.value, predicted, await _explain(model, ["great food"])

    timed_out, predicted, explained = asyncio.run(run())
    assert timed_out.status_code == 503
    assert "--explain-timeout-seconds=0.2" in timed_out.detail
    assert model._get_explainer().running == 0
    assert len(predicted["predictions"]) == 1
    assert len(explained["explanations"][0]["words"]) == 2


def test_predictions_do_not_queue_behind_an_explanation(tiny_bundle_dir: Path) -> None:
    model = _model(tiny_bundle_dir)
    texts = [" ".join(f"w{i}{j}" for j in range(64)) for i in range(16)]  # 1,040 variants
    finished: list[str] = []

    async def run() -> None:
        async def explain() -> None:
            await _explain(model, texts)
            finished.append("explain")

        async def predict(i: int) -> None:
            await model({"instances": [f"prediction {i}"]}, headers={})
            finished.append("predict")

        explaining = asyncio.ensure_future(explain())
        while not model._get_explainer().running:
            await asyncio.sleep(0.001)
        for i in range(5):
            await predict(i)
        await explaining

    asyncio.run(run())
    assert finished == ["predict"] * 5 + ["explain"]


def test_a_prediction_stops_a_background_call_which_runs_again_later() -> None:
    gate = InferenceGate(share=0.0)
    work = gate.background_work()
    started = threading.Event()
    attempts: list[bool] = []

    def call(options: ort.RunOptions) -> str:
        # Stands in for `InferenceSession.run`: stops when `options.terminate` is set.
        attempts.append(True)
        started.set()
        if len(attempts) == 1:
            if not _wait_until(lambda: options.terminate):
                return "never stopped"
            raise RuntimeError("Exiting due to terminate flag being set to true.")
        return "done"

    outcome: list[str] = []
    background = threading.Thread(target=lambda: outcome.append(work.run(call)))
    background.start()
    assert started.wait(PATIENCE_S)
    gate.prediction_queued()
    assert gate.run_prediction(lambda: "predicted") == "predicted"
    assert len(attempts) == 1  # not again while the prediction is queued
    gate.prediction_finished()
    background.join(PATIENCE_S)
    assert outcome == ["done"]
    assert (len(attempts), work.preemptions, work.turns) == (2, 1, 0)


def test_background_work_gets_its_share_while_predictions_wait() -> None:
    gate = InferenceGate(share=0.5)
    gate.prediction_queued()  # predictions keep the model busy throughout
    work = gate.background_work()
    results = [work.run(lambda options: options.terminate) for _ in range(3)]
    # Each call ran as a turn, not stopped by the waiting prediction.
    assert results == [False, False, False]
    assert (work.turns, work.preemptions) == (3, 0)
    assert gate.run_prediction(lambda: 1) == 1


def test_without_a_share_background_work_waits_until_cancelled() -> None:
    gate = InferenceGate(share=0.0)
    gate.prediction_queued()
    work = gate.background_work()
    calls: list[bool] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work.run(lambda options: calls.append(True))
        except BackgroundCancelledError as e:
            errors.append(e)

    waiting = threading.Thread(target=run)
    waiting.start()
    work.cancel()
    waiting.join(PATIENCE_S)
    assert not waiting.is_alive()
    assert calls == [] and len(errors) == 1


def test_a_real_session_run_is_stopped_by_a_prediction(tiny_bundle_dir: Path) -> None:
    model = _model(tiny_bundle_dir)
    classifier = model.runtime.classifier
    gate = InferenceGate(share=0.0)
    work = gate.background_work()
    features = classifier.encode(["a long text to classify " * 40] * 512)
    runs: list[ort.RunOptions] = []

    def call(options: ort.RunOptions) -> Any:
        runs.append(options)
        if len(runs) == 1:
            # Stopped before it starts, as if the prediction came at its first node.
            gate.prediction_queued()
            threading.Timer(0.05, gate.prediction_finished).start()
        return classifier.session.run(None, features, options)

    logits = np.asarray(work.run(call)[0])
    assert len(runs) == 2 and runs[0].terminate and not runs[1].terminate
    assert work.preemptions == 1
    np.testing.assert_allclose(logits, classifier.run(features), atol=1e-5)


def _wait_until(condition: Any) -> bool:
    event = threading.Event()
    for _ in range(PATIENCE_S * 1000):
        if condition():
            return True
        event.wait(0.001)
    return False
