"""The model bundle: the one directory that is exported, published, served and rolled back.

model.onnx          the classifier, dynamic batch and sequence axes
model.int8.onnx     optional, INT8 (static, calibrated, batch invariant) for CPU serving
model.fp16.onnx     optional, float16 for GPU serving (float32 inputs and outputs)
tokenizer.json      a `tokenizers` fast tokenizer
labels.json         the label map (see `labels.LabelMap`)
metadata.json       base model, data fingerprint, metrics, parity, created-at, version, hashes;
                    `int8` and `fp16` say why an optional model is there or not,
                    `batch_invariance` how each graph answered texts in mixed batches,
                    `lineage` the data that trained it and the versions it replaced,
                    `calibration` the temperature every runtime divides the logits by,
                    `long_text_strategy` how every runtime cuts a text longer than the
                    window (see `long_text`; "head" where it is missing),
                    `variants` each serving variant's verdict (see `engines`)
reference.parquet   the sample drift is measured against, with predictions
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

from textops.components.common.batch_invariance import recorded_as_invariant
from textops.components.common.errors import ModelNotFoundError
from textops.components.common.labels import LabelMap

MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model.int8.onnx"
FP16_MODEL_FILE = "model.fp16.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.parquet"
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE, METADATA_FILE, REFERENCE_FILE)
OPTIONAL_FILES = (INT8_MODEL_FILE, FP16_MODEL_FILE)

#: The numeric precision of a bundle's model files: fp32 always, int8 and fp16 optional.
Precision = Literal["fp32", "int8", "fp16"]
MODEL_FILES: dict[str, str] = {"fp32": MODEL_FILE, "int8": INT8_MODEL_FILE, "fp16": FP16_MODEL_FILE}

#: metadata.json's record of where a bundle comes from:
#: {"base": {"data", "fingerprint"}, "feedback": [{"uri", "fingerprint", "window",
#: "rows_used", "rows_held_out"}], "data_fingerprint": the split data it trained on,
#: "replaced": [versions it replaced, added where it is published]}.
LINEAGE_KEY = "lineage"
#: metadata.json's calibration record: {"temperature": T, "fitted_on": "validation",
#: "validation_rows", "ece_before", "ece_after", "nll_before", "nll_after"} (ECE and NLL on
#: the test split). Every runtime computes probabilities as softmax(logits / T).
CALIBRATION_KEY = "calibration"
#: metadata.json's record of every serving variant (see `engines`): name to {"engine",
#: "file", "compute", "checked", "passed" (true, false, or null where unchecked), the evidence
#: ("parity" or "quality", "agreement_with_pytorch", "batch_invariance") and "reason"}.
VARIANTS_KEY = "variants"
# Counts that KFP artifact metadata (a protobuf Struct) hands back as floats.
_FEEDBACK_COUNTS = ("rows_used", "rows_held_out")


def textops_version() -> str:
    """The installed textops version, recorded in every bundle."""
    try:
        return importlib_metadata.version("textops")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelBundle:
    """A bundle directory on disk. Construct with `ModelBundle.open` to check it is complete."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, required: Sequence[str] = REQUIRED_FILES) -> ModelBundle:
        """Open a bundle; ModelNotFoundError if the directory or a `required` file is missing.

        `required` is every file a complete bundle has, unless a reader needs fewer (the
        drift job reads no model, so it can work on a copy of the files it reads).
        """
        bundle = cls(Path(path))
        if not bundle.path.is_dir():
            raise ModelNotFoundError(f"model bundle not found: {path} is not a directory")
        missing = [name for name in required if not (bundle.path / name).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"model bundle {path} is incomplete: missing {', '.join(missing)}"
            )
        return bundle

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def int8_model_path(self) -> Path | None:
        return self.precision_model_path("int8")

    @property
    def fp16_model_path(self) -> Path | None:
        return self.precision_model_path("fp16")

    @property
    def serving_precision(self) -> Precision:
        """The model file the predictor runs when no precision is asked for: INT8 when the
        bundle ships it (export keeps it only within its quality allowance) and export recorded
        it batch invariant, else fp32. A bundle exported before that check holds dynamic INT8,
        whose answers depend on the batch; it is served only when asked for by name."""
        if self.int8_model_path is None:
            return "fp32"
        try:
            metadata = self.metadata
        except (OSError, ValueError):  # opening the bundle reports what is wrong with it
            return "fp32"
        return "int8" if recorded_as_invariant(metadata, "int8") else "fp32"

    def precision_model_path(self, precision: Precision) -> Path | None:
        """The model file of `precision`, or None when the bundle has none (see metadata)."""
        if precision not in MODEL_FILES:
            raise ValueError(f"precision must be one of {sorted(MODEL_FILES)}, got {precision!r}")
        candidate = self.path / MODEL_FILES[precision]
        return candidate if candidate.is_file() else None

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def reference_path(self) -> Path:
        return self.path / REFERENCE_FILE

    @property
    def labels(self) -> LabelMap:
        return LabelMap.load(self.path / LABELS_FILE)

    @property
    def temperature(self) -> float:
        """The calibration temperature; 1 for a bundle exported before calibration."""
        return recorded_temperature(self.metadata)

    @property
    def metadata(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.path / METADATA_FILE).read_text(encoding="utf-8"))
        return loaded

    def verify_hashes(self) -> list[str]:
        """Names of files whose SHA-256 differs from the one recorded in metadata.json."""
        recorded: dict[str, str] = self.metadata.get("files", {})
        return [name for name, digest in recorded.items() if sha256_of(self.path / name) != digest]


def training_lineage(recorded: Any, data_fingerprint: str) -> dict[str, Any]:
    """The lineage a new bundle records, from what the validate step passed down the steps.

    Args:
        recorded: The `lineage` the data artifacts carried (validate's base data and feedback
            snapshots); None or empty when the run recorded none.
        data_fingerprint: The fingerprint of the data the model was split from and trained on
            (preprocess's); it stands for the base data when no lineage was recorded.

    Returns:
        `{"base": {"data", "fingerprint"}, "feedback": [...], "data_fingerprint": ...}`.
    """
    recorded = recorded if isinstance(recorded, Mapping) else {}
    base = recorded.get("base")
    base = dict(base) if isinstance(base, Mapping) else {}
    base.setdefault("data", None)
    # Without the base data's own fingerprint, the trained-on data is the best there is.
    if not base.get("fingerprint"):
        base["fingerprint"] = data_fingerprint or None
    feedback = recorded.get("feedback")
    snapshots = [dict(s) for s in feedback if isinstance(s, Mapping)] if feedback else []
    for snapshot in snapshots:
        for name in _FEEDBACK_COUNTS:
            if isinstance(snapshot.get(name), float):
                snapshot[name] = int(snapshot[name])
    return {"base": base, "feedback": snapshots, "data_fingerprint": data_fingerprint or None}


def recorded_lineage(metadata: Any) -> dict[str, Any] | None:
    """The `lineage` a bundle's metadata.json records; None for a bundle exported without one."""
    lineage = metadata.get(LINEAGE_KEY) if isinstance(metadata, Mapping) else None
    return dict(lineage) if isinstance(lineage, Mapping) else None


def recorded_temperature(metadata: Any) -> float:
    """The calibration temperature a bundle's metadata.json records; 1 (the logits as they
    are) for a bundle exported before calibration, or with a record that is not a positive
    finite number."""
    record = metadata.get(CALIBRATION_KEY) if isinstance(metadata, Mapping) else None
    value = record.get("temperature") if isinstance(record, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    # A NaN fails the comparison too.
    return float(value) if 0 < value < float("inf") else 1.0


def record_replaced(bundle_dir: Path, replaced: Sequence[int]) -> None:
    """Add `lineage.replaced` to a bundle's metadata.json, by an atomic rename.

    metadata.json does not hash itself, so the bundle still verifies afterwards.
    """
    path = Path(bundle_dir) / METADATA_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    lineage = recorded_lineage(document) or {}
    lineage["replaced"] = list(replaced)
    document[LINEAGE_KEY] = lineage
    write_text_atomically(path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """Replace the file at `path` with `text` by one rename: a reader sees the old file or the
    new one, never a part."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            # On disk before the rename, so a crash cannot leave an empty file behind.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_metadata(bundle_dir: Path, fields: dict[str, Any]) -> None:
    """Write metadata.json last, with the SHA-256 and size of every other file in the bundle."""
    paths = [p for p in sorted(bundle_dir.iterdir()) if p.is_file() and p.name != METADATA_FILE]
    document = {
        **fields,
        "textops_version": textops_version(),
        "files": {p.name: sha256_of(p) for p in paths},
        "file_bytes": {p.name: p.stat().st_size for p in paths},
    }
    (bundle_dir / METADATA_FILE).write_text(
        json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes `final` only if the block succeeds.

    The scratch directory sits beside `final`, so the closing rename is atomic on one
    filesystem: readers see either no directory or a complete one. On any error the scratch
    directory is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            # kfp hands each task a fresh output path; an existing one is from a retried task.
            shutil.rmtree(final)
        os.replace(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
