"""Which graph the predictor serves on which provider, on the tiny bundle with real ONNX Runtime.

Here ONNX Runtime is the CPU build, so `--precision fp16` meets the no-CUDA fallback for real.
The fp16 path itself (judged against fp32, then served or refused) runs with the CPU provider
standing in for the GPU (`accelerator=`), since ONNX Runtime's CPU build executes fp16 graphs;
the tests marked `gpu` run it on a real CUDA device (`make test-gpu`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import numpy_helper

from textops.components.common.bundle import FP16_MODEL_FILE, METADATA_FILE, REFERENCE_FILE
from textops.components.common.onnx_classifier import prepare_cuda
from textops.components.common.precision_quality import FP16_MAX_LOSS_POINTS
from textops.components.serve.execution import CPU, CUDA, FP16_CHECK_ROWS
from textops.components.serve.runtime import ClassifierRuntime, load_runtime
from textops.components.serve.settings import BundleSource

TEXTS = ["great food", "awful service", "it was fine", "never again"]
HAS_CUDA = CUDA in ort.get_available_providers()


def _load(bundle: Path, precision: str, accelerator: str = CUDA) -> ClassifierRuntime:
    source = BundleSource(bundle, "3", precision)  # type: ignore[arg-type]
    return load_runtime(source, intra_op_threads=1, accelerator=accelerator)


def _fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("precision fallback")
    ]


@pytest.fixture
def bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle, to change."""
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def _break_fp16(bundle: Path) -> None:
    """Negate the classifier head of model.fp16.onnx: every verdict flips, nothing else moves.

    The reference labels become fp32's own verdicts (as a well-trained model's nearly are),
    so fp32 scores 100% on them and the broken graph 0%, whatever the random model's quality.
    """
    path = bundle / FP16_MODEL_FILE
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    last = max(i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul"))
    # The head: the last Gemm (weight and bias) or MatMul, and a bias Add after it.
    inputs = {name for n in nodes[last:] if n.op_type != "Cast" for name in n.input}
    head = [t for t in model.graph.initializer if t.name in inputs]
    assert head, "the classifier head has no weights"
    for tensor in head:
        tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    onnx.save(model, str(path))
    reference = pd.read_parquet(bundle / REFERENCE_FILE)
    reference["label"] = reference["prediction"]
    reference.to_parquet(bundle / REFERENCE_FILE, index=False)


def _edit_fp16_record(bundle: Path, **fields: object) -> None:
    path = bundle / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["fp16"].update(fields)
    path.write_text(json.dumps(metadata))


def test_prepare_cuda_answers_whether_the_build_has_cuda() -> None:
    assert prepare_cuda() is HAS_CUDA


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA: see the gpu tests")
def test_fp16_without_cuda_serves_fp32_on_cpu_with_one_warning(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="textops")
    runtime = _load(tiny_bundle_dir, "fp16")

    assert runtime.classifier.model_path.name == "model.onnx"
    assert runtime.classifier.providers == [CPU]
    execution = runtime.execution
    assert (execution.provider, execution.precision, execution.requested) == (CPU, "fp32", "fp16")
    assert execution.fallback == "no_cuda_provider" and execution.fp16_check is None
    assert runtime.precision == "fp32" and runtime.requested_precision == "fp16"

    (warning,) = _fallback_lines(caplog)
    assert "requested=fp16 served=fp32 provider=CPUExecutionProvider" in warning
    assert f"no {CUDA}" in warning and ort.__version__ in warning
    ready = [r.getMessage() for r in caplog.records if "runtime ready" in r.getMessage()]
    assert len(ready) == 1
    assert (
        "provider=CPUExecutionProvider precision=fp32 requested_precision=fp16 "
        "fallback=no_cuda_provider fp16_check=not_run"
    ) in ready[0]

    fp32 = _load(tiny_bundle_dir, "fp32")
    np.testing.assert_array_equal(runtime.predict_proba(TEXTS, 8), fp32.predict_proba(TEXTS, 8))


def test_parameters_say_what_runs_and_why(tiny_bundle_dir: Path) -> None:
    parameters = _load(tiny_bundle_dir, "fp16").execution.parameters()
    assert all(isinstance(v, str | int | float | bool) for v in parameters.values())
    assert parameters["requested_precision"] == "fp16"
    assert parameters["onnxruntime_version"] == ort.__version__
    if not HAS_CUDA:
        assert parameters["provider"] == CPU and parameters["precision"] == "fp32"
        assert parameters["fallback"] == "no_cuda_provider"
        assert f"no {CUDA}" in parameters["fallback_reason"]
        assert parameters["fp16_check"] == "not_run"

    plain = _load(tiny_bundle_dir, "fp32").execution.parameters()
    assert plain["fallback"] == "none" and "fallback_reason" not in plain


def test_fp16_that_passes_the_check_is_served(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="textops")
    runtime = _load(tiny_bundle_dir, "fp16", accelerator=CPU)

    assert runtime.classifier.model_path.name == FP16_MODEL_FILE
    execution = runtime.execution
    assert (execution.provider, execution.precision, execution.fallback) == (CPU, "fp16", "none")
    check = execution.fp16_check
    assert check is not None and check.passed
    reference_rows = len(pd.read_parquet(tiny_bundle_dir / REFERENCE_FILE))
    assert check.rows == min(FP16_CHECK_ROWS, reference_rows)
    assert check.max_loss_points == FP16_MAX_LOSS_POINTS
    assert _fallback_lines(caplog) == []
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fp16 check")]
    assert f"rows={check.rows} passed=True" in line and "max_abs_logit_diff=" in line
    assert execution.parameters()["fp16_check"] == "passed"


def test_a_broken_fp16_graph_is_refused_and_fp32_served(
    bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _break_fp16(bundle_copy)
    runtime = _load(bundle_copy, "fp16", accelerator=CPU)

    assert runtime.classifier.model_path.name == "model.onnx"
    execution = runtime.execution
    assert (execution.precision, execution.requested) == ("fp32", "fp16")
    assert execution.fallback == "fp16_failed_check"
    check = execution.fp16_check
    assert check is not None and not check.passed
    assert check.fp32["accuracy"] == 1.0 and check.candidate["accuracy"] == 0.0
    (warning,) = _fallback_lines(caplog)
    assert "served=fp32" in warning and "fallback=fp16_failed_check" in warning
    assert "accuracy 0.0000 vs fp32 1.0000" in warning
    parameters = execution.parameters()
    assert parameters["fp16_check"] == "failed"
    assert parameters["fp16_accuracy_loss_points"] == 100.0


def test_a_bundle_without_fp16_serves_fp32_with_the_reason_export_gave(
    bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (bundle_copy / FP16_MODEL_FILE).unlink()
    _edit_fp16_record(bundle_copy, shipped=False, file=None, reason="conversion failed (X)")
    runtime = _load(bundle_copy, "fp16", accelerator=CPU)

    execution = runtime.execution
    assert (execution.provider, execution.precision) == (CPU, "fp32")
    assert execution.fallback == "no_fp16_model" and execution.fp16_check is None
    assert "no model.fp16.onnx: conversion failed (X)" in execution.reason
    (warning,) = _fallback_lines(caplog)
    assert "fallback=no_fp16_model" in warning


def test_fp16_that_export_refused_is_not_served(
    bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _edit_fp16_record(
        bundle_copy,
        checked=True,
        quality={"passed": False},
        reason="fp16 on CUDA loses too much against fp32",
    )
    runtime = _load(bundle_copy, "fp16", accelerator=CPU)

    assert runtime.classifier.model_path.name == "model.onnx"
    assert runtime.execution.fallback == "fp16_refused_at_export"
    assert "export refused the fp16 graph: fp16 on CUDA loses" in runtime.execution.reason
    assert len(_fallback_lines(caplog)) == 1


def test_fp16_without_labelled_reference_rows_is_not_served(bundle_copy: Path) -> None:
    reference = pd.read_parquet(bundle_copy / REFERENCE_FILE)
    reference["label"] = "a label the model does not know"
    reference.to_parquet(bundle_copy / REFERENCE_FILE, index=False)
    runtime = _load(bundle_copy, "fp16", accelerator=CPU)

    assert runtime.precision == "fp32"
    assert runtime.execution.fallback == "fp16_not_checkable"


def test_int8_and_fp32_are_served_as_asked(tiny_bundle_dir: Path) -> None:
    fp32 = _load(tiny_bundle_dir, "fp32").execution
    assert (fp32.precision, fp32.requested, fp32.fallback) == ("fp32", "fp32", "none")
    assert fp32.provider == (CUDA if HAS_CUDA else CPU)


# --- on a CUDA device (make test-gpu) --------------------------------------------------------


@pytest.mark.gpu
def test_fp16_is_served_on_cuda_once_it_passes_the_check(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not HAS_CUDA:
        pytest.skip("needs onnxruntime-gpu (the serve-gpu image) and a CUDA device")
    caplog.set_level(logging.INFO, logger="textops")
    runtime = _load(tiny_bundle_dir, "fp16")

    execution = runtime.execution
    assert execution.fallback == "none", execution.reason
    assert (execution.provider, execution.precision) == (CUDA, "fp16")
    assert runtime.classifier.model_path.name == FP16_MODEL_FILE
    assert runtime.classifier.providers[0] == CUDA
    check = execution.fp16_check
    assert check is not None and check.passed, check and check.describe()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fp16 check")]
    assert f"provider={CUDA}" in line and "passed=True" in line
    fp32 = _load(tiny_bundle_dir, "fp32")
    assert fp32.execution.provider == CUDA
    verdicts = runtime.predict_proba(TEXTS, 8).argmax(-1)
    assert (verdicts == fp32.predict_proba(TEXTS, 8).argmax(-1)).mean() >= 0.75


@pytest.mark.gpu
def test_a_broken_fp16_graph_is_refused_on_cuda(bundle_copy: Path) -> None:
    if not HAS_CUDA:
        pytest.skip("needs onnxruntime-gpu (the serve-gpu image) and a CUDA device")
    _break_fp16(bundle_copy)
    runtime = _load(bundle_copy, "fp16")

    assert runtime.execution.fallback == "fp16_failed_check"
    assert (runtime.execution.provider, runtime.precision) == (CUDA, "fp32")
    assert runtime.classifier.providers[0] == CUDA
