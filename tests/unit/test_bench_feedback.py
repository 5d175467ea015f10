"""The feedback benchmark runs end to end at a small size (10,000 events) and reports its
figures in the JSON format of the other benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_feedback.py"


def test_the_benchmark_at_10000_events(tmp_path: Path) -> None:
    output = tmp_path / "feedback.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--events", "10000", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(output.read_text())
    assert figures["store"]["events"] == 10_000 and not figures["full_size"]
    assert 0 < figures["snapshot"]["rows"] < figures["store"]["labelled"]
    rules = figures["snapshot"]["rules"]
    assert rules["exact_duplicates_dropped"] > 0 and rules["in_base_data_dropped"] > 0
    assert figures["seconds"] > 0 and figures["labelled_events_per_second"] > 0
    assert figures["target_met"] and figures["reuse_seconds"] > 0
    # The baseline reads the same labelled window: every labelled event of the model is in it.
    assert figures["baseline_rows"] == figures["store"]["labelled_for_the_model"]
    assert figures["baseline_seconds"] > 0
    assert figures["seconds_over_baseline"] == figures["seconds"] / figures["baseline_seconds"]
