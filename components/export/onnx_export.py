"""Export a trained classifier to ONNX, prove it matches PyTorch, and write the model bundle.

torch and transformers are imported inside the functions that use them, so importing this
module (as the KFP component and the pipeline compiler do) stays cheap.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from textops.components.common import bundle as bundle_format
from textops.components.common.dataio import read_table, require_columns
from textops.components.common.errors import DataError, ExportError
from textops.components.common.labels import LabelMap, canonical_label
from textops.components.common.onnx_classifier import (
    SUPPORTED_INPUTS,
    OnnxClassifier,
    encode_texts,
    load_tokenizer,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graph; 17 is served by every onnxruntime and Triton in use.
OPSET = 17
#: Largest absolute difference allowed between ONNX Runtime and PyTorch logits.
PARITY_MAX_ABS_DIFF = 1e-3
#: Texts per batch in the parity check and the reference predictions.
BATCH_SIZE = 64
#: Rows of the train split kept in reference.parquet, the baseline drift is measured against.
REFERENCE_MAX_ROWS = 10_000
#: Seed of the reference sample when the training metadata carries none.
DEFAULT_SEED = 42
#: Keys the train step must put in its artifact metadata.
REQUIRED_TRAINING_KEYS = ("base_model", "data_fingerprint", "max_seq_length")

# Two texts of different lengths, so the traced graph sees a batch and real padding.
_TRACE_TEXTS = ("a short text", "a somewhat longer text, so that the batch holds padding")


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduced PyTorch on the validation split."""

    rows: int
    max_abs_diff: float
    argmax_agreement: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """True when every prediction agrees and every logit is within tolerance."""
        return self.argmax_agreement == 1.0 and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "tolerance": self.tolerance,
        }


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

    def artifact_metadata(self) -> dict[str, Any]:
        """Flat JSON scalars for the bundle artifact's metadata in the KFP UI."""
        return {
            "opset": self.opset,
            "onnx_inputs": ",".join(self.input_names),
            "parity_rows": self.parity.rows,
            "parity_max_abs_diff": self.parity.max_abs_diff,
            "parity_argmax_agreement": self.parity.argmax_agreement,
            "parity_tolerance": self.parity.tolerance,
            "reference_rows": self.reference_rows,
            "model_onnx_bytes": self.file_sizes.get(bundle_format.MODEL_FILE, 0),
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
    has passed; a failure leaves neither the bundle nor a partial directory behind.

    Args:
        model_dir: The train step's Hugging Face directory (model, fast tokenizer, labels.json).
        validation_path: Parquet validation split; parity is checked on all of it.
        reference_source_path: Parquet train split; reference.parquet samples it.
        training: The train artifact's metadata: base_model, data_fingerprint,
            max_seq_length and the hyperparameters.
        evaluation: Test metrics, recorded as the bundle's metrics.
        bundle_dir: Where the bundle directory is created (replaced if it exists).

    Returns:
        Parity figures, sizes and timings of the bundle written.

    Raises:
        ExportError: The training metadata is incomplete, the model and its label map
            disagree, the bundle's tokenizer differs from training's, or ONNX Runtime does not
            reproduce PyTorch within `PARITY_MAX_ABS_DIFF`.
        DataError: A split cannot be read or lacks the text column.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    settings = _training_settings(training)
    max_seq_length = int(settings["max_seq_length"])
    labels = LabelMap.load(model_dir / bundle_format.LABELS_FILE)
    validation_texts = _texts_of(
        _read_split(validation_path, "validation split"), "validation split"
    )
    reference_source = _read_split(reference_source_path, "train split")
    model = _load_model(model_dir, labels, max_seq_length)
    tokenizer = load_fast_tokenizer(model_dir)

    with bundle_format.atomic_directory(Path(bundle_dir)) as scratch:
        write_tokenizer(tokenizer, scratch, max_seq_length)
        input_names = graph_inputs(tokenizer, model)
        shutil.copyfile(model_dir / bundle_format.LABELS_FILE, scratch / bundle_format.LABELS_FILE)
        model_path = scratch / bundle_format.MODEL_FILE
        example = encode_texts(
            load_tokenizer(scratch / bundle_format.TOKENIZER_FILE, max_seq_length),
            _TRACE_TEXTS,
            dict.fromkeys(input_names, np.int64),
        )
        export_onnx(model, example, model_path)

        # CPU on purpose: the serving image runs ONNX Runtime on CPU, so that is what parity
        # must vouch for (CUDA kernels, TF32 among them, would measure something else).
        classifier = OnnxClassifier(
            model_path,
            scratch / bundle_format.TOKENIZER_FILE,
            labels,
            max_seq_length,
            providers=["CPUExecutionProvider"],
        )
        check_tokenization(tokenizer, classifier, validation_texts, max_seq_length)
        parity = check_parity(model, classifier, validation_texts)

        seed = int(training.get("seed", DEFAULT_SEED))
        reference = reference_predictions(
            classifier, reference_sample(reference_source, max_rows=REFERENCE_MAX_ROWS, seed=seed)
        )
        reference.to_parquet(scratch / bundle_format.REFERENCE_FILE, index=False)

        bundle_format.write_metadata(
            scratch,
            _metadata_fields(settings, training, evaluation, labels, parity, input_names),
        )
        file_sizes = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}

    result = ExportResult(
        bundle_dir=Path(bundle_dir),
        opset=OPSET,
        input_names=input_names,
        parity=parity,
        reference_rows=len(reference),
        file_sizes=file_sizes,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "wrote bundle %s: files=%d bytes=%d reference_rows=%d seconds=%.1f",
        result.bundle_dir,
        len(file_sizes),
        sum(file_sizes.values()),
        result.reference_rows,
        result.seconds,
    )
    return result


def load_fast_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer training used, which must be a fast one (backed by `tokenizers`).

    Raises:
        ExportError: The model directory holds no fast tokenizer.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ExportError(
            f"{model_dir} holds no fast tokenizer (tokenizer.json): serving tokenizes with the "
            "`tokenizers` library, so save the model with a fast tokenizer"
        )
    return tokenizer


def write_tokenizer(
    tokenizer: PreTrainedTokenizerBase, bundle_dir: Path, max_seq_length: int
) -> None:
    """Write the bundle's tokenizer.json: truncating at `max_seq_length`, padding to the longest.

    It is the training tokenizer's own backend, so serving splits text exactly as training did.
    """
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length=max_seq_length)
    backend.enable_padding(
        pad_id=tokenizer.pad_token_id or 0,
        pad_token=tokenizer.pad_token or "[PAD]",
        pad_type_id=getattr(tokenizer, "pad_token_type_id", 0) or 0,
        direction=tokenizer.padding_side,
    )
    backend.save(str(bundle_dir / bundle_format.TOKENIZER_FILE))


def graph_inputs(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> tuple[str, ...]:
    """The inputs the tokenizer produces and the model accepts, in `SUPPORTED_INPUTS` order."""
    import inspect

    produced = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"}
    accepted = set(inspect.signature(model.forward).parameters)
    return tuple(name for name in SUPPORTED_INPUTS if name in produced and name in accepted)


def check_tokenization(
    tokenizer: PreTrainedTokenizerBase,
    classifier: OnnxClassifier,
    texts: Sequence[str],
    max_seq_length: int,
) -> None:
    """Check the bundle's tokenizer gives the token ids training gave, text by text.

    Parity compares the models on shared inputs; this covers the step before it, where a
    serving tokenizer that lowercases, truncates or adds special tokens differently would
    shift every prediction without changing a single weight.

    Raises:
        ExportError: Some text is tokenized differently.
    """
    expected = tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]
    served = classifier.tokenizer.encode_batch(list(texts))
    differing = [
        i
        for i, (ids, encoding) in enumerate(zip(expected, served, strict=True))
        if list(ids) != encoding.ids[: sum(encoding.attention_mask)]
    ]
    if differing:
        raise ExportError(
            f"the bundle's tokenizer.json tokenizes {len(differing)} of {len(texts)} validation "
            f"texts differently from the training tokenizer (first: {texts[differing[0]]!r}); "
            "check the tokenizer files saved with the model"
        )
    logger.info("tokenization ok: rows=%d", len(texts))


def export_onnx(model: PreTrainedModel, example: dict[str, np.ndarray], onnx_path: Path) -> None:
    """Trace `model` to a single-file ONNX graph with dynamic batch and sequence axes.

    Args:
        model: The classifier, in eval mode.
        example: Tokenized inputs to trace with, named as the graph's inputs will be; a batch
            of texts of different lengths, so the trace sees padding.
        onnx_path: The .onnx file to write.

    Raises:
        ExportError: The graph does not fit in one file or fails the ONNX checker.
    """
    import onnx
    import torch

    input_names = list(example)
    wrapper = _logits_only(model, input_names).eval()
    started = time.perf_counter()
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(torch.from_numpy(a).long() for a in example.values()),
            str(onnx_path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in input_names},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # The exporter toggles training mode and restores it on exit; parity must run in eval
    # mode (dropout off), so do not depend on the mode it restored.
    model.eval()

    strays = sorted(p.name for p in onnx_path.parent.iterdir() if p.suffix in {".data", ".bin"})
    proto = onnx.load(str(onnx_path), load_external_data=False)
    if strays or any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ExportError(
            f"the ONNX graph was written with external data ({', '.join(strays) or 'tensors'}): "
            "the bundle needs one model.onnx, which caps the model at 2 GB"
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from e
    logger.info(
        "exported %s: opset=%d inputs=%s bytes=%d seconds=%.1f",
        onnx_path.name,
        OPSET,
        ",".join(input_names),
        onnx_path.stat().st_size,
        time.perf_counter() - started,
    )


def check_parity(
    model: PreTrainedModel, classifier: OnnxClassifier, texts: Sequence[str]
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch logits on the same tokenized inputs.

    Raises:
        ExportError: A prediction differs, or a logit differs by more than
            `PARITY_MAX_ABS_DIFF`.
    """
    import torch

    max_abs_diff = 0.0
    agreeing = 0
    with torch.no_grad():
        for start in tqdm(
            range(0, len(texts), BATCH_SIZE), desc="parity", unit="batch", disable=None
        ):
            features = classifier.encode(texts[start : start + BATCH_SIZE])
            onnx_logits = classifier.run(features)
            torch_logits = (
                model(**{name: torch.from_numpy(a).long() for name, a in features.items()})
                .logits.float()
                .numpy()
            )
            max_abs_diff = max(max_abs_diff, float(np.abs(onnx_logits - torch_logits).max()))
            agreeing += int((onnx_logits.argmax(-1) == torch_logits.argmax(-1)).sum())

    report = ParityReport(
        rows=len(texts),
        max_abs_diff=max_abs_diff,
        argmax_agreement=agreeing / len(texts),
        tolerance=PARITY_MAX_ABS_DIFF,
    )
    if not report.passed:
        raise ExportError(
            f"ONNX Runtime does not reproduce PyTorch on the validation split ({report.rows} "
            f"rows): argmax agreement {report.argmax_agreement:.4%} (needs 100%), max abs "
            f"logit difference {report.max_abs_diff:.3g} (allowed {report.tolerance:.3g}); "
            "check the opset and the model's ops, or export with a newer torch"
        )
    logger.info(
        "parity ok: rows=%d max_abs_diff=%.3g argmax_agreement=%.4f",
        report.rows,
        report.max_abs_diff,
        report.argmax_agreement,
    )
    return report


def reference_sample(frame: pd.DataFrame, *, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, drawn with `seed`, in their original order."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def reference_predictions(classifier: OnnxClassifier, sample: pd.DataFrame) -> pd.DataFrame:
    """The reference table: text, label, prediction, confidence and one prob_<label> per class.

    Raises:
        DataError: The sample lacks the text or label column, or a text is missing.
    """
    require_columns(sample, ["text", "label"], "reference sample")
    texts = _texts_of(sample, "reference sample")
    probs = classifier.predict_proba(texts, batch_size=BATCH_SIZE)
    names = classifier.labels.names
    table = pd.DataFrame(
        {
            "text": texts,
            "label": [canonical_label(v) for v in sample["label"]],
            "prediction": [names[i] for i in probs.argmax(axis=1)],
            "confidence": probs.max(axis=1),
        }
    )
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probs[:, i]
    return table


def _logits_only(model: PreTrainedModel, input_names: Sequence[str]) -> torch.nn.Module:
    """Wrap `model` to take positional inputs in graph order and return only the logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(**dict(zip(input_names, inputs, strict=True))).logits
            return logits

    return LogitsOnly()


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence warnings the TorchScript exporter raises on every transformer export.

    Each is harmless here, and the parity check would catch a wrong graph: the deprecation
    of the TorchScript exporter (dynamo=False is chosen on purpose), tracer warnings on shape
    checks that are constant without a KV cache, and the generic aten::index note.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r".*The feature will be removed")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        yield


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


def _load_model(model_dir: Path, labels: LabelMap, max_seq_length: int) -> PreTrainedModel:
    from transformers import AutoModelForSequenceClassification

    # Eager attention traces to plain MatMul/Softmax ops; the SDPA path branches on the mask.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager"
    ).eval()
    config_labels = tuple(str(model.config.id2label[i]) for i in range(model.config.num_labels))
    if config_labels != labels.names:
        raise ExportError(
            f"{model_dir}: config.json id2label {list(config_labels)} does not match "
            f"labels.json {list(labels.names)}; re-run training so both come from one label map"
        )
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_seq_length > limit:
        raise ExportError(
            f"max_seq_length {max_seq_length} exceeds the model's {limit} positions; "
            f"train with max_seq_length <= {limit}"
        )
    return model


def _read_split(path: str | Path, source: str) -> pd.DataFrame:
    frame = read_table(str(path), "parquet")
    require_columns(frame, ["text", "label"], f"{source} {path}")
    if frame.empty:
        # Parity over no rows proves nothing, and drift needs a reference to compare with.
        raise ExportError(f"the {source} {path} has no rows")
    return frame


def _texts_of(frame: pd.DataFrame, source: str) -> list[str]:
    if frame["text"].isna().any():
        raise DataError(f"the {source} has {int(frame['text'].isna().sum())} missing texts")
    return [str(t) for t in frame["text"]]


def _metadata_fields(
    settings: dict[str, Any],
    training: dict[str, Any],
    evaluation: dict[str, Any],
    labels: LabelMap,
    parity: ParityReport,
    input_names: tuple[str, ...],
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
        "parity": parity.to_dict(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": OPSET,
        "onnx_inputs": list(input_names),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "training": dict(training),
    }
