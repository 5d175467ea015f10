"""The export step on the tiny model: ONNX graph, parity, the bundle, and failing cleanly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from textops.components.common.bundle import OPTIONAL_FILES, REQUIRED_FILES, ModelBundle
from textops.components.common.errors import ExportError
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.export import parity
from textops.components.export.onnx_export import ExportResult
from textops.components.export.parity import check_tokenization
from textops.components.export.reference import reference_sample
from textops.components.export.trace import load_fast_tokenizer

#: What the `export_tiny` fixture records as test metrics.
EVALUATION = {"accuracy": 0.5, "macro_f1": 0.4}

ExportTiny = Callable[[Path, dict[str, Any], Path], ExportResult]


def test_bundle_is_complete_and_its_hashes_verify(tiny_bundle_dir: Path) -> None:
    bundle = ModelBundle.open(tiny_bundle_dir)
    names = {p.name for p in tiny_bundle_dir.iterdir()}
    assert set(REQUIRED_FILES) <= names <= set(REQUIRED_FILES) | set(OPTIONAL_FILES)
    assert bundle.verify_hashes() == []
    assert set(bundle.metadata["files"]) == names - {"metadata.json"}
    assert bundle.metadata["file_bytes"] == {
        name: (tiny_bundle_dir / name).stat().st_size for name in names - {"metadata.json"}
    }
    # atomic_directory left no scratch directory beside the bundle
    assert [p.name for p in tiny_bundle_dir.parent.iterdir()] == [tiny_bundle_dir.name]


def test_metadata_records_provenance_metrics_and_parity(
    tiny_bundle_dir: Path, tiny_splits: dict[str, Path], tiny_training_metadata: dict[str, Any]
) -> None:
    metadata = ModelBundle.open(tiny_bundle_dir).metadata
    assert metadata["base_model"] == tiny_training_metadata["base_model"]
    assert metadata["data_fingerprint"] == tiny_training_metadata["data_fingerprint"]
    assert metadata["max_seq_length"] == 32 and isinstance(metadata["max_seq_length"], int)
    assert metadata["labels"] == ["negative", "positive"]
    assert metadata["metrics"] == EVALUATION
    assert metadata["training"]["learning_rate"] == tiny_training_metadata["learning_rate"]
    assert metadata["opset"] == 17
    assert metadata["torch_version"] and metadata["onnxruntime_version"]
    created = datetime.fromisoformat(metadata["created_at"])
    assert created.utcoffset() == timedelta(0)
    # Written by this export: after its input splits were (to the second, as it is recorded),
    # and not in the future.
    written = datetime.fromtimestamp(tiny_splits["validation"].stat().st_mtime, UTC)
    inputs_written = written.replace(microsecond=0)
    assert inputs_written <= created <= datetime.now(UTC)

    report = metadata["parity"]
    assert report["rows"] == len(pd.read_parquet(tiny_splits["validation"]))
    assert report["argmax_agreement"] == 1.0 and report["passed"] is True
    assert 0.0 <= report["max_abs_diff"] <= parity.PARITY_MAX_ABS_DIFF


def test_a_bundle_without_recorded_lineage_names_the_data_it_trained_on(
    tiny_bundle_dir: Path, tiny_training_metadata: dict[str, Any]
) -> None:
    fingerprint = tiny_training_metadata["data_fingerprint"]
    assert ModelBundle.open(tiny_bundle_dir).metadata["lineage"] == {
        "base": {"data": None, "fingerprint": fingerprint},
        "feedback": [],
        "data_fingerprint": fingerprint,
    }


def test_the_lineage_the_data_carried_down_is_the_bundles(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    export_tiny: ExportTiny,
    tmp_path: Path,
) -> None:
    snapshot = {
        "uri": "s3://feedback/textops-classifier/f00d",
        "fingerprint": "f00d",
        "window": {"since": "2026-11-07T00:00:00+00:00", "until": "2026-12-07T00:00:00+00:00"},
        # As KFP artifact metadata hands them back: a protobuf Struct's numbers are floats.
        "rows_used": 120.0,
        "rows_held_out": 30.0,
    }
    lineage = {"base": {"data": "data/reviews.csv", "fingerprint": "ba5e"}, "feedback": [snapshot]}

    export_tiny(tiny_model_dir, {**tiny_training_metadata, "lineage": lineage}, tmp_path / "bundle")

    metadata = ModelBundle.open(tmp_path / "bundle").metadata
    assert metadata["lineage"] == {
        "base": {"data": "data/reviews.csv", "fingerprint": "ba5e"},
        "feedback": [{**snapshot, "rows_used": 120, "rows_held_out": 30}],
        "data_fingerprint": tiny_training_metadata["data_fingerprint"],
    }
    assert "lineage" not in metadata["training"]


def test_artifact_metadata_is_flat_json_scalars(tiny_export: ExportResult) -> None:
    metadata = tiny_export.artifact_metadata()
    assert all(isinstance(v, str | int | float | bool) for v in metadata.values())
    json.dumps(metadata)
    assert metadata["parity_argmax_agreement"] == 1.0
    assert metadata["model_onnx_bytes"] == (tiny_export.bundle_dir / "model.onnx").stat().st_size
    assert metadata["opset"] == 17


def test_onnx_graph_is_one_file_with_dynamic_batch_and_sequence(tiny_bundle_dir: Path) -> None:
    model = onnx.load(str(tiny_bundle_dir / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for graph_input in inputs.values():
        dims = graph_input.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    assert [o.name for o in model.graph.output] == ["logits"]


def test_bundle_tokenizer_truncates_to_the_training_window(tiny_bundle_dir: Path) -> None:
    document = json.loads((tiny_bundle_dir / "tokenizer.json").read_text())
    assert document["truncation"]["max_length"] == 32
    assert "Fixed" not in json.dumps(document["padding"]["strategy"])  # pads to the longest


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("length", ["short", "long"])
def test_onnx_matches_pytorch_for_any_batch_and_sequence_length(
    tiny_bundle_dir: Path, tiny_model_dir: Path, batch: int, length: str
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    words = ["good", "bad", "slow", "tasty", "broken", "fine", "loud"]
    if length == "short":
        texts = [" ".join(words[: i + 1]) for i in range(batch)]
    else:  # longer than the 32-token window: truncated
        texts = [" ".join(words[i:] * 30) for i in range(batch)]
    classifier = OnnxClassifier.from_bundle(tiny_bundle_dir)
    features = classifier.encode(texts)
    assert features["input_ids"].shape[0] == batch
    if length == "long":
        assert features["input_ids"].shape[1] == 32

    onnx_logits = classifier.run(features)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in features.items()}).logits
    np.testing.assert_allclose(onnx_logits, torch_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(classifier.predict_proba(texts).sum(axis=1), 1.0, atol=1e-6)


def test_reference_holds_onnx_predictions_of_the_train_split(
    tiny_bundle_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    reference = pd.read_parquet(tiny_bundle_dir / "reference.parquet")
    train = pd.read_parquet(tiny_splits["train"])
    assert list(reference.columns) == [
        "text",
        "label",
        "prediction",
        "confidence",
        "prob_negative",
        "prob_positive",
    ]
    assert len(reference) == len(train)  # fewer rows than the cap: all of them
    assert sorted(reference["text"]) == sorted(train["text"])
    probs = reference[["prob_negative", "prob_positive"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(reference["confidence"], probs.max(axis=1))
    classifier = OnnxClassifier.from_bundle(tiny_bundle_dir)
    assert reference["prediction"].tolist() == classifier.predict(reference["text"].tolist())
    assert reference["prediction"].nunique() == 2  # the tiny model is random, not constant


def test_reference_sample_is_capped_seeded_and_ordered() -> None:
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 100})
    first = reference_sample(frame, max_rows=10, seed=3)
    assert len(first) == 10
    assert first.equals(reference_sample(frame, max_rows=10, seed=3))
    assert not first.equals(reference_sample(frame, max_rows=10, seed=4))
    positions = [int(t[1:]) for t in first["text"]]
    assert positions == sorted(positions)
    assert len(reference_sample(frame, max_rows=1000, seed=3)) == 100


def test_failed_parity_raises_and_leaves_no_bundle(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_tiny: ExportTiny,
) -> None:
    monkeypatch.setattr(parity, "PARITY_MAX_ABS_DIFF", -1.0)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match=r"argmax agreement .* max abs logit difference"):
        export_tiny(tiny_model_dir, tiny_training_metadata, out / "bundle")
    assert list(out.iterdir()) == []  # neither the bundle nor a .partial scratch directory


def test_failed_export_keeps_the_previous_bundle_at_the_path(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tiny_bundle_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_tiny: ExportTiny,
) -> None:
    previous = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    monkeypatch.setattr(parity, "PARITY_MAX_ABS_DIFF", -1.0)
    with pytest.raises(ExportError):
        export_tiny(tiny_model_dir, tiny_training_metadata, previous)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_incomplete_training_metadata_is_refused(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tmp_path: Path,
    export_tiny: ExportTiny,
) -> None:
    with pytest.raises(ExportError, match="data_fingerprint, max_seq_length"):
        export_tiny(tiny_model_dir, {"base_model": "m"}, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_label_map_that_disagrees_with_the_model_is_refused(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    export_tiny: ExportTiny,
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "labels.json").write_text(json.dumps({"labels": ["positive", "negative"]}))
    with pytest.raises(ExportError, match=r"does not match labels\.json"):
        export_tiny(model_dir, tiny_training_metadata, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_a_serving_tokenizer_that_differs_from_training_is_caught(
    tiny_model_dir: Path, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    texts = ["Great FOOD, friendly staff.", "AWFUL service"]
    training_tokenizer = load_fast_tokenizer(tiny_model_dir)
    check_tokenization(training_tokenizer, OnnxClassifier.from_bundle(tiny_bundle_dir), texts, 32)

    # The same bundle, but its tokenizer no longer lowercases: every capital changes ids.
    altered = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
    document = json.loads((altered / "tokenizer.json").read_text())
    document["normalizer"]["lowercase"] = False
    (altered / "tokenizer.json").write_text(json.dumps(document))
    classifier = OnnxClassifier(
        altered / "model.onnx", altered / "tokenizer.json", ModelBundle(altered).labels, 32
    )
    with pytest.raises(ExportError, match="2 of 2 validation texts differently"):
        check_tokenization(training_tokenizer, classifier, texts, 32)
