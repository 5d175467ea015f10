"""Drift settings: defaults, Bonferroni shares of the false-positive budget, YAML and flags."""

from pathlib import Path

import pytest

from textops.components.common.errors import ConfigError
from textops.components.monitor.drift_settings import (
    DATA_TESTS,
    DriftSettings,
    load_drift_settings,
)


def test_defaults_split_the_family_alpha_over_the_gating_p_value_tests() -> None:
    settings = DriftSettings()
    assert set(settings.tests) == set(DATA_TESTS)
    # Five gating tests share 0.05: text content, three descriptors, predicted labels.
    assert sorted(settings.alpha_tests()) == sorted(
        ["text_content", "text_length", "word_count", "non_letter_share", "prediction"]
    )
    assert settings.threshold_of("text_length") == pytest.approx(0.01)
    assert settings.threshold_of("prediction") == pytest.approx(0.01)
    # The domain classifier's threshold is the percentile of chance it must beat.
    assert settings.threshold_of("text_content") == pytest.approx(0.99)
    # Confidence is reported, not gating: it spends none of the budget.
    assert settings.tests["confidence"].gate is False
    assert settings.threshold_of("confidence") == pytest.approx(0.05)


def test_explicit_and_distance_thresholds_leave_the_shared_budget(tmp_path: Path) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text(
        "family-alpha: 0.08\n"
        "tests:\n"
        "  text_length: {method: wasserstein}\n"
        "  word_count: {threshold: 0.001}\n"
        "  non_letter_share: {enabled: false}\n"
    )
    settings = load_drift_settings(path)
    # Only text_content and prediction still share the budget.
    assert sorted(settings.alpha_tests()) == ["prediction", "text_content"]
    assert settings.threshold_of("prediction") == pytest.approx(0.04)
    assert settings.threshold_of("word_count") == pytest.approx(0.001)
    # A distance method without a threshold takes Evidently's default for it.
    assert settings.threshold_of("text_length") is None
    # Entries given are merged into the defaults: word_count keeps its method.
    assert settings.tests["word_count"].method == "ks"
    assert settings.tests["non_letter_share"].enabled is False


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text("min_window_rows: 500\ntests:\n  prediction: {method: jensenshannon}\n")
    settings = load_drift_settings(
        path,
        {"min_window_rows": 50, "drift_share": None, "tests": {"prediction": {"threshold": 0.2}}},
    )
    assert settings.min_window_rows == 50
    assert settings.drift_share == 0.0
    assert settings.tests["prediction"].method == "jensenshannon"
    assert settings.tests["prediction"].threshold == 0.2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tests:\n  sentiment: {method: ks}\n", "sentiment: the tests are text_content"),
        ("min_window_rows: 0\n", "min_window_rows"),
        ("family_alpha: 1.5\n", "family_alpha"),
        ("window: 24h\n", "window"),
        ("tests:\n  text_length: {threshold: -1}\n", "threshold"),
        ("- a list\n", "mapping"),
        ("min_window_rows: [\n", "not valid YAML"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_drift_settings(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read drift settings file"):
        load_drift_settings("/nonexistent/drift.yaml")


def test_the_cli_module_and_the_settings_import_no_heavy_library() -> None:
    import subprocess
    import sys

    heavy = ("evidently", "pandas", "sklearn", "kfp", "torch", "prometheus_client")
    code = (
        "import sys, textops.pipelines.drift_cli, textops.components.monitor.drift; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
