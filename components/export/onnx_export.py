"""Export a trained classifier to ONNX, prove it matches PyTorch, and write the model bundle.

The steps: trace the model to one ONNX file; fuse it for ONNX Runtime and prove the fused
graph on the whole validation split and batch invariant (`variants.choose_fp32`); add INT8
(statically quantized, calibrated on the train split) and fp16 graphs where they keep their
quality and stay batch invariant (`variants.build_int8`, `variants.build_fp16`); predict the
reference sample; write metadata.json with every figure and the file hashes. torch and
transformers are imported inside the functions that use them, so importing this module (as the
KFP component and the pipeline compiler do) stays cheap.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textops.components.common import bundle as bundle_format
from textops.components.common.dataio import read_table, require_columns
from textops.components.common.engines import Variant
from textops.components.common.errors import ExportError
from textops.components.common.labels import LabelMap
from textops.components.common.long_text import STRATEGY_KEY, recorded_strategy
from textops.components.common.onnx_classifier import (
    OnnxClassifier,
    encode_texts,
    load_tokenizer,
)
from textops.components.export import parity
from textops.components.export.parity import ParityReport, check_tokenization
from textops.components.export.reference import (
    REFERENCE_MAX_ROWS,
    reference_predictions,
    reference_sample,
    texts_of,
)
from textops.components.export.trace import (
    OPSET,
    export_onnx,
    graph_inputs,
    load_fast_tokenizer,
    load_model,
    write_tokenizer,
)
from textops.components.export.variants import (
    CALIBRATION_MAX_TEXTS,
    Fp32Graph,
    OptionalGraph,
    ValidationRun,
    build_fp16,
    build_int8,
    choose_fp32,
    judge_variants,
)

__all__ = [
    "OPSET",
    "ExportResult",
    "check_tokenization",
    "export_bundle",
    "load_fast_tokenizer",
    "reference_sample",
]

logger = logging.getLogger(__name__)

#: Seed of the reference sample when the training metadata carries none.
DEFAULT_SEED = 42
#: Keys the train step must put in its artifact metadata.
REQUIRED_TRAINING_KEYS = ("base_model", "data_fingerprint", "max_seq_length")
#: The calibration record's fields and the evaluate metrics they come from (on the test split).
CALIBRATION_METRICS = {
    "ece_before": "ece",
    "ece_after": "ece_calibrated",
    "nll_before": "nll",
    "nll_after": "nll_calibrated",
}

# Two texts of different lengths, so the traced graph sees a batch and real padding.
_TRACE_TEXTS = ("a short text", "a somewhat longer text, so that the batch holds padding")


@dataclass(frozen=True)
class ExportResult:
    """What `export_bundle` wrote, for the KFP artifact and the logs."""

    bundle_dir: Path
    opset: int
    input_names: tuple[str, ...]
    parity: ParityReport
    reference_rows: int
    file_sizes: dict[str, int]
    seconds: float
    fused: bool = False
    int8: dict[str, Any] = field(default_factory=dict)
    fp16: dict[str, Any] = field(default_factory=dict)

    def artifact_metadata(self) -> dict[str, Any]:
        """Flat JSON scalars for the bundle artifact's metadata in the KFP UI."""
        quality = self.int8.get("quality") or {}
        int8_invariance = self.int8.get("batch_invariance") or {}
        return {
            "opset": self.opset,
            "onnx_inputs": ",".join(self.input_names),
            "parity_rows": self.parity.rows,
            "parity_max_abs_diff": self.parity.max_abs_diff,
            "parity_argmax_agreement": self.parity.argmax_agreement,
            "parity_tolerance": self.parity.tolerance,
            "fused": self.fused,
            "int8_shipped": bool(self.int8.get("shipped")),
            "int8_accuracy_loss_points": float(quality.get("accuracy_loss_points", 0.0)),
            "int8_macro_f1_loss_points": float(quality.get("macro_f1_loss_points", 0.0)),
            "int8_batch_invariant": bool(int8_invariance.get("passed")),
            "int8_batch_max_prob_diff": float(int8_invariance.get("max_prob_diff", 0.0)),
            "fp16_shipped": bool(self.fp16.get("shipped")),
            "fp16_checked": bool(self.fp16.get("checked")),
            "reference_rows": self.reference_rows,
            "model_onnx_bytes": self.file_sizes.get(bundle_format.MODEL_FILE, 0),
            "model_int8_onnx_bytes": self.file_sizes.get(bundle_format.INT8_MODEL_FILE, 0),
            "model_fp16_onnx_bytes": self.file_sizes.get(bundle_format.FP16_MODEL_FILE, 0),
            "bundle_bytes": sum(self.file_sizes.values()),
            "export_seconds": round(self.seconds, 3),
            "textops_version": bundle_format.textops_version(),
        }


def export_bundle(
    *,
    model_dir: str | Path,
    validation_path: str | Path,
    reference_source_path: str | Path,
    training: dict[str, Any],
    evaluation: dict[str, Any],
    bundle_dir: str | Path,
) -> ExportResult:
    """Export the trained model to ONNX and write the complete model bundle.

    The bundle appears at `bundle_dir` only once every file is written and the parity check
    has passed; a failure leaves neither the bundle nor a partial directory behind. INT8 and
    fp16 models are added when they keep their quality; metadata.json says why where not.

    Args:
        model_dir: The train step's Hugging Face directory (model, fast tokenizer, labels.json).
        validation_path: Parquet validation split (text and label); every graph is checked
            on all of it.
        reference_source_path: Parquet train split; reference.parquet samples it.
        training: The train artifact's metadata: base_model, data_fingerprint,
            max_seq_length and the hyperparameters, and the `lineage` the data carried
            down from the validate step (recorded as the bundle's lineage).
        evaluation: Test metrics, recorded as the bundle's metrics. Its `temperature` (the
            calibration evaluate fitted) becomes metadata.json's `calibration` record, which
            every runtime applies; without one the bundle serves uncalibrated (T = 1).
        bundle_dir: Where the bundle directory is created (replaced if it exists).

    Returns:
        Parity figures, the optional models' records, sizes and timings of the bundle written.

    Raises:
        ExportError: The training metadata is incomplete, the model and its label map
            disagree, the bundle's tokenizer differs from training's, ONNX Runtime does not
            reproduce PyTorch within `parity.PARITY_MAX_ABS_DIFF`, fused or unfused, or the
            fp32 graph answers a text differently depending on its batch.
        DataError: A split cannot be read, lacks the text or label column, or holds a label
            the model does not know.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    settings = _training_settings(training)
    max_seq_length = int(settings["max_seq_length"])
    labels = LabelMap.load(model_dir / bundle_format.LABELS_FILE)
    validation = _read_split(validation_path, "validation split")
    validation_texts = texts_of(validation, "validation split")
    label_ids = np.asarray([labels.index(v) for v in validation["label"]], dtype=np.int64)
    reference_source = _read_split(reference_source_path, "train split")
    seed = int(training.get("seed", DEFAULT_SEED))
    # INT8's activation ranges come from training texts, so the validation split that judges
    # INT8 stays unseen; the seeded sample makes the quantized graph reproducible.
    calibration_texts = texts_of(
        reference_sample(reference_source, max_rows=CALIBRATION_MAX_TEXTS, seed=seed),
        "train split",
    )
    model = load_model(model_dir, labels, max_seq_length)
    tokenizer = load_fast_tokenizer(model_dir)
    # How training cut long texts, as it recorded in the tokenizer's config (evaluation reads
    # it there too); the bundle records it for every runtime.
    strategy = recorded_strategy(tokenizer.init_kwargs)

    with (
        bundle_format.atomic_directory(Path(bundle_dir)) as scratch,
        tempfile.TemporaryDirectory(prefix="textops-export-") as work_dir,
    ):
        work = Path(work_dir)  # graphs that may not ship stay out of the bundle directory
        write_tokenizer(tokenizer, scratch, max_seq_length)
        tokenizer_path = scratch / bundle_format.TOKENIZER_FILE
        input_names = graph_inputs(tokenizer, model)
        shutil.copyfile(model_dir / bundle_format.LABELS_FILE, scratch / bundle_format.LABELS_FILE)
        unfused = work / "model.unfused.onnx"
        example = encode_texts(
            load_tokenizer(tokenizer_path, max_seq_length, strategy),
            _TRACE_TEXTS,
            dict.fromkeys(input_names, np.int64),
        )
        export_onnx(model, example, unfused)

        def open_graph(path: Path, providers: Sequence[str]) -> OnnxClassifier:
            return OnnxClassifier(
                path,
                tokenizer_path,
                labels,
                max_seq_length,
                providers=list(providers),
                long_text_strategy=strategy,
            )

        def open_variant(path: Path, variant: Variant) -> OnnxClassifier:
            return OnnxClassifier(
                path,
                tokenizer_path,
                labels,
                max_seq_length,
                long_text_strategy=strategy,
                engine=variant.engine,
                compute=variant.compute,
            )

        # CPU on purpose: the serving image runs ONNX Runtime on CPU, so that is what parity
        # must vouch for (CUDA kernels, TF32 among them, would measure something else).
        exported = open_graph(unfused, ["CPUExecutionProvider"])
        check_tokenization(tokenizer, exported, validation_texts, max_seq_length)
        run = ValidationRun(
            texts=validation_texts,
            label_ids=label_ids,
            pytorch=parity.pytorch_logits(model, exported.encode, validation_texts),
            open_graph=open_graph,
            calibration_texts=calibration_texts,
            open_variant=open_variant,
        )
        fp32 = choose_fp32(unfused, work, model.config, run)
        optional = (build_int8(fp32, unfused, work, run), build_fp16(fp32, work, run))
        variants = judge_variants(fp32, optional, run)
        shutil.move(fp32.path, scratch / bundle_format.MODEL_FILE)
        for graph in optional:
            if graph.path is not None:
                shutil.move(graph.path, scratch / bundle_format.MODEL_FILES[graph.precision])

        calibration = calibration_record(evaluation)
        # The reference's probabilities are the calibrated ones the predictor will serve, so
        # that drift compares like with like. Parity above compares logits, where T plays no
        # part.
        classifier = OnnxClassifier(
            scratch / bundle_format.MODEL_FILE,
            tokenizer_path,
            labels,
            max_seq_length,
            providers=["CPUExecutionProvider"],
            temperature=calibration["temperature"] if calibration else 1.0,
            long_text_strategy=strategy,
        )
        reference = reference_predictions(
            classifier, reference_sample(reference_source, max_rows=REFERENCE_MAX_ROWS, seed=seed)
        )
        reference.to_parquet(scratch / bundle_format.REFERENCE_FILE, index=False)

        bundle_format.write_metadata(
            scratch,
            {
                **_metadata_fields(
                    settings, training, evaluation, labels, input_names, fp32, optional
                ),
                **({bundle_format.CALIBRATION_KEY: calibration} if calibration else {}),
                STRATEGY_KEY: strategy,
                # Every serving variant, judged here or not, and why it may (not) serve.
                bundle_format.VARIANTS_KEY: variants,
            },
        )
        file_sizes = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}

    result = ExportResult(
        bundle_dir=Path(bundle_dir),
        opset=OPSET,
        input_names=input_names,
        parity=fp32.parity,
        reference_rows=len(reference),
        file_sizes=file_sizes,
        seconds=time.perf_counter() - started,
        fused=fp32.fused,
        int8=optional[0].record,
        fp16=optional[1].record,
    )
    logger.info(
        "wrote bundle %s: files=%d bytes=%d fused=%s int8=%s fp16=%s reference_rows=%d "
        "seconds=%.1f",
        result.bundle_dir,
        len(file_sizes),
        sum(file_sizes.values()),
        result.fused,
        optional[0].shipped,
        optional[1].shipped,
        result.reference_rows,
        result.seconds,
    )
    return result


def _openvino_version() -> str | None:
    """The OpenVINO that judged the OpenVINO variants; None where it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__)


def calibration_record(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """metadata.json's `calibration` record from evaluate's metrics; None when they hold no
    usable temperature (an evaluation from before calibration): the bundle then serves T = 1.
    """
    temperature = evaluation.get("temperature")
    # The serving side's own reading of a record, so export never writes one it would ignore.
    if (
        temperature is None
        or bundle_format.recorded_temperature(
            {bundle_format.CALIBRATION_KEY: {"temperature": temperature}}
        )
        != temperature
    ):
        logger.warning(
            "the evaluation metrics hold no calibration temperature (%r): the bundle serves "
            "uncalibrated probabilities",
            temperature,
        )
        return None
    record: dict[str, Any] = {"temperature": float(temperature), "fitted_on": "validation"}
    for name, metric in CALIBRATION_METRICS.items():
        if isinstance(evaluation.get(metric), int | float):
            record[name] = float(evaluation[metric])
    return record


def _training_settings(training: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in REQUIRED_TRAINING_KEYS if key not in training]
    missing += [key for key in ("base_model", "max_seq_length") if training.get(key) in (None, "")]
    if missing:
        raise ExportError(
            f"the model's training metadata lacks {', '.join(sorted(set(missing)))}: export "
            "needs the metadata the train step writes on its model artifact"
        )
    if not training["data_fingerprint"]:
        # Lineage is weaker without it, but that is no reason to stop a deployable model.
        logger.warning("training metadata has an empty data_fingerprint; the bundle records none")
    # KFP artifact metadata passes through protobuf Struct, which turns ints into floats.
    return {
        "base_model": str(training["base_model"]),
        "data_fingerprint": str(training["data_fingerprint"]),
        "max_seq_length": int(training["max_seq_length"]),
    }


def _read_split(path: str | Path, source: str) -> pd.DataFrame:
    frame = read_table(str(path), "parquet")
    require_columns(frame, ["text", "label"], f"{source} {path}")
    if frame.empty:
        # Parity over no rows proves nothing, and drift needs a reference to compare with.
        raise ExportError(f"the {source} {path} has no rows")
    return frame


def _metadata_fields(
    settings: dict[str, Any],
    training: dict[str, Any],
    evaluation: dict[str, Any],
    labels: LabelMap,
    input_names: tuple[str, ...],
    fp32: Fp32Graph,
    optional: Sequence[OptionalGraph],
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        **settings,
        "labels": list(labels.names),
        "label_kind": labels.kind,
        "metrics": dict(evaluation),
        # model.onnx against PyTorch; `fusion` says which graph it is and why.
        "parity": fp32.parity.to_dict(),
        "fusion": fp32.fusion_record(),
        **{graph.precision: graph.record for graph in optional},
        # Every graph checked, shipped or not; the predictor's default precision reads it.
        "batch_invariance": {
            "fp32": fp32.invariance.to_dict() if fp32.invariance else None,
            **{
                graph.precision: graph.record["batch_invariance"]
                for graph in optional
                if "batch_invariance" in graph.record
            },
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "opset": OPSET,
        "onnx_inputs": list(input_names),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "openvino_version": _openvino_version(),
        bundle_format.LINEAGE_KEY: bundle_format.training_lineage(
            training.get(bundle_format.LINEAGE_KEY), settings["data_fingerprint"]
        ),
        # The lineage is recorded once, above, in its own form.
        "training": {k: v for k, v in training.items() if k != bundle_format.LINEAGE_KEY},
    }
