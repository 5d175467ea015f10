"""Batch invariance on the tiny model: a text's answer does not depend on what it is batched with.

Real ONNX Runtime graphs throughout: model.onnx (fp32), the INT8 graph export ships (static,
calibrated on the train split), the INT8 graph export used to ship (dynamic quantization, one
activation scale per padded batch) as the counter-example the check must catch, and fp16 on
a GPU where there is one.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common import batch_invariance
from textops.components.common.batch_invariance import (
    ADVERSARIAL_NEIGHBOURS,
    MAX_PROB_DIFF,
    SHORT_NEIGHBOURS,
    batch_mixes,
    check_batch_invariance,
    probe_texts,
    recorded_as_invariant,
)
from textops.components.common.bundle import INT8_MODEL_FILE, ModelBundle
from textops.components.common.errors import ExportError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import (
    OnnxClassifier,
    encode_texts,
    load_tokenizer,
)
from textops.components.export import parity, variants
from textops.components.export.onnx_export import ExportResult
from textops.components.export.optimize import quantize_int8
from textops.components.serve.settings import choose_precision

ExportTiny = Callable[[Path, dict[str, Any], Path], ExportResult]

CPU = ["CPUExecutionProvider"]
CUDA = "CUDAExecutionProvider"
MIXES = {
    "together",
    "short_neighbours",
    "long_neighbours",
    "adversarial_neighbours",
    "padded_50pct",
    "padded_75pct",
}


def _texts(splits: dict[str, Path], split: str) -> list[str]:
    return [str(t) for t in pd.read_parquet(splits[split])["text"]]


@pytest.fixture(scope="module")
def unfused_graph(
    tiny_model_dir: Path, tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model traced as export traces it, before fusion: what INT8 quantizes."""
    from textops.components.export.trace import (
        export_onnx,
        graph_inputs,
        load_fast_tokenizer,
        load_model,
    )

    labels = LabelMap.load(tiny_model_dir / "labels.json")
    model = load_model(tiny_model_dir, labels, 32)
    names = graph_inputs(load_fast_tokenizer(tiny_model_dir), model)
    example = encode_texts(
        load_tokenizer(tiny_bundle_dir / "tokenizer.json", 32),
        ("a short text", "a longer text, so that the traced batch holds padding"),
        dict.fromkeys(names, np.int64),
    )
    path = tmp_path_factory.mktemp("unfused") / "model.unfused.onnx"
    export_onnx(model, example, path)
    return path


def _dynamic_int8(source: Path, target: Path) -> None:
    """The INT8 recipe export shipped before: activation scales computed per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _open(path: Path, bundle: Path, providers: list[str] | None = None) -> OnnxClassifier:
    return OnnxClassifier(
        path, bundle / "tokenizer.json", ModelBundle(bundle).labels, 32, providers=providers or CPU
    )


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_served_cpu_precisions_answer_a_text_the_same_in_every_batch_mix(
    int8_bundle_dir: Path, tiny_splits: dict[str, Path], precision: Any
) -> None:
    classifier = OnnxClassifier.from_bundle(int8_bundle_dir, precision=precision, providers=CPU)
    report = check_batch_invariance(classifier, _texts(tiny_splits, "validation"), precision)

    assert report.passed, report.describe()
    assert report.tolerance == MAX_PROB_DIFF[precision]
    assert {mix.name for mix in report.mixes} == MIXES
    assert all(mix.max_prob_diff <= report.tolerance for mix in report.mixes)
    assert report.label_changes == 0
    mixes = {mix.name: mix for mix in report.mixes}
    # Long and adversarial neighbours fill the window; the shorter probes are also padded to
    # a length of their own (short neighbours) and to shares of the window.
    assert set(mixes["adversarial_neighbours"].sequence_lengths) == {32}
    assert set(mixes["long_neighbours"].sequence_lengths) == {32}
    lengths = {n for mix in report.mixes for n in mix.sequence_lengths}
    assert len(lengths) >= 3 and min(lengths) < 32


def test_dynamic_int8_is_caught_depending_on_its_neighbours(
    unfused_graph: Path, int8_bundle_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    _dynamic_int8(unfused_graph, tmp_path / "dynamic.onnx")
    classifier = _open(tmp_path / "dynamic.onnx", int8_bundle_dir)
    report = check_batch_invariance(classifier, _texts(tiny_splits, "validation"), "int8")

    assert not report.passed
    assert report.max_prob_diff > 10 * MAX_PROB_DIFF["int8"]
    worst = report.worst_mix()
    assert worst is not None and worst.name in report.describe()
    assert report.to_dict()["passed"] is False


def test_the_check_compares_each_probe_alone_with_its_own_row(
    unfused_graph: Path, int8_bundle_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    # Against the check's own bookkeeping: the dynamic graph, one probe, one batch by hand.
    _dynamic_int8(unfused_graph, tmp_path / "dynamic.onnx")
    classifier = _open(tmp_path / "dynamic.onnx", int8_bundle_dir)
    probe = probe_texts(_texts(tiny_splits, "validation"), 1)
    alone = classifier.predict_proba(probe)[0]
    batched = classifier.predict_proba([*ADVERSARIAL_NEIGHBOURS, *probe], batch_size=64)[-1]
    moved = float(np.abs(batched - alone).max())
    report = check_batch_invariance(classifier, probe, "int8", probes=1)
    mixes = {mix.name: mix for mix in report.mixes}
    assert mixes["adversarial_neighbours"].max_prob_diff == pytest.approx(moved, abs=1e-6)


def test_every_mix_holds_each_probe_once_at_the_row_it_names() -> None:
    probes = [f"probe number {i} " * (i + 1) for i in range(11)]
    mixes = batch_mixes(probes, 32)
    assert set(mixes) == MIXES
    for name, batches in mixes.items():
        rows = [row for _, positions in batches for row in positions if row >= 0]
        assert sorted(rows) == list(range(len(probes))), name
        for texts, positions in batches:
            assert len(texts) == len(positions)
            for text, row in zip(texts, positions, strict=True):
                assert (text == probes[row]) if row >= 0 else (text not in probes)
    short = {
        text
        for texts, rows in mixes["short_neighbours"]
        for text, row in zip(texts, rows, strict=True)
        if row < 0
    }
    assert short == set(SHORT_NEIGHBOURS)
    adversarial = mixes["adversarial_neighbours"][0]
    assert adversarial[0][: len(ADVERSARIAL_NEIGHBOURS)] == list(ADVERSARIAL_NEIGHBOURS)


def test_probes_are_distinct_texts_spread_over_the_lengths() -> None:
    texts = [f"{'w ' * n}end" for n in range(100)] + ["", "   ", "w end"]
    probes = probe_texts(texts, 5)
    assert probes == probe_texts(list(reversed(texts)), 5)  # the order given does not matter
    assert len(probes) == len(set(probes)) == 5
    assert probes[0] == "end" and probes[-1] == f"{'w ' * 99}end"
    assert [len(p) for p in probes] == sorted(len(p) for p in probes)
    assert probe_texts(["a", "a", " "], 5) == ["a"]
    with pytest.raises(ValueError, match="at least one non-empty text"):
        check_batch_invariance(object(), [" "], "int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch-invariance tolerance for precision 'fp8'"):
        check_batch_invariance(object(), ["a"], "fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, False),  # exported before the check: dynamic INT8
        ({"batch_invariance": {"int8": {"passed": True}}}, True),
        ({"batch_invariance": {"int8": {"passed": False}}}, False),
        ({"batch_invariance": {"fp32": {"passed": True}}}, False),
        ({"batch_invariance": {"int8": {"passed": "yes"}}}, False),
        ({"batch_invariance": ["int8"]}, False),
    ],
)
def test_a_bundle_counts_as_invariant_only_where_export_recorded_a_pass(
    metadata: dict[str, Any], expected: bool
) -> None:
    assert recorded_as_invariant(metadata, "int8") is expected


def test_the_default_precision_serves_int8_only_where_export_recorded_it_invariant(
    int8_bundle_dir: Path, tmp_path: Path
) -> None:
    assert choose_precision(int8_bundle_dir, None) == "int8"
    # The same bundle as export wrote it before the check: its INT8 graph vouched for by none.
    bundle = Path(shutil.copytree(int8_bundle_dir, tmp_path / "bundle"))
    metadata = json.loads((bundle / "metadata.json").read_text())
    del metadata["batch_invariance"]
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    assert ModelBundle(bundle).serving_precision == "fp32"
    assert choose_precision(bundle, None) == "fp32"
    assert choose_precision(bundle, "int8") == "int8"  # asked for by name, it is served


def test_static_calibration_is_deterministic_and_unpadded(
    unfused_graph: Path,
    int8_bundle_dir: Path,
    tiny_splits: dict[str, Path],
    tmp_path: Path,
) -> None:
    classifier = _open(unfused_graph, int8_bundle_dir)
    texts = _texts(tiny_splits, "train")
    batches = variants.calibration_batches(classifier, texts)
    assert sum(len(batch["input_ids"]) for batch in batches) == len(texts)
    assert all(batch["attention_mask"].all() for batch in batches)  # no padding anywhere
    lengths = [batch["input_ids"].shape[1] for batch in batches]
    assert lengths == sorted(lengths)

    for name in ("first.onnx", "second.onnx"):
        quantize_int8(
            unfused_graph,
            tmp_path / name,
            calibration=variants.calibration_batches(classifier, texts),
            per_channel=True,
        )
    assert (tmp_path / "first.onnx").read_bytes() == (tmp_path / "second.onnx").read_bytes()
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_int8(unfused_graph, tmp_path / "none.onnx", calibration=[], per_channel=True)


def test_export_leaves_out_an_int8_graph_that_is_not_batch_invariant(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    export_tiny: ExportTiny,
) -> None:
    # A future recipe that couples the rows of a batch, staged with the former one.
    def regressed(source: Path, target: Path, **_: Any) -> int:
        _dynamic_int8(source, target)
        return 0

    monkeypatch.setattr(variants, "quantize_int8", regressed)
    monkeypatch.setattr(parity, "INT8_MAX_LOSS_POINTS", 100.0)  # quality alone would pass
    caplog.set_level(logging.WARNING, logger="textops")
    result = export_tiny(tiny_model_dir, tiny_training_metadata, tmp_path / "bundle")

    bundle = ModelBundle.open(result.bundle_dir)
    assert not (result.bundle_dir / INT8_MODEL_FILE).exists()
    record = bundle.metadata["int8"]
    assert record["shipped"] is False and record["quality"]["passed"] is True
    assert record["batch_invariance"]["passed"] is False
    assert "INT8 answers depend on the batch" in record["reason"]
    assert record["reason"].endswith("the bundle serves fp32")
    assert bundle.metadata["batch_invariance"]["fp32"]["passed"] is True
    assert result.artifact_metadata()["int8_batch_invariant"] is False
    (warning,) = [r.getMessage() for r in caplog.records if "INT8 not shipped" in r.getMessage()]
    assert "depend on the batch" in warning
    assert choose_precision(result.bundle_dir, None) == "fp32"


def test_export_fails_when_the_fp32_graph_is_not_batch_invariant(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_tiny: ExportTiny,
) -> None:
    # No difference is within a negative tolerance: fp32 "fails", and nothing may ship.
    monkeypatch.setitem(batch_invariance.MAX_PROB_DIFF, "fp32", -1.0)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="the fp32 graph is not batch invariant"):
        export_tiny(tiny_model_dir, tiny_training_metadata, out / "bundle")
    assert list(out.iterdir()) == []


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_gpu_precisions_answer_a_text_the_same_in_every_batch_mix(
    int8_bundle_dir: Path, tiny_splits: dict[str, Path], precision: Any
) -> None:
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (pip install textops[gpu]) and a CUDA device")
    classifier = OnnxClassifier.from_bundle(
        int8_bundle_dir, precision=precision, providers=[CUDA, *CPU]
    )
    assert classifier.providers[0] == CUDA
    report = check_batch_invariance(classifier, _texts(tiny_splits, "validation"), precision)
    assert report.passed, report.describe()
    assert {mix.name for mix in report.mixes} == MIXES
