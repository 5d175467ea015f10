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
from textops.components.serve.settings import BundleSource, ServePrecision

logger = logging.getLogger(__name__)

_CPU = ["CPUExecutionProvider"]
#: Run once on every new session before it serves, so that its first request is not slow.
_WARMUP_TEXTS = ("warm-up", "a second, somewhat longer warm-up text")


@dataclass(frozen=True)
class ClassifierRuntime:
    """One loaded model version.

    Attributes:
        classifier: The ONNX Runtime session, tokenizer and label map.
        version: The version reported in responses and metadata.
        path: The bundle directory it was loaded from.
        precision: The model file it runs.
        load_seconds: Time taken to load and warm it up.
    """

    classifier: OnnxClassifier
    version: str
    path: Path
    precision: ServePrecision
    load_seconds: float

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
    source: BundleSource, intra_op_threads: int | None, *, spinning: bool = False
) -> ClassifierRuntime:
    """Open the bundle's session and warm it up.

    INT8 graphs run on the CPU provider only (their quantized operators have no CUDA kernels);
    fp32 and fp16 use CUDA when this onnxruntime build has it.

    Idle intra-op threads do not spin unless `spinning`: spinning shortens a lone call a
    little, but the spinning threads take the cores the event loop and the next requests need
    (on 2 cores, spinning halved the requests/s at concurrency 32).

    Raises:
        ModelNotFoundError: The bundle is incomplete or lacks the model of `source.precision`.
    """
    started = time.perf_counter()
    classifier = OnnxClassifier.from_bundle(
        source.path,
        precision=source.precision,
        intra_op_threads=intra_op_threads,
        providers=_CPU if source.precision == "int8" else None,
        session_config=session_config(spinning),
    )
    classifier.predict_proba(list(_WARMUP_TEXTS))
    runtime = ClassifierRuntime(
        classifier=classifier,
        version=source.version,
        path=source.path,
        precision=source.precision,
        load_seconds=time.perf_counter() - started,
    )
    logger.info(
        "runtime ready: bundle=%s version=%s precision=%s threads=%s spinning=%s seconds=%.3f",
        source.path,
        source.version,
        source.precision,
        intra_op_threads or "auto",
        spinning,
        runtime.load_seconds,
    )
    return runtime
