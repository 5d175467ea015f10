"""Which variant the predictor serves: export's verdicts, the load-time probe and its report,
on the tiny bundles with real ONNX Runtime and real OpenVINO.

Timing decides between variants that pass, so the tests that check the rule (a variant that
fails its check is never served, whatever its speed) slow the reference down and break the
candidate's answers around the real sessions, rather than depend on this machine's speeds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from textops.components.common.bundle import METADATA_FILE, VARIANTS_KEY, ModelBundle
from textops.components.common.engines import VARIANTS, Variant, cpu_capabilities
from textops.components.common.errors import ConfigError
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.serve.engine_probe import (
    check_sample,
    probe_variants,
    recorded_refusal,
)
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.runtime import load_runtime
from textops.components.serve.server import build_parser, settings_from_args
from textops.components.serve.settings import BundleSource, ServeSettings

HAS_NATIVE_BF16 = "BF16" in cpu_capabilities()


def _opener(bundle: Path) -> object:
    def open_variant(candidate: Variant) -> OnnxClassifier:
        return OnnxClassifier.from_bundle(bundle, variant=candidate, intra_op_threads=1)

    return open_variant


class _Slowed(OnnxClassifier):
    """A real classifier whose calls take `delay` seconds longer."""

    delay = 0.0
    negate = False

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        time.sleep(self.delay)
        logits = super().run(features)
        return -logits if self.negate else logits


def _wrapped(bundle: Path, *, slow: str, broken: str | None = None) -> object:
    """Opens real sessions; `slow` gets 5 ms a call more, `broken` answers negated logits."""

    def open_variant(candidate: Variant) -> OnnxClassifier:
        classifier = OnnxClassifier.from_bundle(bundle, variant=candidate, intra_op_threads=1)
        classifier.__class__ = _Slowed
        classifier.delay = 0.005 if candidate.name == slow else 0.0  # type: ignore[attr-defined]
        classifier.negate = candidate.name == broken  # type: ignore[attr-defined]
        return classifier

    return open_variant


def test_export_records_a_verdict_for_every_variant(int8_bundle_dir: Path) -> None:
    variants = ModelBundle.open(int8_bundle_dir).metadata[VARIANTS_KEY]
    assert set(variants) == set(VARIANTS)
    for name, record in variants.items():
        assert (record["engine"], record["compute"]) == (
            VARIANTS[name].engine,
            VARIANTS[name].compute,
        )
        assert record["reason"]
    # An OpenVINO fp32 run of model.onnx reproduces PyTorch as ONNX Runtime's does.
    assert variants["openvino-fp32"]["passed"] is True
    assert variants["openvino-fp32"]["parity"]["argmax_agreement"] == 1.0
    assert variants["openvino-fp32"]["batch_invariance"]["passed"] is True
    assert variants["openvino-int8"]["file"] == "model.int8.onnx"
    assert "quality" in variants["openvino-int8"]
    assert variants["openvino-bf16"]["native_here"] is HAS_NATIVE_BF16
    if not HAS_NATIVE_BF16:  # emulated bf16 is 20x slower: left to a host that has it
        bf16 = variants["openvino-bf16"]
        assert (bf16["checked"], bf16["passed"], bf16["judge_on_host"]) == (False, None, True)
    assert variants["fp16"]["passed"] is None  # shipped unchecked: no GPU here


def test_auto_serves_a_measured_variant_and_says_why(int8_bundle_dir: Path) -> None:
    runtime = load_runtime(
        BundleSource(int8_bundle_dir, "3", "fp32", "auto"), 1, batch_texts=16, probe_seconds=0
    )
    execution = runtime.execution
    probe = execution.probe
    assert probe is not None and execution.choice == "probe"
    assert execution.variant == probe.chosen
    measured = {m.variant for m in probe.measured}
    assert {"fp32", "int8", "openvino-fp32"} <= measured
    if not HAS_NATIVE_BF16:
        assert "AMX" in probe.excluded["openvino-bf16"]
    chosen = probe.figures(probe.chosen)
    assert chosen is not None and chosen.passed
    assert chosen.score == min(m.score for m in probe.measured if m.passed)
    parameters = execution.parameters()
    assert parameters["variant"] == probe.chosen and parameters["variant_choice"] == "probe"
    assert parameters["probe_fp32_score"] == 1.0
    assert probe.chosen in parameters["probe_reason"]


def test_the_faster_variant_is_served_when_it_passes(int8_bundle_dir: Path) -> None:
    _, report = probe_variants(
        ModelBundle.open(int8_bundle_dir),
        _wrapped(int8_bundle_dir, slow="fp32"),  # type: ignore[arg-type]
        batch_texts=16,
        seconds=0,
        candidates=("fp32", "openvino-fp32"),
    )
    assert report.chosen == "openvino-fp32"
    assert "fastest" in report.reason


def test_a_variant_failing_its_check_is_never_served_however_fast(int8_bundle_dir: Path) -> None:
    _, report = probe_variants(
        ModelBundle.open(int8_bundle_dir),
        _wrapped(int8_bundle_dir, slow="fp32", broken="openvino-fp32"),  # type: ignore[arg-type]
        batch_texts=16,
        seconds=0,
        candidates=("fp32", "openvino-fp32"),
    )
    failed = report.figures("openvino-fp32")
    assert failed is not None and not failed.passed
    assert failed.score < 1.0  # faster than fp32, and still not served
    assert "argmax agreement" in failed.check
    assert report.chosen == "fp32"


def test_a_named_variant_is_served_after_its_check(int8_bundle_dir: Path) -> None:
    runtime = load_runtime(
        BundleSource(int8_bundle_dir, "3", "fp32", "openvino-fp32"), 1, probe_seconds=0
    )
    execution = runtime.execution
    assert (execution.variant, execution.engine) == ("openvino-fp32", "openvino")
    assert (execution.choice, execution.fallback) == ("setting", "none")
    assert execution.provider == "OpenVINO:CPU"
    assert runtime.predict_proba(["great food"], 4).shape == (1, 2)


def test_a_named_variant_this_host_cannot_run_falls_back_to_fp32(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if HAS_NATIVE_BF16:
        pytest.skip("this CPU computes bf16 natively: the variant runs here")
    with caplog.at_level(logging.WARNING):
        runtime = load_runtime(
            BundleSource(tiny_bundle_dir, "3", "fp32", "openvino-bf16"), 1, probe_seconds=0
        )
    execution = runtime.execution
    assert (execution.variant, execution.fallback) == ("fp32", "variant_failed_check")
    assert "bf16 natively" in execution.reason
    assert any("variant fallback" in r.getMessage() for r in caplog.records)


def test_refusals_come_from_the_bundles_own_record(int8_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(int8_bundle_dir, tmp_path / "b"))
    metadata = json.loads((bundle / METADATA_FILE).read_text())
    metadata[VARIANTS_KEY]["openvino-int8"].update(passed=False, reason="it lost 3 points")
    (bundle / METADATA_FILE).write_text(json.dumps(metadata))
    refusal = recorded_refusal(ModelBundle.open(bundle), VARIANTS["openvino-int8"])
    assert refusal == "export refused it: it lost 3 points"

    del metadata[VARIANTS_KEY]  # a bundle exported before variants were recorded
    (bundle / METADATA_FILE).write_text(json.dumps(metadata))
    legacy = ModelBundle.open(bundle)
    assert "exported before" in str(recorded_refusal(legacy, VARIANTS["openvino-fp32"]))
    assert recorded_refusal(legacy, VARIANTS["int8"]) is None  # recorded batch invariant


def test_the_probe_figures_reach_the_metrics(int8_bundle_dir: Path) -> None:
    model = TextClassifierModel(
        ServeSettings(
            model_name="probed", bundle=int8_bundle_dir, model_version="7", probe_seconds=0
        )
    )
    model.load()
    probe = model.runtime.execution.probe
    assert probe is not None
    for measured in probe.measured:
        labels = {"model_name": "probed", "version": "7", "variant": measured.variant}
        single = REGISTRY.get_sample_value("textops_variant_probe_seconds", labels | {"texts": "1"})
        assert single == pytest.approx(measured.single_ms / 1000.0)
    model.stop()
    labels = {"model_name": "probed", "version": "7", "variant": "fp32", "texts": "1"}
    assert REGISTRY.get_sample_value("textops_variant_probe_seconds", labels) is None


def test_variant_and_precision_settings(tiny_bundle_dir: Path) -> None:
    args = build_parser().parse_args(["--bundle", str(tiny_bundle_dir), "--variant", "int8"])
    settings = settings_from_args(args)
    assert (settings.variant, settings.precision) == ("int8", None)
    with pytest.raises(SystemExit):  # argparse: not both
        build_parser().parse_args(["--bundle", "b", "--variant", "int8", "--precision", "fp32"])
    with pytest.raises(ConfigError, match="names no variant"):
        ServeSettings(model_name="m", bundle=tiny_bundle_dir, variant="tensorrt")
    with pytest.raises(ConfigError, match="not both"):
        ServeSettings(model_name="m", bundle=tiny_bundle_dir, variant="int8", precision="fp32")
    with pytest.raises(ConfigError, match="--probe-seconds"):
        ServeSettings(model_name="m", bundle=tiny_bundle_dir, probe_seconds=-1)


def test_the_check_sample_spreads_over_a_reference_grouped_by_class(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    import pandas as pd

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "b"))
    reference = bundle / "reference.parquet"
    frame = pd.read_parquet(reference)
    grouped = pd.concat([frame.assign(label="negative"), frame.assign(label="positive")])
    grouped.to_parquet(reference, index=False)  # every negative row first, as a split may be
    opened = ModelBundle.open(bundle)
    texts, label_ids = check_sample(opened, opened.labels, rows=len(frame))
    assert len(texts) == len(frame)
    assert 0.3 < float(np.mean(label_ids)) < 0.7  # both classes, not the first rows' one


def test_bf16_left_to_the_serving_host_is_judged_there_with_batch_invariance(
    tiny_bundle_dir: Path,
) -> None:
    if HAS_NATIVE_BF16:
        pytest.skip("export judged bf16 here: nothing is left to the serving host")
    bundle = ModelBundle.open(tiny_bundle_dir)
    assert recorded_refusal(bundle, VARIANTS["openvino-bf16"]) is None
    # A host with native bf16, stood in for by OpenVINO's emulation (its rounding, slowly).
    _, report = probe_variants(
        bundle,
        _opener(tiny_bundle_dir),  # type: ignore[arg-type]
        batch_texts=16,
        seconds=0,
        candidates=("fp32", "openvino-bf16"),
        host=lambda variant: None,
    )
    bf16 = report.figures("openvino-bf16")
    assert bf16 is not None
    assert "batch invariance" in bf16.check
