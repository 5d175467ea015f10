"""Per-word importance by occlusion, for V1 `:explain`, at a cost the settings bound.

Each word is removed in turn and the text classified again; a word's importance is how much
the probability of the predicted label falls without it (negative: the word argued against
it).

    {"explanations": [{"label": "positive", "probability": 0.93,
                       "words": [{"word": "great", "importance": 0.41}, ...]}, ...],
     "model_version": "3"}

What one explain request may cost, and how it shares the model with predictions:

- Its texts arrive cut to what the model reads (`TextModel.parse`), at most
  --explain-max-texts of them, and only the first --explain-max-words words of each are
  scored: at most texts * (words + 1) classifications of at most max_seq_length tokens.
- At most --explain-concurrency explain requests run at once per process; one more is
  answered 503 at once, naming the setting.
- The variants are built, tokenized and classified on the explainer's own threads, never on
  the event loop or the prediction thread, and their calls give way to predictions
  (`inference_gate`): a prediction never queues behind an explanation, and waits for at
  most one of its calls (one max-length text) in the --explain-share of the model's time
  that explanations get while predictions keep it busy.
- One that has not finished within --explain-timeout-seconds (waiting for the model
  included) is stopped and answered 503, naming the setting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException

from textops.components.common.errors import TextopsError
from textops.components.common.onnx_classifier import softmax
from textops.components.serve.batching import next_part, shortest_first
from textops.components.serve.inference_gate import (
    BackgroundCancelledError,
    BackgroundWork,
    InferenceGate,
)
from textops.components.serve.payloads import BatchTooLargeError
from textops.components.serve.runtime import ClassifierRuntime
from textops.components.serve.settings import DEFAULT_EXPLAIN_MAX_WORDS, ServeSettings

logger = logging.getLogger(__name__)


class ExplainUnavailableError(TextopsError, HTTPException):
    """An explain request the server will not work on now (HTTP 503); predictions go on."""

    def __init__(self, message: str) -> None:
        TextopsError.__init__(self, message)
        HTTPException.__init__(self, 503, message)


class ExplainBusyError(ExplainUnavailableError):
    """As many explain requests as --explain-concurrency allows are running already."""


class ExplainTimeoutError(ExplainUnavailableError):
    """An explain request did not finish within --explain-timeout-seconds."""


@dataclass(frozen=True)
class TextSpan:
    """Where one text's variants sit in the batch: the text itself first, then one per word."""

    start: int
    words: list[str]


def occlusion_batch(
    texts: list[str], max_words: int = DEFAULT_EXPLAIN_MAX_WORDS
) -> tuple[list[str], list[TextSpan]]:
    """Every text followed by its variants with one of its first `max_words` words left out."""
    variants: list[str] = []
    spans: list[TextSpan] = []
    for text in texts:
        all_words = text.split()
        words = all_words[:max_words]
        spans.append(TextSpan(len(variants), words))
        variants.append(text)
        for i in range(len(words)):
            variants.append(" ".join(all_words[:i] + all_words[i + 1 :]))
    return variants, spans


def explanations(
    spans: list[TextSpan], probabilities: np.ndarray, runtime: ClassifierRuntime
) -> dict[str, Any]:
    """The explain body, from the probabilities of `occlusion_batch`'s variants."""
    out = []
    for span in spans:
        base = probabilities[span.start]
        best = int(base.argmax())
        occluded = probabilities[span.start + 1 : span.start + 1 + len(span.words), best]
        out.append(
            {
                "label": runtime.labels[best],
                "probability": float(base[best]),
                "words": [
                    {"word": word, "importance": float(base[best] - p)}
                    for word, p in zip(span.words, occluded, strict=True)
                ],
            }
        )
    return {"explanations": out, "model_version": runtime.version}


def classify_in_background(
    runtime: ClassifierRuntime,
    texts: list[str],
    work: BackgroundWork,
    *,
    max_texts: int,
    max_chars: int,
) -> np.ndarray:
    """Class probabilities of `texts`, each call made when the gate gives background work the
    model (`InferenceGate`).

    Blocking: run it on a thread of its own. Texts run shortest first, in calls of at most
    `max_texts` texts and `max_chars` characters of padded text (`batching.next_part`), so
    that a prediction waiting for one of these calls waits little, and a call stopped by a
    prediction loses little: it is tokenized once and run again.

    Raises:
        BackgroundCancelledError: `work` was cancelled.
    """
    classifier = runtime.classifier
    out = np.empty((len(texts), len(runtime.labels)), dtype=np.float32)
    order = shortest_first(texts)
    done = 0
    while done < len(texts):
        if work.cancelled:
            raise BackgroundCancelledError
        part = next_part(texts, order, done, max_texts, max_chars)
        features = classifier.encode([texts[i] for i in part])
        outputs = work.run(lambda options: classifier.session.run(None, features, options))  # noqa: B023
        # The bundle's calibration, as predictions apply it (OnnxClassifier.predict_proba).
        out[part] = softmax(np.asarray(outputs[0], dtype=np.float32), classifier.temperature)
        done += len(part)
    return out


class Explainer:
    """Runs a process's explain requests within the explain settings (see the module doc)."""

    def __init__(self, settings: ServeSettings, gate: InferenceGate) -> None:
        """Set up the explainer's threads (as many as --explain-concurrency).

        Args:
            settings: The explain limits, --max-batch-size and --inference-batch-size.
            gate: The process's ONNX Runtime gate, shared with the prediction batcher.
        """
        self.settings = settings
        self._gate = gate
        self._running = 0
        self._executor = ThreadPoolExecutor(
            max_workers=settings.explain_concurrency, thread_name_prefix="textops-explain"
        )

    @property
    def running(self) -> int:
        """Explain requests being worked on now."""
        return self._running

    async def explain(self, texts: list[str], runtime: ClassifierRuntime) -> dict[str, Any]:
        """Score the words of `texts` (already cut) with `runtime`.

        Raises:
            BatchTooLargeError: More texts than --explain-max-texts (or --max-batch-size) (413).
            ExplainBusyError: --explain-concurrency explain requests are running already (503).
            ExplainTimeoutError: Not done within --explain-timeout-seconds (503).
        """
        settings = self.settings
        limit = min(settings.max_batch_size, settings.explain_max_texts)
        if len(texts) > limit:
            raise BatchTooLargeError(
                f"an explain request may hold at most {limit} texts, got {len(texts)} "
                "(--explain-max-texts, --max-batch-size): split it into smaller requests"
            )
        if self._running >= settings.explain_concurrency:
            raise ExplainBusyError(
                f"{self._running} explain requests are running, the most this server works "
                f"on at once (--explain-concurrency={settings.explain_concurrency}); retry "
                "later, predictions are not affected"
            )
        self._running += 1
        work = self._gate.background_work()
        try:
            async with asyncio.timeout(settings.explain_timeout_seconds):
                spans, probabilities = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._score, runtime, texts, work
                )
        except TimeoutError as e:
            raise ExplainTimeoutError(
                f"the explanation of {len(texts)} texts did not finish within "
                f"--explain-timeout-seconds={settings.explain_timeout_seconds:g}: predictions "
                f"go first, and stopped its model calls {work.preemptions} times; retry when "
                "traffic is lower, or explain fewer or shorter texts"
            ) from e
        finally:
            work.cancel()  # stops the thread's current call, if the timeout left one running
            self._running -= 1
        return explanations(spans, probabilities, runtime)

    def _score(
        self, runtime: ClassifierRuntime, texts: list[str], work: BackgroundWork
    ) -> tuple[list[TextSpan], np.ndarray]:
        settings = self.settings
        started = time.monotonic()
        variants, spans = occlusion_batch(texts, settings.explain_max_words)
        try:
            probabilities = classify_in_background(
                runtime,
                variants,
                work,
                max_texts=settings.inference_batch_size,
                # A call costs at most what one text of max_seq_length tokens costs: that
                # is the most a prediction may wait for one, in the explain share's turns.
                max_chars=settings.max_text_chars(runtime.max_seq_length),
            )
        except BackgroundCancelledError:
            self._log("explanation stopped", texts, variants, work, started)
            raise
        self._log("explanation done", texts, variants, work, started)
        return spans, probabilities

    @staticmethod
    def _log(
        event: str, texts: list[str], variants: list[str], work: BackgroundWork, started: float
    ) -> None:
        logger.info(
            "%s: texts=%d variants=%d calls=%d turns=%d preemptions=%d seconds=%.3f",
            event,
            len(texts),
            len(variants),
            work.calls,
            work.turns,
            work.preemptions,
            time.monotonic() - started,
        )

    def close(self) -> None:
        """Stop the explainer's threads once their current explanations stop."""
        self._executor.shutdown(wait=False, cancel_futures=True)
