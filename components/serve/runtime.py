"""The served model version: an ONNX Runtime classifier with its labels and version.

A `ClassifierRuntime` never changes once built; a hot swap builds a new one and replaces the
reference, so a batch always runs, and is answered, with one version's session, labels and
version number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.serve.execution import CUDA, Execution, open_classifier
from textops.components.serve.settings import (
    DEFAULT_INFERENCE_BATCH_SIZE,
    DEFAULT_PROBE_SECONDS,
    BundleSource,
    ServePrecision,
)

logger = logging.getLogger(__name__)

#: Run once on every new session before it serves, so that its first request is not slow.
_WARMUP_TEXTS = ("warm-up", "a second, somewhat longer warm-up text")


@dataclass(frozen=True)
class ClassifierRuntime:
    """One loaded model version.

    Attributes:
        classifier: The ONNX Runtime session, tokenizer and label map.
        version: The version reported in responses and metadata.
        path: The bundle directory it was loaded from.
        execution: The graph it runs, on which provider, what was asked and why they differ.
        load_seconds: Time taken to load, check and warm it up.
    """

    classifier: OnnxClassifier
    version: str
    path: Path
    execution: Execution
    load_seconds: float

    @property
    def precision(self) -> ServePrecision:
        """The model file it runs (fp32 where fp16 was asked but could not be served)."""
        return self.execution.precision

    @property
    def requested_precision(self) -> str:
        """What it was loaded for: `--precision`, `--variant NAME`, or `auto`."""
        return self.execution.requested

    def metric_labels(self) -> dict[str, str]:
        """The labels of `textops_model_runtime_info`, model_name aside."""
        return {"version": self.version, **self.execution.metric_labels()}

    def probe_figures(self) -> dict[str, tuple[float, float]]:
        """What the load-time probe measured: variant name to (seconds for one text alone,
        seconds a text at the full batch); empty where no probe ran."""
        probe = self.execution.probe
        if probe is None:
            return {}
        return {
            m.variant: (m.single_ms / 1000.0, m.batch_ms_per_text / 1000.0) for m in probe.measured
        }

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in the column order of `predict_proba`."""
        return self.classifier.labels.names

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text; longer texts are truncated."""
        return self.classifier.max_seq_length

    def predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)); blocking, run it off the loop."""
        return self.classifier.predict_proba(texts, batch_size=batch_size)


def session_config(spinning: bool) -> dict[str, str]:
    """The ONNX Runtime session entries the predictor runs with."""
    return {"session.intra_op.allow_spinning": "1" if spinning else "0"}


def load_runtime(
    source: BundleSource,
    intra_op_threads: int | None,
    *,
    spinning: bool = False,
    accelerator: str = CUDA,
    batch_texts: int = DEFAULT_INFERENCE_BATCH_SIZE,
    probe_seconds: float = DEFAULT_PROBE_SECONDS,
) -> ClassifierRuntime:
    """Open the bundle's session and warm it up.

    With `source.variant` auto (the default), the bundle's CPU variants are measured here and
    the fastest that passes its check is served (`engine_probe`); `batch_texts` is the batch
    they are timed at under load, `probe_seconds` the time spent on texts alone.

    INT8 graphs run on the CPU provider only (their quantized operators have no CUDA kernels);
    fp32 uses CUDA when this onnxruntime build has it; fp16 is served only on CUDA, after it
    passes export's fp16 rule there, else fp32 is, with a warning (see `execution`).

    Idle intra-op threads do not spin unless `spinning`: spinning shortens a lone call a
    little, but the spinning threads take the cores the event loop and the next requests need
    (on 2 cores, spinning halved the requests/s at concurrency 32).

    `accelerator` is the provider fp16 is served on; only tests change it (see
    `execution.open_classifier`).

    Raises:
        ModelNotFoundError: The bundle is incomplete or lacks the INT8 model asked for.
    """
    started = time.perf_counter()
    classifier, execution = open_classifier(
        source.path,
        source.precision,
        intra_op_threads=intra_op_threads,
        session_config=session_config(spinning),
        accelerator=accelerator,
        variant=source.variant,
        batch_texts=batch_texts,
        probe_seconds=probe_seconds,
    )
    classifier.predict_proba(list(_WARMUP_TEXTS))
    runtime = ClassifierRuntime(
        classifier=classifier,
        version=source.version,
        path=source.path,
        execution=execution,
        load_seconds=time.perf_counter() - started,
    )
    logger.info(
        "runtime ready: bundle=%s version=%s %s threads=%s spinning=%s seconds=%.3f",
        source.path,
        source.version,
        execution.describe(),
        intra_op_threads or "auto",
        spinning,
        runtime.load_seconds,
    )
    return runtime
