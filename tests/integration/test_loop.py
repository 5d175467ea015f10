"""`textops loop`, what `make run` runs: train, serve, replay traffic, detect drift, retrain.

One real run of the whole loop (one epoch, 200 texts per phase): the predictor and the
collector are real processes, the payload logger's events reach a real SQLite store, and the
drift found in the tweets retrains and hot-loads version 2 into the running predictor.
"""

import json
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from textops.components.monitor.store import open_store

pytestmark = pytest.mark.integration

ROWS = 200


@pytest.fixture(scope="module")
def loop_run(
    tmp_path_factory: pytest.TempPathFactory,
    textops_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("loop")
    completed = textops_cli(
        "loop", "--output-dir", str(output), "--epochs", "1", "--traffic-rows", str(ROWS)
    )
    return completed, output


def test_the_loop_trains_serves_detects_drift_and_retrains(
    loop_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, output = loop_run
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "textops: the whole loop ran" in out
    assert re.search(r"drift, in-distribution: +no_drift", out), out
    assert re.search(r"drift, shifted: +drift \(", out), out
    assert f"retraining:         published {output / 'models' / 'textops-classifier' / '2'}" in out
    # The retrained version was hot-loaded: the running predictor answered with it.
    assert "served version:     2" in out
    current = json.loads((output / "models" / "textops-classifier" / "current.json").read_text())
    assert current["version"] == 2


def test_every_replayed_text_reached_the_store_with_its_prediction_and_label(
    loop_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, output = loop_run
    with open_store(f"sqlite:///{output / 'monitor' / 'payloads.db'}") as store:
        window = store.fetch_window(model_name="textops-classifier")
    replayed = window[window["event_id"].str.startswith("loop-")]
    assert len(replayed) == 2 * ROWS
    assert replayed["prediction"].notna().all()
    in_distribution = replayed[replayed["event_id"].str.contains("in-distribution")]
    assert in_distribution["label"].notna().all()  # the delayed ground truth arrived


def test_each_drift_check_wrote_its_report_and_summary(
    loop_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, output = loop_run
    summaries = {
        path.parent.name.split("-", 1)[1]: json.loads(path.read_text())
        for path in (output / "drift" / "textops-classifier").glob("*/summary.json")
    }
    assert {name: s["drifted"] for name, s in summaries.items()} == {
        "in-distribution": False,
        "shifted": True,
    }
    assert all(s["window_rows"] == ROWS for s in summaries.values())
    assert (output / "drift" / "textops-classifier" / "workspace").is_dir()


def test_the_loop_stops_the_services_it_started(
    loop_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, _ = loop_run
    urls = re.findall(r"on http://127\.0\.0\.1:(\d+)", completed.stdout)
    assert len(urls) == 2  # the collector and the predictor
    for port in urls:
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", int(port)))
