"""`textops drift` against a real SQLite payload store: outputs, exit status, window bounds."""

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from textops.components.deploy.publish import publish_bundle
from textops.pipelines.cli import main


def gauges(path: Path) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text file, by (name, sorted labels)."""
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def workspace_runs(workspace: Path) -> int:
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    (project,) = ws.search_project("textops-classifier drift")
    return len(ws.list_runs(project.id))


def test_traffic_like_the_reference_exits_0_with_every_output(
    drift_bundle_dir, held_out_traffic, traffic_store, tmp_path, capsys
) -> None:
    url = traffic_store(held_out_traffic.head(300))
    out = tmp_path / "out"
    args = ["drift", "--store", url, "--bundle", str(drift_bundle_dir), "--output-dir", str(out)]
    started = time.time()
    assert main([*args, "--last", "300"]) == 0
    finished = time.time()
    assert "textops: no drift in 300 rows of textops-classifier traffic" in capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "no_drift" and summary["drifted"] is False
    assert summary["window"]["last"] == 300 and summary["window"]["source"] == url
    assert summary["labelled_rows"] == 300 and summary["bundle"] == str(drift_bundle_dir)
    assert summary["baseline"]["source"] == "bundle test metrics"
    assert {t["name"] for t in summary["tests"]} >= {"text_content", "prediction", "accuracy"}
    for test in summary["tests"]:
        assert test["value"] is not None and test["threshold"] is not None, test
    report = (out / "report.html").read_text()
    # Evidently's page, with a drift test per column and the methods named.
    assert "<html" in report[:500]
    for column in ("text", "text_length", "word_count", "non_letter_share", "prediction"):
        assert f"Value Drift for column {column}" in report
    assert "Percentile text content drift" in report and "chi-square test of homogeneity" in report

    samples = gauges(out / "drift.prom")
    model = ("model_name", "textops-classifier")
    assert samples[("textops_drift_detected", (model,))] == 0
    assert samples[("textops_drift_window_rows", (model,))] == 300
    # The run's own time: neither before the command started nor after it returned.
    last_run = samples[("textops_drift_last_run_timestamp_seconds", (model,))]
    assert started <= last_run <= finished
    assert ("textops_drift_score", (model, ("test", "text_content"))) in samples
    assert workspace_runs(out / "workspace") == 1


def test_tweets_exit_4_and_each_run_adds_to_the_workspace_history(
    drift_bundle_dir, held_out_traffic, tweet_traffic, traffic_store, tmp_path, capsys
) -> None:
    url = traffic_store(pd.concat([held_out_traffic.head(300), tweet_traffic.head(300)]))
    out = tmp_path / "out"
    args = ["drift", "--store", url, "--bundle", str(drift_bundle_dir), "--output-dir", str(out)]
    assert main([*args, "--last", "300"]) == 4
    printed = capsys.readouterr().out
    assert "textops: drift found in 300 rows" in printed
    assert "reason:     text_content: domain classifier ROC AUC" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["drifted"] is True and summary["reasons"]
    samples = gauges(out / "drift.prom")
    assert samples[("textops_drift_detected", (("model_name", "textops-classifier"),))] == 1
    # The whole stored traffic (half reviews, half tweets), into the same workspace.
    assert main([*args, "--since", "1d"]) == 4
    assert json.loads((out / "summary.json").read_text())["window_rows"] == 600
    assert workspace_runs(out / "workspace") == 2


def test_since_and_until_select_the_window(
    drift_bundle_dir, held_out_traffic, tweet_traffic, traffic_store, tmp_path
) -> None:
    now = time.time()
    traffic_store(tweet_traffic.head(300), start=now - 7200)  # two hours ago
    url = traffic_store(held_out_traffic.head(300), start=now - 600)  # the last ten minutes
    out = tmp_path / "out"
    args = ["drift", "--store", url, "--bundle", str(drift_bundle_dir), "--output-dir", str(out)]
    assert main([*args, "--since", "1h"]) == 0
    assert json.loads((out / "summary.json").read_text())["window_rows"] == 300
    assert main([*args, "--since", "3h", "--until", "1h"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["window_rows"] == 300
    first = pd.Timestamp(summary["first_received_at"]).timestamp()
    assert abs(first - (now - 7200)) < 2


def test_a_window_below_the_minimum_is_not_enough_data(
    drift_bundle_dir, held_out_traffic, traffic_store, tmp_path, capsys
) -> None:
    url = traffic_store(held_out_traffic.head(150))
    out = tmp_path / "out"
    code = main(
        ["drift", "--store", url, "--bundle", str(drift_bundle_dir), "--output-dir", str(out)]
    )
    assert code == 0
    assert "textops: not enough data in 150 rows" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "not_enough_data" and summary["not_enough_data"] is True
    assert "at least 200 needed" in (out / "report.html").read_text()
    assert summary["workspace"]["run_id"] is None
    # A lower minimum, from the flag, lets the same window be tested.
    lower = ["--min-window-rows", "100"]
    assert (
        main(
            [
                "drift",
                "--store",
                url,
                "--bundle",
                str(drift_bundle_dir),
                "--output-dir",
                str(out),
                *lower,
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["status"] == "no_drift"


def test_a_window_file_and_the_model_repositorys_current_version(
    drift_bundle_dir, tweet_traffic, tmp_path
) -> None:
    repository = tmp_path / "models"
    publish_bundle(drift_bundle_dir, repository, "textops-classifier")
    window = tmp_path / "window.csv"
    tweet_traffic.head(250).to_csv(window, index=False)
    out = tmp_path / "out"
    code = main(
        [
            "drift",
            "--window-file",
            str(window),
            "--model-repository",
            str(repository),
            "--output-dir",
            str(out),
            "--no-workspace",
        ]
    )
    assert code == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bundle"] == str(repository / "textops-classifier" / "1")
    assert summary["window"]["source"] == str(window) and summary["workspace"] is None
    assert not (out / "workspace").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bundle", "/nonexistent/bundle"], "model bundle not found"),
        (["--model-repository", "{empty}"], "no published version of textops-classifier"),
        (["--since", "yesterday"], "cannot read the time 'yesterday'"),
        (["--last", "0"], "--last must be at least 1"),
        (["--drift-config", "{bad_yaml}"], "invalid drift settings"),
        (["--min-window-rows", "0"], "min_window_rows"),
        (["--store", "mysql://db/x"], "unsupported payload store URL"),
        (["--trigger", "--config", "{bad_yaml}"], "invalid configuration"),
    ],
)
def test_bad_input_exits_2_and_says_what_to_fix(
    drift_bundle_dir, tmp_path, capsys, extra: list[str], message: str
) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs_typo: 3\n")
    (tmp_path / "empty").mkdir()
    extra = [a.format(bad_yaml=bad_yaml, empty=tmp_path / "empty") for a in extra]
    args = ["drift", "--output-dir", str(tmp_path)]
    if "--store" not in extra:
        args += ["--store", f"sqlite:///{tmp_path / 'p.db'}"]
    if "--bundle" not in extra and "--model-repository" not in extra:
        args += ["--bundle", str(drift_bundle_dir)]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_a_window_file_with_store_bounds_is_refused(drift_bundle_dir, tmp_path, capsys) -> None:
    window = tmp_path / "w.csv"
    pd.DataFrame({"text": ["a"], "prediction": ["positive"]}).to_csv(window, index=False)
    code = main(
        [
            "drift",
            "--window-file",
            str(window),
            "--bundle",
            str(drift_bundle_dir),
            "--last",
            "5",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "a --window-file is compared as a whole" in capsys.readouterr().err


def test_a_bad_threshold_flag_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["drift", "--threshold", "sentiment=0.1"])
    assert exited.value.code == 2
    assert "TEST one of text_content" in capsys.readouterr().err


class _Pushgateway(BaseHTTPRequestHandler):
    """Records the pushes it receives, as a Pushgateway would accept them."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Pushgateway)
    _Pushgateway.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _Pushgateway.received
    finally:
        server.shutdown()
        server.server_close()


def test_gauges_are_pushed_to_a_pushgateway(
    drift_bundle_dir, tweet_traffic, traffic_store, tmp_path, pushgateway
) -> None:
    url = traffic_store(tweet_traffic.head(200))
    gateway, received = pushgateway
    out = tmp_path / "out"
    code = main(
        [
            "drift",
            "--store",
            url,
            "--bundle",
            str(drift_bundle_dir),
            "--output-dir",
            str(out),
            "--no-workspace",
            "--pushgateway",
            gateway,
        ]
    )
    assert code == 4
    ((method, path, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/textops-drift/model_name/textops-classifier")
    assert b'textops_drift_detected{model_name="textops-classifier"} 1.0' in body
    assert json.loads((out / "summary.json").read_text())["pushgateway"]["error"] is None


def test_an_unreachable_pushgateway_does_not_lose_the_run(
    drift_bundle_dir, tweet_traffic, traffic_store, tmp_path, capsys
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = traffic_store(tweet_traffic.head(20))  # too few rows: no tests, gauges all the same
    out = tmp_path / "out"
    code = main(
        [
            "drift",
            "--store",
            url,
            "--bundle",
            str(drift_bundle_dir),
            "--output-dir",
            str(out),
            "--no-workspace",
            "--pushgateway",
            f"http://127.0.0.1:{port}",
        ]
    )
    assert code == 0
    assert "pushgateway: not pushed:" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["pushgateway"]["error"]
    assert (out / "drift.prom").is_file()


def test_times_are_iso_8601_or_a_duration_back_from_now() -> None:
    from datetime import datetime, timedelta

    from textops.components.common.errors import DriftInputError
    from textops.components.monitor.drift_job import parse_moment

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_moment("24h", now) == now - timedelta(hours=24)
    assert parse_moment("30m", now) == now - timedelta(minutes=30)
    assert parse_moment("1.5d", now) == now - timedelta(days=1.5)
    assert parse_moment("2026-05-01T10:00:00Z") == now - timedelta(hours=2)
    # A naive time is UTC, as the store takes it.
    assert parse_moment("2026-05-01T10:00:00") == now - timedelta(hours=2)
    with pytest.raises(DriftInputError, match="ISO 8601"):
        parse_moment("last tuesday")


def test_tweets_load_from_the_installed_package() -> None:
    from textops.components.common.errors import DataError
    from textops.components.monitor.shifted_traffic import load_tweets

    tweets = load_tweets(500, seed=3, sentiments=("negative", "positive"), min_confidence=0.6)
    assert len(tweets) == 500 and list(tweets.columns) == ["text", "label", "annotator_confidence"]
    assert set(tweets["label"]) == {"negative", "positive"}
    assert (tweets["annotator_confidence"] >= 0.6).all() and (tweets["text"].str.len() > 0).all()
    assert load_tweets(500, seed=3, sentiments=("negative", "positive"), min_confidence=0.6).equals(
        tweets
    )
    everything = load_tweets()
    assert set(everything["label"]) == {"negative", "neutral", "positive"}
    with pytest.raises(DataError, match="only"):
        load_tweets(len(everything) + 1)
