"""Which variant of the bundle the predictor serves, on which provider, and why.

By default (`--variant auto`) the predictor measures the bundle's CPU variants on its own host
and serves the fastest that passes its check there (`engine_probe`). `--variant NAME` names
one: an OpenVINO variant is judged the same way and served if it passes, else fp32 with a
warning; an ONNX Runtime one (fp32, int8, fp16) follows `--precision`'s rules below.

`--precision` asks for an ONNX Runtime graph; the host and the bundle decide:

- int8: model.int8.onnx on CPU (its quantized operators have no CUDA kernels).
- fp32: model.onnx, on CUDA where this onnxruntime build has the CUDA provider, else on CPU.
- fp16: model.fp16.onnx on CUDA, and only once it has passed export's fp16 rule
  (`precision_quality.quality_report` with `FP16_MAX_LOSS_POINTS`) against model.onnx on the
  same GPU, on `FP16_CHECK_ROWS` labelled rows (a seeded sample) of the bundle's reference.parquet.
  Export can judge fp16 only where it runs (on a GPU node, or not at all), and the GPU serving
  it may round differently, so the predictor judges it again where it serves it.

When fp16 is asked but not served, fp32 is, and one WARNING line says what was asked, what is
served and why (`Execution.fallback` names the case, `Execution.reason` explains it):

- `no_cuda_provider`: this onnxruntime is the CPU build. fp32 on CPU: ONNX Runtime computes
  most fp16 nodes there in fp32 behind inserted casts, so fp16 would be slower and unchecked.
- `cuda_unusable`: the CUDA provider is built in, but a session cannot run on it (no driver,
  no device visible). fp32 on CPU.
- `no_fp16_model`, `fp16_refused_at_export`: the bundle ships no fp16 graph, or its
  metadata.json says export refused it. fp32 on CUDA. The GPU image always asks for fp16, and
  export leaves fp16 out precisely when it fails the rule, so refusing to start would make a
  gated, deployable bundle unservable on a GPU; fp32 is the graph every precision is judged by.
- `fp16_failed_check`, `fp16_not_checkable`: the fp16 graph fails the rule on this GPU, or
  the reference sample has no labelled rows to judge it on. fp32 on CUDA.

Errors stay errors: an incomplete bundle, a graph ONNX Runtime cannot load (an fp16 file
included: the bundle is damaged), or int8 asked of a bundle without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from textops.components.common.bundle import ModelBundle, Precision
from textops.components.common.engines import AUTO, CPU_VARIANTS, VARIANTS, Variant
from textops.components.common.onnx_classifier import OnnxClassifier, prepare_cuda
from textops.components.common.precision_quality import (
    FP16_MAX_LOSS_POINTS,
    QualityReport,
    quality_report,
)
from textops.components.serve.engine_probe import (
    REFERENCE,
    ProbeReport,
    check_sample,
    probe_variants,
)
from textops.components.serve.settings import (
    DEFAULT_INFERENCE_BATCH_SIZE,
    DEFAULT_PROBE_SECONDS,
    ServePrecision,
)

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Reference rows the fp16 graph is judged on when it loads: a few batches on a GPU, so a
#: load costs well under a second more, while one point of accuracy is still under 3 rows.
FP16_CHECK_ROWS = 256
#: `Execution.fallback` when the precision asked for is served on the provider meant for it.
NO_FALLBACK = "none"

#: Opens one graph of the bundle (fp32, int8 or fp16) on the given providers.
GraphOpener = Callable[[Precision, list[str]], OnnxClassifier]


@dataclass(frozen=True)
class Execution:
    """How a loaded model version runs, as the log, the V2 metadata and the metrics report it.

    Attributes:
        provider: The execution provider the session runs on (its first; `OpenVINO:CPU` for
            OpenVINO).
        precision: The graph file served: fp32, int8 or fp16.
        requested: What was asked: a precision (`--precision`), a variant's name
            (`--variant NAME`) or `auto`.
        fallback: `NO_FALLBACK`, or the case that made the predictor serve something else or
            elsewhere (see the module docstring).
        reason: One sentence on the fallback; empty without one.
        fp16_check: The load-time judgement of the fp16 graph, where one ran.
        variant: The variant served (see `engines`); its graph file is `precision`.
        choice: `probe` (measured here), `setting` (named by --variant or --precision).
        probe: What the probe measured, where one ran.
    """

    provider: str
    precision: ServePrecision
    requested: str
    fallback: str = NO_FALLBACK
    reason: str = ""
    fp16_check: QualityReport | None = None
    variant: str = ""
    choice: str = "setting"
    probe: ProbeReport | None = None

    def __post_init__(self) -> None:
        if not self.variant:  # ONNX Runtime's variants are named after their graph
            object.__setattr__(self, "variant", self.precision)

    @property
    def engine(self) -> str:
        return VARIANTS[self.variant].engine

    def metric_labels(self) -> dict[str, str]:
        """The labels of `textops_model_runtime_info` (besides model_name and version)."""
        return {
            "provider": self.provider,
            "precision": self.precision,
            "requested_precision": self.requested,
            "fallback": self.fallback,
            "variant": self.variant,
            "engine": self.engine,
            "variant_choice": self.choice,
        }

    def parameters(self) -> dict[str, Any]:
        """The V2 model metadata's `parameters`: strings, numbers and booleans only."""
        parameters: dict[str, Any] = {
            **self.metric_labels(),
            "onnxruntime_version": ort.__version__,
        }
        if self.reason:
            parameters["fallback_reason"] = self.reason
        if self.probe is not None:
            parameters.update(self.probe.parameters())
        parameters["fp16_check"] = self.fp16_verdict
        check = self.fp16_check
        if check is not None:
            parameters.update(
                fp16_check_rows=check.rows,
                fp16_accuracy_loss_points=check.accuracy_loss_points,
                fp16_macro_f1_loss_points=check.macro_f1_loss_points,
                fp16_max_loss_points=check.max_loss_points,
                fp16_max_abs_logit_diff=check.agreement_with_fp32.max_abs_diff,
                fp16_argmax_agreement=check.agreement_with_fp32.argmax_agreement,
            )
        return parameters

    @property
    def fp16_verdict(self) -> str:
        """`passed` or `failed` where the fp16 graph was judged on load, else `not_run`."""
        if self.fp16_check is None:
            return "not_run"
        return "passed" if self.fp16_check.passed else "failed"

    def describe(self) -> str:
        """The key=value fields of the runtime's log line."""
        return (
            f"variant={self.variant} engine={self.engine} choice={self.choice} "
            f"provider={self.provider} precision={self.precision} "
            f"requested_precision={self.requested} fallback={self.fallback} "
            f"fp16_check={self.fp16_verdict}"
        )


def open_classifier(
    bundle_dir: Path,
    requested: ServePrecision,
    *,
    intra_op_threads: int | None = None,
    session_config: Mapping[str, str] | None = None,
    accelerator: str = CUDA,
    variant: str | None = None,
    batch_texts: int = DEFAULT_INFERENCE_BATCH_SIZE,
    probe_seconds: float = DEFAULT_PROBE_SECONDS,
) -> tuple[OnnxClassifier, Execution]:
    """Open the graph to serve for `requested` (or `variant`) on this host, with how and why.

    Args:
        bundle_dir: The model bundle.
        requested: The precision asked for; used where `variant` is None.
        intra_op_threads: See `OnnxClassifier`.
        session_config: See `OnnxClassifier`.
        accelerator: The provider fp16 is served on. Only tests change it: on
            ONNX Runtime's CPU build, `CPUExecutionProvider` (which can run fp16 graphs, if
            slowly) takes the GPU's place, so the fp16 path, its check included, runs for real.
        variant: `auto` to measure the CPU variants and serve the fastest, a variant's name
            to serve it (see the module docstring), None to follow `requested`.
        batch_texts: Texts per call under load, the batch the probe times.
        probe_seconds: Seconds the probe times texts alone.

    Returns:
        The classifier to serve, and how it runs.

    Raises:
        ModelNotFoundError: The bundle is incomplete, lacks max_seq_length in its metadata,
            or lacks the INT8 model asked for.
    """

    def open_graph(precision: Precision, providers: list[str]) -> OnnxClassifier:
        return OnnxClassifier.from_bundle(
            bundle_dir,
            precision=precision,
            intra_op_threads=intra_op_threads,
            providers=providers,
            session_config=session_config,
        )

    if variant is not None and variant != AUTO and VARIANTS[variant].engine == "onnxruntime":
        requested, variant = VARIANTS[variant].graph, None
    if variant is not None:

        def open_variant(candidate: Variant) -> OnnxClassifier:
            return OnnxClassifier.from_bundle(
                bundle_dir,
                variant=candidate,
                intra_op_threads=intra_op_threads,
                providers=[CPU],
                session_config=session_config,
            )

        named = None if variant == AUTO else variant
        classifier, report = probe_variants(
            ModelBundle.open(bundle_dir),
            open_variant,
            batch_texts=batch_texts,
            seconds=probe_seconds,
            candidates=CPU_VARIANTS if named is None else (REFERENCE, named),
            prefer=named,
        )
        served = VARIANTS[report.chosen]
        execution = Execution(
            classifier.providers[0],
            served.graph,
            variant,
            variant=served.name,
            choice="probe" if named is None else "setting",
            probe=report,
        )
        if named is not None and served.name != named:
            execution = Execution(
                classifier.providers[0],
                served.graph,
                variant,
                "variant_failed_check",
                report.reason,
                variant=served.name,
                probe=report,
            )
            logger.warning(
                "variant fallback: requested=%s served=%s reason=%s",
                named,
                served.name,
                report.reason,
            )
        return classifier, execution
    on_accelerator = list(dict.fromkeys([accelerator, CPU]))
    if requested == "int8":
        classifier = open_graph("int8", [CPU])
        return classifier, Execution(classifier.providers[0], "int8", "int8")
    ready = _provider_ready(accelerator)
    if requested == "fp32":
        classifier = open_graph("fp32", on_accelerator if ready else [CPU])
        execution = Execution(classifier.providers[0], "fp32", "fp32")
        if ready and classifier.providers[0] != accelerator:
            execution = _fallback(classifier, "fp32", "cuda_unusable", _unusable(accelerator))
        return classifier, execution
    if not ready:
        return _fp32_instead(open_graph("fp32", [CPU]), "no_cuda_provider", _absent(accelerator))
    return _open_fp16(ModelBundle.open(bundle_dir), open_graph, on_accelerator)


def _open_fp16(
    bundle: ModelBundle, open_graph: GraphOpener, on_accelerator: list[str]
) -> tuple[OnnxClassifier, Execution]:
    """fp16 on the accelerator if it passes the rule against fp32 there, else fp32."""
    accelerator = on_accelerator[0]
    fp32 = open_graph("fp32", on_accelerator)
    if fp32.providers[0] != accelerator:
        return _fp32_instead(fp32, "cuda_unusable", _unusable(accelerator))
    refusal = export_refusal(bundle)
    if refusal is not None:
        return _fp32_instead(fp32, *refusal)
    fp16 = open_graph("fp16", on_accelerator)
    if fp16.providers[0] != accelerator:
        return _fp32_instead(fp32, "cuda_unusable", _unusable(accelerator))
    texts, label_ids = check_sample(bundle, fp32.labels, FP16_CHECK_ROWS)
    if not texts:
        return _fp32_instead(
            fp32,
            "fp16_not_checkable",
            f"{bundle.reference_path.name} has no labelled rows to judge the fp16 graph on",
        )
    report = check_fp16(fp32, fp16, texts, label_ids)
    if not report.passed:
        reason = f"the fp16 graph fails the fp16 rule on {accelerator}: {report.describe()}"
        return _fp32_instead(fp32, "fp16_failed_check", reason, report)
    return fp16, Execution(accelerator, "fp16", "fp16", fp16_check=report)


def export_refusal(bundle: ModelBundle) -> tuple[str, str] | None:
    """(fallback, reason) when the bundle has no fp16 graph to serve; None when it has one."""
    record = bundle.metadata.get("fp16")
    record = record if isinstance(record, dict) else {}
    said = f": {record['reason']}" if record.get("reason") else ""
    if bundle.fp16_model_path is None:
        return "no_fp16_model", f"the bundle has no model.fp16.onnx{said}"
    quality = record.get("quality")
    if record.get("shipped") is False or (
        isinstance(quality, dict) and quality.get("passed") is False
    ):
        return "fp16_refused_at_export", f"export refused the fp16 graph{said}"
    return None


def check_fp16(
    fp32: OnnxClassifier, fp16: OnnxClassifier, texts: list[str], label_ids: np.ndarray
) -> QualityReport:
    """Judge the fp16 graph against fp32 by export's fp16 rule, and log the figures."""
    started = time.perf_counter()
    report = quality_report(fp32.logits(texts), fp16.logits(texts), label_ids, FP16_MAX_LOSS_POINTS)
    logger.info(
        "fp16 check: provider=%s rows=%d passed=%s accuracy_loss_points=%.2f "
        "macro_f1_loss_points=%.2f max_loss_points=%g max_abs_logit_diff=%.3g "
        "argmax_agreement=%.4f seconds=%.3f",
        fp16.providers[0],
        report.rows,
        report.passed,
        report.accuracy_loss_points,
        report.macro_f1_loss_points,
        report.max_loss_points,
        report.agreement_with_fp32.max_abs_diff,
        report.agreement_with_fp32.argmax_agreement,
        time.perf_counter() - started,
    )
    return report


def _provider_ready(provider: str) -> bool:
    if provider == CUDA:
        return prepare_cuda()  # loads the nvidia-* libraries first, where the build needs them
    return provider in ort.get_available_providers()


def _absent(provider: str) -> str:
    offered = ", ".join(ort.get_available_providers())
    return f"onnxruntime {ort.__version__} has no {provider} (it offers {offered})"


def _unusable(provider: str) -> str:
    return (
        f"onnxruntime offers {provider}, but a session could not run on it (no GPU or driver "
        "visible to this process?)"
    )


def _fp32_instead(
    classifier: OnnxClassifier,
    fallback: str,
    reason: str,
    fp16_check: QualityReport | None = None,
) -> tuple[OnnxClassifier, Execution]:
    return classifier, _fallback(classifier, "fp16", fallback, reason, fp16_check)


def _fallback(
    classifier: OnnxClassifier,
    requested: str,
    fallback: str,
    reason: str,
    fp16_check: QualityReport | None = None,
) -> Execution:
    execution = Execution(classifier.providers[0], "fp32", requested, fallback, reason, fp16_check)
    logger.warning(
        "precision fallback: requested=%s served=%s provider=%s fallback=%s reason=%s",
        requested,
        execution.precision,
        execution.provider,
        fallback,
        reason,
    )
    return execution
