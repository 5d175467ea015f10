"""Which variant the predictor serves: measured on the host that serves, not assumed.

Which engine and precision answer fastest depends on the processor (VNNI, AMX, AVX-512 BF16,
each engine's kernels for it): on one 2-vCPU Xeon ONNX Runtime's INT8 was 2x PyTorch at
1 x 128 tokens and OpenVINO's INT8 3x; elsewhere the order may differ. So, with `--variant
auto` (the default), the predictor:

1. Lists the bundle's CPU variants (see `engines`) and leaves out, each with its reason,
   those export refused or did not judge, unless it left them to the serving host (bf16,
   which export judges only where it is native: here its batch invariance is checked too)
   (metadata.json `variants`; a bundle exported before
   variants were recorded offers fp32, and INT8 where it was recorded batch invariant), those
   whose graph file is missing, and those this host cannot run natively (OpenVINO missing,
   bf16 without AMX or AVX-512 BF16).
2. Opens each on this host and runs it on `CHECK_ROWS` labelled rows (a seeded sample) of the
   bundle's reference sample, in batches of the predictor's `--inference-batch-size`, the
   variants taking turns batch by batch so a slow spell of the machine hits all alike. The same
   calls judge each variant against ONNX Runtime fp32 on this host (an fp32 variant must agree
   on every argmax and within `FP32_ENGINES_MAX_ABS_DIFF`; a reduced one keep its precision's
   allowance on true labels) and time it at the batch size it serves under load.
3. Times each at batch 1, one text at a time in turns, until `--probe-seconds` have passed
   (at least `MIN_SINGLE_ROUNDS` rounds).
4. Serves the variant with the lowest score, the geometric mean of its batch-1 latency and its
   per-text time at the full batch, each relative to ONNX Runtime fp32: fast alone and fast
   under load count alike. A variant that failed its check is never served.

The choice, every variant's figures and every exclusion go to the log, the V2 model metadata
and the metrics. `--variant NAME` skips the choice: the named variant is judged the same way
and served if it passes (else fp32, with a warning).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from textops.components.common.batch_invariance import (
    check_batch_invariance,
    recorded_as_invariant,
)
from textops.components.common.bundle import MODEL_FILES, VARIANTS_KEY, ModelBundle
from textops.components.common.engines import CPU_VARIANTS, VARIANTS, Variant, host_refusal
from textops.components.common.errors import DataError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.common.precision_quality import (
    FP32_ENGINES_MAX_ABS_DIFF,
    agreement,
    quality_report,
)
from textops.components.serve.settings import CHECK_ROWS, DEFAULT_PROBE_SECONDS

logger = logging.getLogger(__name__)

#: Batch-1 rounds every variant gets, whatever the time.
MIN_SINGLE_ROUNDS = 3
#: Texts timed alone per round (the first reference texts): one text would time one length.
SINGLE_TEXTS = 4
#: The variant every other is judged and scored against.
REFERENCE = "fp32"

#: Opens the bundle as one variant runs it.
VariantOpener = Callable[[Variant], OnnxClassifier]


@dataclass(frozen=True)
class Measured:
    """One variant's figures on this host.

    Attributes:
        variant: Its name.
        single_ms: Median latency of one text alone, in milliseconds.
        batch_ms_per_text: Time per text at the full batch, in milliseconds.
        score: Geometric mean of both, each relative to `REFERENCE` (lower is faster).
        check: Its verdict against `REFERENCE` on this host ("reference" for fp32).
        passed: Whether that verdict lets it serve.
    """

    variant: str
    single_ms: float
    batch_ms_per_text: float
    score: float
    check: str
    passed: bool


@dataclass(frozen=True)
class ProbeReport:
    """What the probe measured and why it chose what it chose."""

    chosen: str
    reason: str
    measured: tuple[Measured, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)
    rows: int = 0
    batch_texts: int = 0
    seconds: float = 0.0

    def figures(self, name: str) -> Measured | None:
        return next((m for m in self.measured if m.variant == name), None)

    def parameters(self) -> dict[str, Any]:
        """V2 metadata `parameters`: scalars only."""
        parameters: dict[str, Any] = {
            "probe_reason": self.reason,
            "probe_rows": self.rows,
            "probe_batch_texts": self.batch_texts,
            "probe_seconds": round(self.seconds, 3),
        }
        for m in self.measured:
            key = m.variant.replace("-", "_")
            parameters[f"probe_{key}_single_ms"] = round(m.single_ms, 3)
            parameters[f"probe_{key}_batch_ms_per_text"] = round(m.batch_ms_per_text, 3)
            parameters[f"probe_{key}_score"] = round(m.score, 3)
            parameters[f"probe_{key}_check"] = m.check
        for name, why in self.excluded.items():
            parameters[f"probe_{name.replace('-', '_')}_excluded"] = why
        return parameters

    def describe(self) -> str:
        """The probe's log line after `variant probe:`."""
        figures = " ".join(
            f"{m.variant}=({m.single_ms:.2f}ms/1 {m.batch_ms_per_text:.2f}ms/text@"
            f"{self.batch_texts} score={m.score:.2f}{'' if m.passed else ' FAILED'})"
            for m in self.measured
        )
        excluded = "; ".join(f"{name}: {why}" for name, why in self.excluded.items())
        return (
            f"chose={self.chosen} {figures} excluded=[{excluded}] rows={self.rows} "
            f"seconds={self.seconds:.2f}"
        )


def recorded_refusal(bundle: ModelBundle, candidate: Variant) -> str | None:
    """Why the bundle's own record rules `candidate` out, or None when it may be tried."""
    if bundle.precision_model_path(candidate.graph) is None:
        return f"the bundle has no {MODEL_FILES[candidate.graph]}"
    records = bundle.metadata.get(VARIANTS_KEY)
    if not isinstance(records, dict):
        # Exported before variants were recorded: fp32, and INT8 as the predictor served it.
        if candidate.name == REFERENCE:
            return None
        if candidate.name == "int8":
            if recorded_as_invariant(bundle.metadata, "int8"):
                return None
            return "exported before INT8 was checked for batch invariance"
        return "the bundle was exported before serving variants were judged; export it again"
    record = records.get(candidate.name)
    if not isinstance(record, dict):
        return "metadata.json records no verdict on it"
    if record.get("passed") is False:
        return f"export refused it: {record.get('reason', 'no reason recorded')}"
    if record.get("passed") is None and record.get("judge_on_host") is True:
        return None  # left to the serving host (bf16 judged where it is native)
    if record.get("passed") is not True:
        return f"export did not judge it: {record.get('reason', 'no reason recorded')}"
    return None


def probe_variants(
    bundle: ModelBundle,
    open_variant: VariantOpener,
    *,
    batch_texts: int,
    seconds: float = DEFAULT_PROBE_SECONDS,
    candidates: Sequence[str] = CPU_VARIANTS,
    prefer: str | None = None,
    host: Callable[[Variant], str | None] = host_refusal,
) -> tuple[OnnxClassifier, ProbeReport]:
    """Judge and time the candidates on this host; return the one to serve, open, and why.

    Args:
        bundle: The bundle to serve.
        open_variant: Opens the bundle as a variant runs it (threads and session settings
            as served).
        batch_texts: Texts per call under load (`--inference-batch-size`).
        seconds: Seconds of batch-1 timing.
        candidates: Variant names to consider; `REFERENCE` is always among them.
        prefer: Serve this variant if it passes its check, whatever its speed (`--variant
            NAME`); fp32 where it does not.
        host: Why this host cannot run a variant natively, or None (tests widen it).

    Returns:
        The classifier to serve and the report.
    """
    started = time.perf_counter()
    excluded: dict[str, str] = {}
    opened: dict[str, OnnxClassifier] = {REFERENCE: open_variant(VARIANTS[REFERENCE])}
    for name in dict.fromkeys(candidates):
        if name == REFERENCE:
            continue
        candidate = VARIANTS[name]
        refusal = recorded_refusal(bundle, candidate) or host(candidate)
        if refusal is None:
            try:
                opened[name] = open_variant(candidate)
            except Exception as e:  # an engine fails in many ways; fp32 still serves
                refusal = f"it does not open here ({type(e).__name__}: {e})"
        if refusal is not None:
            excluded[name] = refusal

    texts, label_ids = check_sample(bundle, opened[REFERENCE].labels, CHECK_ROWS)
    if not texts:
        texts = list(_FALLBACK_TEXTS)
    batched, logits = _time_batches(opened, texts, batch_texts)
    single = _time_singles(opened, texts[:SINGLE_TEXTS], time.perf_counter() + seconds)

    reference = logits[REFERENCE]
    measured = []
    for name in opened:
        check, passed = _check(VARIANTS[name], logits[name], reference, label_ids)
        if passed and _judged_here_only(bundle, name):
            # Export could not judge it: batch invariance is checked here, as export would.
            invariance = check_batch_invariance(opened[name], texts, VARIANTS[name].compute)
            check += f"; batch invariance: {invariance.describe()}"
            passed = invariance.passed
        score = math.sqrt((single[name] / single[REFERENCE]) * (batched[name] / batched[REFERENCE]))
        per_text = 1000.0 * batched[name] / len(texts)
        measured.append(Measured(name, 1000.0 * single[name], per_text, score, check, passed))
    servable = [m for m in measured if m.passed]
    if prefer is not None:  # named: served if it passed, else the reference
        best = next((m for m in servable if m.variant == prefer), measured[0])
    else:
        best = min(servable, key=lambda m: m.score)
    reason = _reason(best, prefer, measured, excluded, len(texts), batch_texts)
    report = ProbeReport(
        best.variant,
        reason,
        tuple(measured),
        excluded,
        len(texts),
        batch_texts,
        time.perf_counter() - started,
    )
    logger.info("variant probe: %s", report.describe())
    return opened[best.variant], report


def _judged_here_only(bundle: ModelBundle, name: str) -> bool:
    """Whether export left `name` to the serving host (see `recorded_refusal`)."""
    records = bundle.metadata.get(VARIANTS_KEY)
    record = records.get(name) if isinstance(records, dict) else None
    return isinstance(record, dict) and record.get("judge_on_host") is True


#: Timed when the reference sample holds no text: fp32 variants can still be compared.
_FALLBACK_TEXTS = (
    "the delivery was late and nobody answered the phone",
    "great value, works exactly as described",
)


def check_sample(
    bundle: ModelBundle, labels: LabelMap, rows: int = CHECK_ROWS
) -> tuple[list[str], np.ndarray]:
    """The texts and true class ids of `rows` labelled rows of reference.parquet: a seeded
    sample spread over the whole file, since its rows may come grouped by class (a split
    written class by class), where the first rows would hold one class only.

    Rows whose label the model does not know are skipped; a reference sample without text or
    label columns gives none.
    """
    import pandas as pd  # only here: a predictor that never checks a variant never pays for it

    frame = pd.read_parquet(bundle.reference_path)
    if not {"text", "label"} <= set(frame.columns):
        return [], np.empty(0, dtype=np.int64)
    texts: list[str] = []
    label_ids: list[int] = []
    for text, label in zip(frame["text"], frame["label"], strict=True):
        if not isinstance(text, str):
            continue
        try:
            label_ids.append(labels.index(label))
        except DataError:
            continue
        texts.append(text)
    if len(texts) > rows:
        chosen = np.sort(np.random.default_rng(0).choice(len(texts), size=rows, replace=False))
        texts = [texts[i] for i in chosen]
        label_ids = [label_ids[i] for i in chosen]
    return texts, np.asarray(label_ids, dtype=np.int64)


def _time_batches(
    opened: Mapping[str, OnnxClassifier], texts: Sequence[str], batch_texts: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every variant's logits on `texts` and its seconds for all of them, batch by batch in
    turns; each variant's first call (of the first batch) runs twice, the first untimed."""
    batches = [list(texts[i : i + batch_texts]) for i in range(0, len(texts), batch_texts)]
    features = {name: [c.encode(b) for b in batches] for name, c in opened.items()}
    seconds = dict.fromkeys(opened, 0.0)
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in opened}
    for name, classifier in opened.items():
        classifier.run(features[name][0])  # warm-up: first-call allocations and compilation
    for index in range(len(batches)):
        for name, classifier in opened.items():
            began = time.perf_counter()
            outputs[name].append(classifier.run(features[name][index]))
            seconds[name] += time.perf_counter() - began
    return seconds, {name: np.concatenate(out) for name, out in outputs.items()}


def _time_singles(
    opened: Mapping[str, OnnxClassifier], texts: Sequence[str], deadline: float
) -> dict[str, float]:
    """Median seconds of one text alone per variant, in turns until `deadline` (but at least
    `MIN_SINGLE_ROUNDS` rounds)."""
    features = {name: [c.encode([t]) for t in texts] for name, c in opened.items()}
    times: dict[str, list[float]] = {name: [] for name in opened}
    rounds = 0
    while rounds < MIN_SINGLE_ROUNDS or time.perf_counter() < deadline:
        for name, classifier in opened.items():
            for feature in features[name]:
                began = time.perf_counter()
                classifier.run(feature)
                times[name].append(time.perf_counter() - began)
        rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}


def _check(
    candidate: Variant, logits: np.ndarray, reference: np.ndarray, label_ids: np.ndarray
) -> tuple[str, bool]:
    """A variant's verdict against fp32 on this host: (one line, passed)."""
    if candidate.name == REFERENCE:
        return "reference", True
    if candidate.max_loss_points is None:
        measured = agreement(logits, reference)
        passed = (
            measured.argmax_agreement == 1.0 and measured.max_abs_diff <= FP32_ENGINES_MAX_ABS_DIFF
        )
        return (
            f"argmax agreement {measured.argmax_agreement:.2%}, max abs logit difference "
            f"{measured.max_abs_diff:.2g} (allowed {FP32_ENGINES_MAX_ABS_DIFF:g})",
            passed,
        )
    if len(label_ids) != len(logits):
        return "not checkable: the reference sample has no labelled rows", False
    report = quality_report(reference, logits, label_ids, candidate.max_loss_points)
    return report.describe(), report.passed


def _reason(
    best: Measured,
    prefer: str | None,
    measured: Sequence[Measured],
    excluded: Mapping[str, str],
    rows: int,
    batch: int,
) -> str:
    if prefer is not None:
        if best.variant == prefer:
            return f"{prefer} was named and passed its check on this host ({best.check})"
        failed = next((m for m in measured if m.variant == prefer), None)
        why = (
            f"failed its check on this host: {failed.check}"
            if failed
            else f"was excluded: {excluded.get(prefer, 'not a CPU variant')}"
        )
        return f"{prefer} was named but {why}; serving {best.variant} instead"
    return (
        f"{best.variant} is fastest here: {best.single_ms:.2f} ms for one text, "
        f"{best.batch_ms_per_text:.2f} ms a text in batches of {batch}, "
        f"score {best.score:.2f} of fp32's 1.00 (over {rows} reference rows)"
    )
