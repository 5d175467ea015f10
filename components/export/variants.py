"""Which graphs a bundle ships, each with the evidence that let it in (or kept it out).

- `model.onnx`, fp32: the fused graph when fusion applies and it reproduces PyTorch, else the
  unfused graph when that does; else nothing ships (ExportError).
- `model.int8.onnx`, INT8 static quantization for CPU serving, calibrated on a seeded sample
  of the train split: only if it loses at most `parity.INT8_MAX_LOSS_POINTS` of accuracy and
  of macro-F1 against fp32 on true labels, and answers every probe text the same alone as in
  any batch (`batch_invariance`); else the bundle serves fp32 and the record says why.
- `model.fp16.onnx`, for GPU serving: judged like INT8 (`parity.FP16_MAX_LOSS_POINTS`, batch
  invariance) where a CUDA device runs it; without one it ships unchecked, and the record says
  so and why. The GPU predictor judges its quality again, by the same rule, on the GPU that
  serves it, and serves fp32 where it fails or cannot be judged (see
  `textops.components.serve.execution`).

model.onnx must be batch invariant too, or nothing ships (ExportError). Every record lands in
metadata.json under `fusion`, `int8`, `fp16` and `batch_invariance`.

The same files can be run by another engine (see `textops.components.common.engines`):
OpenVINO fp32 and bf16 over model.onnx, OpenVINO INT8 over model.int8.onnx. `judge_variants`
holds each to the rule of its precision against PyTorch and fp32 on the validation split, batch
invariance included, and metadata.json `variants` records every variant's verdict; the
predictor serves only variants that passed (and judges again on its own host).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textops.components.common import batch_invariance
from textops.components.common.batch_invariance import InvarianceReport
from textops.components.common.bundle import FP16_MODEL_FILE, INT8_MODEL_FILE, MODEL_FILES
from textops.components.common.engines import VARIANTS, Variant, cpu_capabilities, openvino_missing
from textops.components.common.errors import ExportError
from textops.components.common.onnx_classifier import OnnxClassifier, prepare_cuda
from textops.components.export import parity
from textops.components.export.optimize import (
    INT8_ACTIVATION_TYPE,
    INT8_OPERATORS,
    INT8_WEIGHT_TYPE,
    FusionOutcome,
    convert_fp16,
    fuse_transformer,
    quantize_int8,
)
from textops.components.export.parity import ParityReport

logger = logging.getLogger(__name__)

#: Which fp32 graph INT8 quantizes. Static QDQ quantization rewrites plain MatMul nodes; the
#: fused graph's Attention and SkipLayerNormalization operators would stay float.
INT8_SOURCE = "unfused"
#: Per-channel weight scales: closer to fp32 than per-tensor ones (fp32's verdict on 100% vs
#: 98.7% of fine-tuned all-MiniLM-L6-v2's validation split; docs/benchmarks.md, "ONNX export").
INT8_PER_CHANNEL = True
#: Most train-split texts INT8's activation ranges are calibrated on: a seeded sample, so the
#: same data and seed give the same graph. MinMax ranges settle within a few hundred texts.
CALIBRATION_MAX_TEXTS = 256
#: Texts per calibration batch; batches hold texts of one token length, so none is padded.
CALIBRATION_BATCH_SIZE = 64

#: Opens an ONNX graph of the bundle with the given execution providers.
GraphOpener = Callable[[Path, Sequence[str]], OnnxClassifier]
#: Opens an ONNX graph of the bundle as a variant runs it (engine and compute precision).
VariantOpener = Callable[[Path, Variant], OnnxClassifier]

_CPU = ("CPUExecutionProvider",)
_CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class ValidationRun:
    """The validation split and PyTorch's logits on it: what every graph is judged against.

    Attributes:
        texts: The validation texts.
        label_ids: Their true class ids.
        pytorch: PyTorch's logits on them.
        open_graph: Opens a graph with the bundle's tokenizer and labels.
        calibration_texts: Train-split texts INT8's activation ranges are calibrated on.
        open_variant: Opens a graph as another engine runs it; None judges no other engine.
    """

    texts: Sequence[str]
    label_ids: np.ndarray
    pytorch: np.ndarray
    open_graph: GraphOpener
    calibration_texts: Sequence[str] = ()
    open_variant: VariantOpener | None = None


@dataclass(frozen=True)
class Fp32Graph:
    """The fp32 graph that becomes model.onnx, and how it was chosen."""

    path: Path
    fused: bool
    fusion: FusionOutcome
    parity: ParityReport
    logits: np.ndarray
    fused_parity: ParityReport | None = None
    invariance: InvarianceReport | None = None

    def fusion_record(self) -> dict[str, Any]:
        """metadata.json's `fusion`: applied or not, why, the fused operators, its parity."""
        record = self.fusion.to_dict()
        record["shipped"] = self.fused
        record["parity"] = self.fused_parity.to_dict() if self.fused_parity else None
        if self.fusion.applied and not self.fused and self.fused_parity is not None:
            record["reason"] = (
                f"the fused graph failed parity ({self.fused_parity.describe()}); model.onnx "
                "is the unfused graph, which passed"
            )
        return record


@dataclass(frozen=True)
class OptionalGraph:
    """An INT8 or fp16 graph: its file when it ships, and the record of why (not)."""

    precision: str
    path: Path | None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def shipped(self) -> bool:
        return self.path is not None


def choose_fp32(unfused: Path, work: Path, config: Any, validation: ValidationRun) -> Fp32Graph:
    """Fuse the exported graph where ONNX Runtime supports the architecture, and prove it.

    Args:
        unfused: The graph `torch.onnx.export` wrote.
        work: A scratch folder for the fused graph.
        config: The model's Hugging Face config (model_type, heads, hidden size).
        validation: The split and PyTorch's logits on it.

    Raises:
        ExportError: Neither the fused nor the unfused graph reproduces PyTorch, or the one
            that does answers a text differently depending on its batch.
    """
    fusion = fuse_transformer(
        unfused,
        work / "model.fused.onnx",
        model_type=str(getattr(config, "model_type", "")),
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
    )
    fused_report = None
    if fusion.applied:
        fused_path = work / "model.fused.onnx"
        logits = parity.onnx_logits(
            validation.open_graph(fused_path, _CPU), validation.texts, "parity fused"
        )
        fused_report = parity.parity_report(logits, validation.pytorch)
        if fused_report.passed:
            parity.require_parity(fused_report, "fused")
            invariance = _require_invariance(fused_path, validation)
            return Fp32Graph(
                fused_path, True, fusion, fused_report, logits, fused_report, invariance
            )
        logger.warning("fused graph failed parity, trying the unfused one: %s", fused_report)

    logits = parity.onnx_logits(
        validation.open_graph(unfused, _CPU), validation.texts, "parity unfused"
    )
    report = parity.parity_report(logits, validation.pytorch)
    parity.require_parity(report, "unfused")
    invariance = _require_invariance(unfused, validation)
    return Fp32Graph(unfused, False, fusion, report, logits, fused_report, invariance)


def _require_invariance(path: Path, validation: ValidationRun) -> InvarianceReport:
    """Stop the export when the fp32 graph answers a text differently in different batches.

    model.onnx is what every other graph falls back to: without it batch invariant, nothing
    left to serve would answer each text the same way.
    """
    report = batch_invariance.check_batch_invariance(
        validation.open_graph(path, _CPU), validation.texts, "fp32"
    )
    if not report.passed:
        raise ExportError(
            f"the fp32 graph is not batch invariant: {report.describe()}; an operator couples "
            "the rows of a batch (check the attention mask and any batch-wide op in the model)"
        )
    return report


def calibration_batches(
    classifier: OnnxClassifier, texts: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Encode calibration texts in batches of one token length each, shortest first.

    Padded positions would add the ranges of pad-token activations, which no served text
    reads, to the calibrated ones; grouping texts by length leaves no padding at all.
    """
    by_length: dict[int, list[str]] = {}
    for text, encoding in zip(texts, classifier.tokenizer.encode_batch(list(texts)), strict=True):
        by_length.setdefault(sum(encoding.attention_mask), []).append(text)
    return [
        classifier.encode(group[start : start + CALIBRATION_BATCH_SIZE])
        for _, group in sorted(by_length.items())
        for start in range(0, len(group), CALIBRATION_BATCH_SIZE)
    ]


def build_int8(
    fp32: Fp32Graph, unfused: Path, work: Path, validation: ValidationRun
) -> OptionalGraph:
    """Quantize to static INT8 and keep it only if it holds its quality and is batch invariant.

    A failed check leaves model.int8.onnx out of the bundle, so the predictor serves fp32;
    the record and a WARNING line say why.
    """
    target = work / INT8_MODEL_FILE
    record: dict[str, Any] = {
        "file": None,
        "source_graph": INT8_SOURCE,
        "method": "static",
        "format": "QDQ",
        "operators": list(INT8_OPERATORS),
        "weight_type": INT8_WEIGHT_TYPE,
        "activation_type": INT8_ACTIVATION_TYPE,
        "per_channel": INT8_PER_CHANNEL,
        "calibration": {"method": "MinMax", "source": "train split", "texts": 0, "batches": 0},
    }
    if not validation.calibration_texts:
        reason = "no train-split texts to calibrate activation ranges on"
        logger.warning("INT8 not shipped: %s", reason)
        return OptionalGraph("int8", None, {**record, "shipped": False, "reason": reason})
    try:
        batches = calibration_batches(
            validation.open_graph(unfused, _CPU), validation.calibration_texts
        )
        quantize_int8(unfused, target, calibration=batches, per_channel=INT8_PER_CHANNEL)
    except Exception as e:  # the quantizer fails in many ways; fp32 still serves
        logger.warning("INT8 quantization failed: %s: %s", type(e).__name__, e)
        reason = f"quantization failed ({type(e).__name__}: {e})"
        return OptionalGraph("int8", None, {**record, "shipped": False, "reason": reason})
    record["calibration"].update(texts=len(validation.calibration_texts), batches=len(batches))

    classifier = validation.open_graph(target, _CPU)
    quality, invariance, failures = _judge(
        classifier,
        fp32,
        validation,
        record,
        precision="int8",
        named="INT8",
        max_loss_points=parity.INT8_MAX_LOSS_POINTS,
    )
    record["bytes"] = target.stat().st_size
    if failures:
        record["reason"] = "; ".join(failures) + "; the bundle serves fp32"
        logger.warning("INT8 not shipped: %s", record["reason"])
        return OptionalGraph("int8", None, record)
    record.update(
        file=INT8_MODEL_FILE,
        reason=f"within the allowance: {quality.describe()}; batch invariant: "
        f"{invariance.describe()}",
    )
    logger.info("INT8 ships: %s", quality.describe())
    return OptionalGraph("int8", target, record)


def build_fp16(fp32: Fp32Graph, work: Path, validation: ValidationRun) -> OptionalGraph:
    """Convert model.onnx to fp16 for GPU serving; judge it on CUDA when a device is here."""
    target = work / FP16_MODEL_FILE
    record: dict[str, Any] = {"file": None, "source_graph": "fused" if fp32.fused else "unfused"}
    try:
        convert_fp16(fp32.path, target)
    except Exception as e:  # the converter fails in many ways; fp32 still serves
        logger.warning("fp16 conversion failed: %s: %s", type(e).__name__, e)
        reason = f"conversion failed ({type(e).__name__}: {e})"
        return OptionalGraph("fp16", None, {**record, "shipped": False, "reason": reason})
    record["bytes"] = target.stat().st_size

    gpu, no_gpu = _cuda_classifier(target, validation)
    if gpu is None:
        # A run on CPU would prove only that the file loads: ONNX Runtime computes most fp16
        # nodes there in fp32 behind inserted casts, not as a GPU rounds them.
        failure = _smoke_failure(target, validation)
        if failure is not None:
            return OptionalGraph("fp16", None, {**record, "shipped": False, "reason": failure})
        record.update(
            shipped=True,
            file=FP16_MODEL_FILE,
            checked=False,
            reason=f"not checked: no CUDA device here ({no_gpu}); fp16 is judged only on a "
            "GPU, and the GPU predictor judges it before serving it",
        )
        logger.info("fp16 ships unchecked: %s", no_gpu)
        return OptionalGraph("fp16", target, record)

    record.update(checked=True, provider=_CUDA)
    quality, _, failures = _judge(
        gpu,
        fp32,
        validation,
        record,
        precision="fp16",
        named="fp16 on CUDA",
        max_loss_points=parity.FP16_MAX_LOSS_POINTS,
        where=" (cuda)",
    )
    if failures:
        record["reason"] = "; ".join(failures)
        logger.warning("fp16 not shipped: %s", record["reason"])
        return OptionalGraph("fp16", None, record)
    record.update(file=FP16_MODEL_FILE, reason=f"checked on CUDA: {quality.describe()}")
    logger.info("fp16 ships, checked on CUDA: %s", quality.describe())
    return OptionalGraph("fp16", target, record)


def _judge(
    classifier: OnnxClassifier,
    fp32: Fp32Graph,
    validation: ValidationRun,
    record: dict[str, Any],
    *,
    precision: str,
    named: str,
    max_loss_points: float,
    where: str = "",
) -> tuple[parity.QualityReport, InvarianceReport, list[str]]:
    """Judge a reduced-precision graph as INT8 and fp16 both are: quality, then invariance.

    Records both verdicts and PyTorch's agreement in `record`, with `shipped`.

    Args:
        classifier: The graph, open on the providers it is judged on.
        fp32: The fp32 graph whose answers on true labels it may not fall far behind.
        validation: The texts and labels it is judged on.
        record: The graph's metadata.json record, updated here.
        precision: `int8` or `fp16`, as the batch-invariance report names it.
        named: How messages name the graph, e.g. "fp16 on CUDA".
        max_loss_points: The accuracy and macro-F1 points it may lose against fp32.
        where: Added to the progress label of its run over the texts.

    Returns:
        The quality report, the invariance report and why it may not ship (empty: it may).
    """
    logits = parity.onnx_logits(classifier, validation.texts, f"{precision} quality{where}")
    quality = parity.quality_report(fp32.logits, logits, validation.label_ids, max_loss_points)
    invariance = batch_invariance.check_batch_invariance(classifier, validation.texts, precision)
    record.update(
        quality=quality.to_dict(),
        agreement_with_pytorch=parity.agreement(logits, validation.pytorch).to_dict(),
        batch_invariance=invariance.to_dict(),
        shipped=quality.passed and invariance.passed,
    )
    failures = []
    if not quality.passed:
        failures.append(f"{named} loses too much against fp32: {quality.describe()}")
    if not invariance.passed:
        failures.append(f"{named} answers depend on the batch: {invariance.describe()}")
    return quality, invariance, failures


def _cuda_classifier(path: Path, validation: ValidationRun) -> tuple[OnnxClassifier | None, str]:
    """The graph on CUDA, or None and why not (no CUDA in this onnxruntime or on this machine)."""
    if not prepare_cuda():  # loads the nvidia-* CUDA and cuDNN libraries where they are needed
        return None, "this onnxruntime build has no CUDAExecutionProvider"
    try:
        classifier = validation.open_graph(path, (_CUDA, *_CPU))
    except Exception as e:  # ONNX Runtime's errors derive from Exception only
        # The CPU smoke run that follows says whether the file itself is at fault.
        return None, f"the CUDA session failed ({type(e).__name__}: {e})"
    # onnxruntime-gpu falls back to CPU, with a warning only, when no device or driver is found.
    if classifier.providers[0] != _CUDA:
        return None, "onnxruntime has CUDAExecutionProvider, but no GPU or driver answered"
    return classifier, ""


def _smoke_failure(path: Path, validation: ValidationRun) -> str | None:
    """Why the graph cannot serve (it fails to load or run, or gives non-finite logits), or None.

    One batch on CPU, so a file ONNX Runtime cannot execute is never shipped.
    """
    try:
        classifier = validation.open_graph(path, _CPU)
        logits = classifier.run(classifier.encode(list(validation.texts[: parity.BATCH_SIZE])))
    except Exception as e:  # ONNX Runtime's errors derive from Exception only
        return f"the fp16 graph does not run on CPU ({type(e).__name__}: {e})"
    if not np.isfinite(logits).all():
        return "the fp16 graph gives non-finite logits on CPU: its values overflow fp16"
    return None


def judge_variants(
    fp32: Fp32Graph, optional: Sequence[OptionalGraph], validation: ValidationRun
) -> dict[str, dict[str, Any]]:
    """metadata.json's `variants`: every serving variant, and whether it may serve.

    ONNX Runtime's variants are summarised from the records above. Each OpenVINO variant whose
    graph ships is run on the validation split: an fp32 one must reproduce PyTorch as
    model.onnx did (`parity.parity_report`), a reduced one keep its precision's allowance
    against fp32 on true labels; both must be batch invariant. bf16 is judged
    only where the CPU computes it natively (`native_here`); elsewhere OpenVINO would emulate
    it at about 20x fp32's time, so the record says `judge_on_host` and the predictor judges it
    on a CPU that has it, as it judges fp16 on a GPU.

    Args:
        fp32: The fp32 graph that ships as model.onnx.
        optional: The INT8 and fp16 graphs, shipped or not.
        validation: The split, PyTorch's logits on it and the graph openers.

    Returns:
        Variant name to its record: engine, graph file, compute precision, `checked`,
        `passed` (None where unchecked), the evidence and a `reason`.
    """
    shipped = {graph.precision: graph for graph in optional}
    records: dict[str, dict[str, Any]] = {
        "fp32": _variant_record(
            VARIANTS["fp32"],
            checked=True,
            passed=True,
            parity=fp32.parity.to_dict(),
            batch_invariance=fp32.invariance.to_dict() if fp32.invariance else None,
            reason="model.onnx reproduces PyTorch on the validation split",
        ),
    }
    for name in ("int8", "fp16"):
        graph = shipped.get(name)
        record = graph.record if graph is not None else {}
        checked = "quality" in record
        ships = graph is not None and graph.shipped
        # Shipped unchecked (fp16 without a GPU here): the GPU predictor judges it.
        passed = ships if checked or not ships else None
        records[name] = _variant_record(
            VARIANTS[name],
            checked=checked,
            passed=passed,
            quality=record.get("quality"),
            agreement_with_pytorch=record.get("agreement_with_pytorch"),
            batch_invariance=record.get("batch_invariance"),
            reason=str(record.get("reason", "not built")),
        )
    graphs = {"fp32": fp32.path, "int8": shipped["int8"].path if "int8" in shipped else None}
    for name in ("openvino-fp32", "openvino-int8", "openvino-bf16"):
        records[name] = _judge_engine_variant(VARIANTS[name], graphs, fp32, validation)
    return records


def _judge_engine_variant(
    candidate: Variant,
    graphs: dict[str, Path | None],
    fp32: Fp32Graph,
    validation: ValidationRun,
) -> dict[str, Any]:
    """Run one OpenVINO variant on the validation split and record its verdict."""
    path = graphs.get(candidate.graph)
    unavailable = openvino_missing() if validation.open_variant is not None else "not judged"
    if path is None or unavailable is not None:
        reason = (
            f"{MODEL_FILES[candidate.graph]} does not ship"
            if path is None
            else f"not checked: {unavailable}"
        )
        return _variant_record(candidate, checked=False, passed=None, reason=reason)
    assert validation.open_variant is not None
    extra: dict[str, Any] = {}
    if candidate.compute == "bf16":
        extra["native_here"] = "BF16" in cpu_capabilities()
        if not extra["native_here"]:
            # OpenVINO would emulate bf16 here, with bf16's rounding but about 20x fp32's
            # time (it took export of the default model from 35 s to 155 s on 2 vCPUs).
            reason = (
                "not judged here: this CPU does not compute bf16 natively, and emulated it "
                "runs about 20x slower than fp32; the predictor judges it on a CPU that has it "
                "(against fp32 on the reference sample, batch invariance included) before "
                "serving it"
            )
            return _variant_record(
                candidate, checked=False, passed=None, reason=reason, judge_on_host=True, **extra
            )
    try:
        classifier = validation.open_variant(path, candidate)
        logits = parity.onnx_logits(classifier, validation.texts, f"{candidate.name} parity")
    except Exception as e:  # an engine fails in many ways; ONNX Runtime still serves
        reason = f"it does not run ({type(e).__name__}: {e})"
        logger.warning("variant %s not servable: %s", candidate.name, reason)
        return _variant_record(candidate, checked=True, passed=False, reason=reason, **extra)
    invariance = batch_invariance.check_batch_invariance(
        classifier, validation.texts, candidate.compute
    )
    agreement = parity.agreement(logits, validation.pytorch)
    failures = []
    evidence: dict[str, Any] = {"agreement_with_pytorch": agreement.to_dict()}
    if candidate.max_loss_points is None:
        report = parity.parity_report(logits, validation.pytorch)
        evidence["parity"] = report.to_dict()
        verdict = report.describe()
        if not report.passed:
            failures.append(f"it does not reproduce PyTorch: {verdict}")
    else:
        quality = parity.quality_report(
            fp32.logits, logits, validation.label_ids, candidate.max_loss_points
        )
        evidence["quality"] = quality.to_dict()
        verdict = quality.describe()
        if not quality.passed:
            failures.append(f"it loses too much against fp32: {verdict}")
    if not invariance.passed:
        failures.append(f"its answers depend on the batch: {invariance.describe()}")
    passed = not failures
    reason = "; ".join(failures) if failures else f"passed: {verdict}"
    if extra.get("native_here") is False:
        reason += "; judged with bf16 emulated (this CPU lacks it), served only where native"
    (logger.info if passed else logger.warning)("variant %s: %s", candidate.name, reason)
    return _variant_record(
        candidate,
        checked=True,
        passed=passed,
        batch_invariance=invariance.to_dict(),
        reason=reason,
        **evidence,
        **extra,
    )


def _variant_record(
    candidate: Variant, *, checked: bool, passed: bool | None, reason: str, **evidence: Any
) -> dict[str, Any]:
    return {
        "engine": candidate.engine,
        "file": MODEL_FILES[candidate.graph],
        "compute": candidate.compute,
        "checked": checked,
        "passed": passed,
        **{key: _summary(value) for key, value in evidence.items() if value is not None},
        "reason": reason,
    }


def _summary(evidence: Any) -> Any:
    """Evidence as `variants` records it: a batch-invariance report without its per-mix detail,
    which metadata.json's `batch_invariance` already holds for ONNX Runtime's graphs."""
    if isinstance(evidence, dict) and "mixes" in evidence:
        return {key: value for key, value in evidence.items() if key != "mixes"}
    return evidence
