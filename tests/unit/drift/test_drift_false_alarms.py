"""No false alarm on real data from the reference's own distribution, in the default test run.

The sample set (Amazon, IMDb and Yelp review sentences), shuffled once, is split in two: 1,000
sentences are the bundle's reference, and disjoint windows of the others are logged traffic, all
predicted by the same model and labelled. Every gating test runs on every window with the
default settings (family_alpha shared by the p-value tests, the accuracy and macro-F1 drops
against the bundle's test metrics), and none may flag drift. tests/model/test_drift_real_data.py
holds the fine-tuned model to 19 windows of 20 (slow: it fine-tunes first).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from textops.components.common.bundle import ModelBundle
from textops.components.monitor.drift import detect_drift, quality_baseline
from textops.components.monitor.drift_settings import DriftSettings

#: Rows of each window: the default minimum, so each is as small as the job would test.
WINDOW_ROWS = DriftSettings().min_window_rows
#: Disjoint windows checked; each runs one Evidently report (several seconds on two cores).
WINDOWS = 4


def test_traffic_from_the_reference_distribution_raises_no_alarm(
    drift_bundle_dir: Path, held_out_traffic: pd.DataFrame
) -> None:
    bundle = ModelBundle.open(drift_bundle_dir)
    reference = pd.read_parquet(bundle.reference_path)
    baseline = quality_baseline(bundle.metadata, reference)
    assert baseline is not None
    # The traffic is none of the reference's sentences: the two parts of one shuffled set.
    assert not set(held_out_traffic["text"]) & set(reference["text"])
    assert len(held_out_traffic) >= WINDOWS * WINDOW_ROWS
    settings = DriftSettings()
    gating = {name for name, test in settings.tests.items() if test.enabled and test.gate}

    verdicts = []
    for start in range(0, WINDOWS * WINDOW_ROWS, WINDOW_ROWS):
        window = held_out_traffic.iloc[start : start + WINDOW_ROWS]
        result = detect_drift(reference, window, settings, baseline=baseline)
        ran = {t.name for t in result.tests if t.status != "skipped"}
        # Not a vacuous pass: every gating test, the quality ones included, measured the window.
        assert ran >= gating | {"accuracy", "macro_f1"}, result.summary()
        verdicts.append((start, result.status, result.reasons))

    assert [status for _, status, _ in verdicts] == ["no_drift"] * WINDOWS, verdicts
