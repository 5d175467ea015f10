"""The bundle's graphs on the tiny model: fusion, INT8 shipped or refused, fp16, precision choice.

Real ONNX Runtime throughout: the fusions, the quantizer and the fp16 converter run on the
tiny BERT, and every judgement is made on its validation split.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from textops.components.common.bundle import (
    FP16_MODEL_FILE,
    INT8_MODEL_FILE,
    MODEL_FILE,
    ModelBundle,
)
from textops.components.common.errors import ModelNotFoundError
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.export import parity, variants
from textops.components.export.onnx_export import ExportResult
from textops.components.export.optimize import fuse_transformer, fused_op_counts

ExportTiny = Callable[[Path, dict[str, Any], Path], ExportResult]

CPU = ["CPUExecutionProvider"]


def _op_types(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _validation_texts(splits: dict[str, Path]) -> list[str]:
    return [str(t) for t in pd.read_parquet(splits["validation"])["text"]]


def test_model_onnx_is_the_fused_graph_and_metadata_says_so(
    tiny_bundle_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    ops = _op_types(tiny_bundle_dir / MODEL_FILE)
    # 2 layers: one Attention each, two SkipLayerNormalization each, embeddings fused once.
    assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] == 4
    assert ops["EmbedLayerNormalization"] == 1
    assert ops["Softmax"] == 0  # attention no longer runs as separate MatMul/Softmax nodes

    fusion = ModelBundle.open(tiny_bundle_dir).metadata["fusion"]
    assert fusion["applied"] is True and fusion["shipped"] is True
    assert fusion["model_type"] == "bert"
    assert fusion["fused_ops"] == {op: n for op, n in ops.items() if op in fusion["fused_ops"]}
    assert fusion["parity"]["passed"] is True
    assert fusion["parity"]["rows"] == len(pd.read_parquet(tiny_splits["validation"]))


def test_fused_graph_reproduces_pytorch_within_the_tolerance(
    tiny_bundle_dir: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    texts = _validation_texts(tiny_splits)
    classifier = OnnxClassifier.from_bundle(tiny_bundle_dir, providers=CPU)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    features = classifier.encode(texts)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in features.items()}).logits.numpy()
    logits = classifier.run(features)
    assert np.abs(logits - expected).max() <= parity.PARITY_MAX_ABS_DIFF
    assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_an_architecture_outside_the_bert_family_is_left_unfused(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    outcome = fuse_transformer(
        tiny_bundle_dir / MODEL_FILE,
        tmp_path / "fused.onnx",
        model_type="gpt2",
        num_heads=2,
        hidden_size=32,
    )
    assert outcome.applied is False
    assert "'gpt2' is not one ONNX Runtime's BERT fusions match" in outcome.reason
    assert not (tmp_path / "fused.onnx").exists()


def test_a_fused_graph_that_fails_parity_ships_unfused(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_tiny: ExportTiny,
) -> None:
    real_fuse = variants.fuse_transformer

    def fuse_then_damage(source: Path, target: Path, **kwargs: Any) -> Any:
        # A fusion bug, staged: the fused graph's classifier weights are off by 10%.
        outcome = real_fuse(source, target, **kwargs)
        model = onnx.load(str(target))
        for tensor in model.graph.initializer:
            if "classifier" in tensor.name:
                array = onnx.numpy_helper.to_array(tensor) * 1.1
                tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
        onnx.save(model, str(target))
        return outcome

    monkeypatch.setattr(variants, "fuse_transformer", fuse_then_damage)
    result = export_tiny(tiny_model_dir, tiny_training_metadata, tmp_path / "bundle")

    assert result.fused is False and result.parity.passed
    assert _op_types(result.bundle_dir / MODEL_FILE)["Attention"] == 0
    metadata = ModelBundle.open(result.bundle_dir).metadata
    fusion = metadata["fusion"]
    assert fusion["applied"] is True and fusion["shipped"] is False
    assert fusion["parity"]["passed"] is False
    assert "the fused graph failed parity" in fusion["reason"]
    assert "unfused graph, which passed" in fusion["reason"]
    assert metadata["parity"]["passed"] is True
    assert metadata["int8"]["source_graph"] == "unfused"
    assert metadata["fp16"]["source_graph"] == "unfused"


def test_int8_that_loses_too_much_is_not_shipped_and_metadata_says_why(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_tiny: ExportTiny,
) -> None:
    # No loss is small enough for a negative allowance, so INT8 is refused whatever it scores.
    monkeypatch.setattr(parity, "INT8_MAX_LOSS_POINTS", -1.0)
    result = export_tiny(tiny_model_dir, tiny_training_metadata, tmp_path / "bundle")

    assert not (result.bundle_dir / INT8_MODEL_FILE).exists()
    bundle = ModelBundle.open(result.bundle_dir)
    assert bundle.int8_model_path is None and INT8_MODEL_FILE not in bundle.metadata["files"]
    record = bundle.metadata["int8"]
    assert record["shipped"] is False and record["file"] is None
    assert record["reason"].startswith("INT8 loses too much against fp32: accuracy ")
    quality = record["quality"]
    assert quality["rows"] == len(pd.read_parquet(tiny_splits["validation"]))
    assert quality["max_loss_points"] == -1.0 and quality["passed"] is False
    assert quality["accuracy_loss_points"] == pytest.approx(
        100 * (quality["fp32_accuracy"] - quality["accuracy"])
    )
    assert result.artifact_metadata()["int8_shipped"] is False
    with pytest.raises(ModelNotFoundError, match=r"no INT8 model \(INT8 loses too much"):
        OnnxClassifier.from_bundle(result.bundle_dir, precision="int8")


def test_int8_within_the_allowance_ships_as_a_statically_quantized_graph(
    int8_bundle_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    bundle = ModelBundle.open(int8_bundle_dir)
    assert bundle.int8_model_path == int8_bundle_dir / INT8_MODEL_FILE
    assert bundle.verify_hashes() == []
    ops = _op_types(int8_bundle_dir / INT8_MODEL_FILE)
    # Static QDQ: fixed scales in QuantizeLinear, nothing computed from the batch at run time.
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert ops["DynamicQuantizeLinear"] == 0 and ops["MatMulInteger"] == 0

    record = bundle.metadata["int8"]
    assert record["shipped"] is True and record["file"] == INT8_MODEL_FILE
    assert record["source_graph"] == variants.INT8_SOURCE
    assert (record["method"], record["format"]) == ("static", "QDQ")
    assert record["per_channel"] is variants.INT8_PER_CHANNEL
    assert (record["weight_type"], record["activation_type"]) == ("QInt8", "QUInt8")
    calibration = record["calibration"]
    train_rows = len(pd.read_parquet(tiny_splits["train"]))
    assert calibration["texts"] == min(train_rows, variants.CALIBRATION_MAX_TEXTS)
    assert 0 < calibration["batches"] <= calibration["texts"]
    assert record["quality"]["passed"] is True and record["reason"].startswith("within")
    assert record["batch_invariance"]["passed"] is True
    assert "batch invariant" in record["reason"]
    assert bundle.metadata["batch_invariance"]["int8"] == record["batch_invariance"]
    assert record["bytes"] == bundle.metadata["file_bytes"][INT8_MODEL_FILE]
    assert record["bytes"] < 0.5 * bundle.metadata["file_bytes"][MODEL_FILE]


def test_only_matmuls_read_the_rounded_activations(int8_bundle_dir: Path) -> None:
    # The residual connections and LayerNorms read the float tensor, not its INT8 copy.
    graph = onnx.load(str(int8_bundle_dir / INT8_MODEL_FILE)).graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: Counter[str] = Counter()
    for node in graph.node:
        for name in node.input:
            source = producers.get(name)
            if source is not None and source.op_type == "DequantizeLinear":
                quantize = producers.get(source.input[0])
                if quantize is not None and quantize.op_type == "QuantizeLinear":
                    readers[node.op_type] += 1
    assert readers and set(readers) == {"MatMul"}


def test_embedding_rows_are_looked_up_in_int8_and_only_they_dequantized(
    int8_bundle_dir: Path,
) -> None:
    graph = onnx.load(str(int8_bundle_dir / INT8_MODEL_FILE)).graph
    producers = {out: node for node in graph.node for out in node.output}
    tables = {tensor.name: tensor for tensor in graph.initializer}
    lookups = [node for node in graph.node if node.op_type == "Gather" and node.input[0] in tables]
    embeddings = [
        node for node in lookups if tables[node.input[0]].data_type == onnx.TensorProto.UINT8
    ]
    assert len(embeddings) == 3  # word, position and token type
    for gather in graph.node:
        if gather.op_type == "Gather" and gather.input[0] in producers:
            assert producers[gather.input[0]].op_type != "DequantizeLinear", gather.name
    dequantized = [
        node
        for node in graph.node
        if node.op_type == "DequantizeLinear" and producers.get(node.input[0]) in embeddings
    ]
    assert len(dequantized) == len(embeddings)


def test_the_fixture_bundle_ships_int8_exactly_when_metadata_says_so(
    tiny_bundle_dir: Path,
) -> None:
    bundle = ModelBundle.open(tiny_bundle_dir)
    record = bundle.metadata["int8"]
    assert (bundle.int8_model_path is not None) is record["shipped"]
    assert record["reason"]
    assert {"accuracy_loss_points", "macro_f1_loss_points"} <= set(record["quality"])


def test_fp16_ships_with_float32_io_and_is_recorded_as_unchecked_without_cuda(
    tiny_bundle_dir: Path,
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("with CUDA, fp16 is checked: see the gpu test")
    model = onnx.load(str(tiny_bundle_dir / FP16_MODEL_FILE))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    weights = Counter(t.data_type for t in model.graph.initializer)
    assert weights[onnx.TensorProto.FLOAT16] > weights[onnx.TensorProto.FLOAT]

    record = ModelBundle.open(tiny_bundle_dir).metadata["fp16"]
    assert record["shipped"] is True and record["file"] == FP16_MODEL_FILE
    assert record["checked"] is False and "no CUDA device" in record["reason"]
    assert "no CUDAExecutionProvider" in record["reason"]  # why: the CPU build of onnxruntime


@pytest.mark.parametrize(
    ("precision", "file"),
    [("fp32", MODEL_FILE), ("int8", INT8_MODEL_FILE), ("fp16", FP16_MODEL_FILE)],
)
def test_from_bundle_loads_the_precision_asked_for(
    int8_bundle_dir: Path, tiny_splits: dict[str, Path], precision: Any, file: str
) -> None:
    texts = _validation_texts(tiny_splits)
    classifier = OnnxClassifier.from_bundle(int8_bundle_dir, precision=precision, providers=CPU)
    assert classifier.model_path.name == file
    fp32 = OnnxClassifier.from_bundle(int8_bundle_dir, providers=CPU).logits(texts)
    logits = classifier.logits(texts)
    assert logits.shape == fp32.shape and np.isfinite(logits).all()
    # Reduced precision moves the random tiny model's logits, but not most of its verdicts.
    assert (logits.argmax(-1) == fp32.argmax(-1)).mean() >= 0.75


def test_int8_flag_still_selects_the_int8_model(int8_bundle_dir: Path) -> None:
    classifier = OnnxClassifier.from_bundle(int8_bundle_dir, int8=True, providers=CPU)
    assert classifier.model_path.name == INT8_MODEL_FILE
    with pytest.raises(ValueError, match="contradicts"):
        OnnxClassifier.from_bundle(int8_bundle_dir, int8=True, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        OnnxClassifier.from_bundle(int8_bundle_dir, precision="bf16")  # type: ignore[arg-type]


def test_fused_op_counts_name_only_operators_present(tiny_bundle_dir: Path) -> None:
    counts = fused_op_counts(onnx.load(str(tiny_bundle_dir / MODEL_FILE)))
    assert counts and all(n > 0 for n in counts.values())
    assert json.loads(json.dumps(counts)) == counts


@pytest.mark.gpu
def test_fp16_on_cuda_is_checked_and_served_on_the_gpu(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    export_tiny: ExportTiny,
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (pip install textops[gpu]) and a CUDA device")
    result = export_tiny(tiny_model_dir, tiny_training_metadata, tmp_path / "bundle")
    record = result.fp16
    assert record["checked"] is True and record["provider"] == "CUDAExecutionProvider"
    assert record["quality"]["rows"] == len(pd.read_parquet(tiny_splits["validation"]))
    assert record["batch_invariance"]["precision"] == "fp16"
    assert record["shipped"] is (
        record["quality"]["passed"] and record["batch_invariance"]["passed"]
    )
    if not record["shipped"]:
        pytest.fail(f"fp16 was refused on CUDA: {record['reason']}")

    texts = _validation_texts(tiny_splits)
    classifier = OnnxClassifier.from_bundle(result.bundle_dir, precision="fp16")
    assert classifier.providers[0] == "CUDAExecutionProvider"
    fp32 = OnnxClassifier.from_bundle(result.bundle_dir, providers=CPU).logits(texts)
    # Batches group texts differently here than in export, so allow a verdict or so to move.
    assert (classifier.logits(texts).argmax(-1) == fp32.argmax(-1)).mean() >= 0.9
