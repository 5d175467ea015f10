"""The KServe model: texts in, label, probabilities and model version out.

`TextClassifierModel` is a plain `kserve.Model`: `preprocess` checks the request and takes its
texts (cut to what the model reads), `predict` runs them through the process's
`InferenceBatcher` (ONNX Runtime on its own thread, never on the event loop), `postprocess`
(`TextModel`'s) writes the V1 or V2 body, and `explain` scores each word by occlusion on the
`Explainer`'s threads, within its limits and giving way to predictions (`InferenceGate`).

KServe's `--workers N` starts N processes and hands each a pickled copy of the model. An ONNX
Runtime session cannot be pickled, so `__getstate__` leaves it out and `__setstate__` loads the
bundle again: every worker builds its own session.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import orjson
from kserve.errors import ModelNotReady

from textops.components.serve import metrics
from textops.components.serve.batching import InferenceBatcher
from textops.components.serve.explain import Explainer
from textops.components.serve.inference_gate import InferenceGate
from textops.components.serve.payloads import ParsedRequest
from textops.components.serve.runtime import ClassifierRuntime, load_runtime
from textops.components.serve.settings import ServeSettings, resolve_source
from textops.components.serve.text_model import Answer, TextModel

logger = logging.getLogger(__name__)

#: The V2 metadata `platform` of an ONNX model (the name Triton uses).
PLATFORM = "onnxruntime_onnx"


class TextClassifierModel(TextModel[ClassifierRuntime]):
    """A model bundle served over KServe's V1 and V2 protocols."""

    not_loaded_message = "the model bundle is not loaded"

    def __init__(self, settings: ServeSettings) -> None:
        """Set up the model; `load()` opens the bundle.

        Args:
            settings: What to serve and the request limits.
        """
        super().__init__(settings)
        self._gate: InferenceGate | None = None
        self._batcher: InferenceBatcher | None = None
        self._explainer: Explainer | None = None
        self._reload_lock: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> bool:
        """Open the bundle `settings` names (blocking) and become ready.

        Raises:
            ModelNotFoundError: The bundle is incomplete or nothing is published.
        """
        runtime = load_runtime(
            resolve_source(self.settings),
            self.settings.intra_op_threads,
            spinning=self.settings.intra_op_spinning,
            batch_texts=self.settings.inference_batch_size,
            probe_seconds=self.settings.probe_seconds,
        )
        self._swap_in(runtime)
        self.ready = True
        return self.ready

    async def reload(self) -> ClassifierRuntime:
        """Load the bundle the settings name now and swap it in; requests never wait on it.

        The new session is built and warmed up on a worker thread while the old one keeps
        serving; the swap itself is one reference assignment, so every request is answered
        entirely by one version. In repository mode a reload is skipped when current.json
        still names the version being served.

        Returns:
            The runtime serving from now on.

        Raises:
            ModelNotFoundError: The new bundle cannot be loaded; the old version keeps serving.
        """
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            source = resolve_source(self.settings)
            current = self._served
            if (
                current is not None
                and self.settings.model_repository is not None
                and (current.path, current.version, current.requested_precision)
                == (source.path, source.version, source.requested)
            ):
                logger.info("reload skipped: version %s is already served", current.version)
                self.ready = True
                return current
            loop = asyncio.get_running_loop()
            runtime = await loop.run_in_executor(
                None,
                functools.partial(
                    load_runtime,
                    source,
                    self.settings.intra_op_threads,
                    spinning=self.settings.intra_op_spinning,
                    batch_texts=self.settings.inference_batch_size,
                    probe_seconds=self.settings.probe_seconds,
                ),
            )
            self._swap_in(runtime)
            self.ready = True
            logger.info(
                "swapped in version %s (was %s)", runtime.version, current and current.version
            )
            return runtime

    def stop(self) -> None:
        """Stop serving: close this process's inference threads (waiting requests get 503)."""
        if self._batcher is not None:
            self._batcher.close(ModelNotReady(self.name, "the model was unloaded"))
            self._batcher = None
        if self._explainer is not None:
            self._explainer.close()
            self._explainer = None
        if self._served is not None:
            served = self._served
            metrics.clear_served(self.name, served.version, served.metric_labels())
            metrics.set_probe_figures(
                self.name, (served.version, {}), (served.version, served.probe_figures())
            )
        self.ready = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Per-process things: an ORT session cannot be pickled, asyncio objects belong to one
        # event loop, a thread or a lock to one process.
        state.update(_served=None, _gate=None, _batcher=None, _explainer=None, _reload_lock=None)
        return state

    @property
    def runtime(self) -> ClassifierRuntime:
        """The version being served."""
        return self.served

    def _swap_in(self, served: ClassifierRuntime) -> None:
        """Serve `served` from now on; both info gauges follow (version, and how it runs)."""
        previous = self._served
        super()._swap_in(served)
        metrics.set_served_runtime(
            self.name, served.metric_labels(), previous.metric_labels() if previous else None
        )
        metrics.set_probe_figures(
            self.name,
            (served.version, served.probe_figures()),
            (previous.version, previous.probe_figures()) if previous else None,
        )

    def _get_gate(self) -> InferenceGate:
        if self._gate is None:
            self._gate = InferenceGate(self.settings.explain_share)
        return self._gate

    def _get_batcher(self) -> InferenceBatcher:
        if self._batcher is None:
            histogram = metrics.INFERENCE_BATCH_TEXTS.labels(model_name=self.name)
            self._batcher = InferenceBatcher(
                lambda: self.runtime,
                max_texts=self.settings.inference_batch_size,
                on_batch=histogram.observe,
                gate=self._get_gate(),
            )
        return self._batcher

    def _get_explainer(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(self.settings, self._get_gate())
        return self._explainer

    # -- KServe handlers ------------------------------------------------------------------

    async def preprocess(
        self, payload: Any, headers: dict[str, str] | None = None
    ) -> ParsedRequest:
        """Check the decoded V1 or V2 request and take its texts (400 or 413 when wrong)."""
        return self.parse(payload, headers)

    async def predict(
        self,
        payload: ParsedRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Answer:
        """Classify the texts, batched with concurrent requests, off the event loop."""
        result = await self._get_batcher().classify(payload.texts)
        return Answer(payload, result.probabilities, result.runtime)

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Word importance by occlusion: how much each word's removal lowers the prediction.

        Raises:
            BatchTooLargeError: More texts than --explain-max-texts allows (413).
            ExplainUnavailableError: --explain-concurrency explain requests are running, or
                this one did not finish within --explain-timeout-seconds (503).
        """
        parsed: ParsedRequest = payload
        return await self._get_explainer().explain(parsed.texts, self.runtime)

    def metadata_extras(self) -> dict[str, Any]:
        """The V2 metadata fields KServe leaves out: the served version, the platform, and in
        `parameters` how it runs (variant and engine served and why, the probe's figures,
        provider, precision asked and served, fallback, fp16 check) and `labels`, the
        probability columns' classes in order.
        """
        runtime = self.runtime
        # A JSON-encoded list, as each answer's `probabilities` names them: parameter values
        # are scalars. A client (evaluate's champion_url) learns the classes before scoring.
        labels = orjson.dumps(list(runtime.labels)).decode()
        return {
            "versions": [runtime.version],
            "platform": PLATFORM,
            "parameters": {**runtime.execution.parameters(), "labels": labels},
        }
