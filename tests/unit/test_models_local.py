"""`textops models` on the local model repository: list, promote, roll back, hot-load.

A real repository in a temporary directory, filled by the deploy step's own `publish_bundle`
with copies of the tiny bundle whose metadata.json carries different scores; the server a
switch hot-loads into is the stand-in of test_deploy_local (the real predictor's test is in
tests/integration/test_models_rollback.py).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_deploy_local import StandInServer
from textops.components.common.model_repository import current_version
from textops.components.deploy.publish import publish_bundle
from textops.components.deploy.served_history import HISTORY_FILE
from textops.pipelines.cli import main

MODEL = "textops-classifier"
SCORES = {1: (0.71, 0.70), 2: (0.82, 0.81), 3: (0.79, 0.77)}


def scored_bundle(tiny_bundle_dir: Path, directory: Path, accuracy: float, f1: float) -> Path:
    """A copy of the tiny bundle whose metadata.json records other scores (metadata.json is
    not among the files it hashes, so the copy still verifies)."""
    bundle = Path(shutil.copytree(tiny_bundle_dir, directory))
    metadata = json.loads((bundle / "metadata.json").read_text())
    metadata["metrics"] = {"accuracy": accuracy, "macro_f1": f1}
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    return bundle


@pytest.fixture
def repository(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """Versions 1, 2 and 3 published in turn: 3 serves."""
    repository = tmp_path / "models"
    for version, (accuracy, f1) in SCORES.items():
        bundle = scored_bundle(tiny_bundle_dir, tmp_path / f"bundle-{version}", accuracy, f1)
        publish_bundle(bundle, repository, MODEL)
    return repository


def textops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def models(
    capsys: pytest.CaptureFixture[str], repository: Path, action: str, *flags: str
) -> tuple[int, str, str]:
    return textops(capsys, "models", action, "--model-repository", str(repository), *flags)


def listed(capsys: pytest.CaptureFixture[str], repository: Path) -> list[dict]:
    code, out, err = models(capsys, repository, "list", "--json")
    assert code == 0, err
    return json.loads(out)


def serving(repository: Path) -> int:
    current = current_version(repository, MODEL)
    assert current is not None
    return current.version


def history(repository: Path) -> list[tuple[int, str]]:
    lines = (repository / MODEL / HISTORY_FILE).read_text().splitlines()
    return [(json.loads(line)["version"], json.loads(line)["via"]) for line in lines]


def test_list_shows_scores_traffic_and_when_each_version_served(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = listed(capsys, repository)

    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [(v["accuracy"], v["macro_f1"]) for v in versions] == [SCORES[3], SCORES[2], SCORES[1]]
    assert [v["traffic_percent"] for v in versions] == [100, 0, 0]
    assert all(v["created_at"] and v["problem"] is None for v in versions)
    newest, middle, oldest = (v["served"] for v in versions)
    assert [p["to"] for p in newest] == [None]  # serving now
    assert middle[0]["from"] == oldest[0]["to"] and middle[0]["to"] == newest[0]["from"]
    assert [p["via"] for p in (*oldest, *middle, *newest)] == ["publish"] * 3

    code, table, _ = models(capsys, repository, "list")
    assert code == 0
    header, *rows = table.splitlines()[1:]
    assert header.split() == ["VERSION", "TRAFFIC", "ACCURACY", "MACRO_F1", "CREATED", "SERVED"]
    assert rows[0].split()[:4] == ["3", "100%", "0.7900", "0.7700"]
    assert rows[0].endswith("→ now")
    assert rows[2].split()[:4] == ["1", "-", "0.7100", "0.7000"]


def test_rollback_goes_to_the_version_before_and_a_second_run_changes_nothing(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = models(capsys, repository, "rollback")

    assert (code, err) == (0, "")
    assert "rolled back textops-classifier to version 2 (from 3)" in out
    assert serving(repository) == 2
    assert history(repository)[-1] == (2, "rollback")
    pointer = json.loads((repository / MODEL / "current.json").read_text())
    assert pointer["version"] == 2 and pointer["via"] == "rollback"

    code, out, _ = models(capsys, repository, "rollback")

    assert code == 0
    assert "already rolled back to version 2 (from version 3); nothing changed" in out
    assert "--version N" in out
    assert serving(repository) == 2
    assert len(history(repository)) == 4  # three publishes and one rollback
    [three, two, _] = listed(capsys, repository)
    assert three["served"][0]["endedBy"] == "rollback"
    assert [p["via"] for p in two["served"]] == ["publish", "rollback"]
    assert two["traffic_percent"] == 100


def test_rollback_to_a_named_version_and_to_the_one_serving(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = models(capsys, repository, "rollback", "--version", "1")
    assert code == 0 and "to version 1 (from 3)" in out
    assert serving(repository) == 1

    code, out, _ = models(capsys, repository, "rollback", "--version", "1")
    assert code == 0 and "version 1 of textops-classifier is current already" in out
    assert len(history(repository)) == 4


def test_unknown_versions_and_no_previous_version_are_bad_input(
    repository: Path, tiny_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = models(capsys, repository, "rollback", "--version", "9")
    assert code == 2
    assert "has no version 9" in err and "versions: 1, 2, 3" in err

    with pytest.raises(SystemExit) as refused:  # argparse refuses it, with status 2
        models(capsys, repository, "promote", "--version", "0")
    assert refused.value.code == 2 and "positive integer" in capsys.readouterr().err

    alone = tmp_path / "alone"
    publish_bundle(tiny_bundle_dir, alone, MODEL)
    code, _, err = models(capsys, alone, "rollback")
    assert code == 2
    assert "no previous version to roll back to" in err
    assert serving(repository) == 3 and serving(alone) == 1

    code, _, err = models(capsys, tmp_path / "empty", "rollback")
    assert code == 2 and "no version of textops-classifier is published" in err


def test_promote_makes_the_newest_version_current_again(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models(capsys, repository, "rollback", "--version", "1")

    code, out, _ = models(capsys, repository, "promote")
    assert code == 0 and "promoted textops-classifier to version 3 (was 1)" in out
    assert serving(repository) == 3

    code, out, _ = models(capsys, repository, "promote")
    assert code == 0 and "is current already; nothing changed" in out

    code, out, _ = models(capsys, repository, "promote", "--version", "2")
    assert code == 0 and serving(repository) == 2
    assert [via for _, via in history(repository)][-3:] == ["rollback", "promote", "promote"]
    # After a promotion, a rollback goes back to what served before it.
    code, _, _ = models(capsys, repository, "rollback")
    assert code == 0 and serving(repository) == 3


def test_a_damaged_version_is_refused_and_nothing_changes(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (repository / MODEL / "2" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")

    code, _, err = models(capsys, repository, "rollback")

    assert code == 2
    assert "version 2 of textops-classifier cannot serve: model.onnx differ" in err
    assert serving(repository) == 3 and len(history(repository)) == 3


def test_a_repository_from_before_the_history_still_lists_and_starts_one(
    repository: Path, tiny_bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repository / MODEL / HISTORY_FILE).unlink()

    three, two, _ = listed(capsys, repository)
    assert three["traffic_percent"] == 100 and three["served"][0]["via"] == "unknown"
    assert three["served"][0]["from"]  # from current.json's published_at
    assert two["served"] == [] and not two["history_known"]
    code, table, _ = models(capsys, repository, "list")
    assert "? (no history recorded)" in table
    code, _, err = models(capsys, repository, "rollback")
    assert code == 2 and "no previous version" in err

    publish_bundle(tiny_bundle_dir, repository, MODEL)  # version 4

    assert history(repository) == [(3, "unknown"), (4, "publish")]
    code, _, _ = models(capsys, repository, "rollback")
    assert code == 0 and serving(repository) == 3


def test_a_hand_edited_pointer_is_reported_as_unknown(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repository / MODEL / "current.json").write_text(json.dumps({"version": 1}))

    three, _, one = listed(capsys, repository)

    assert one["traffic_percent"] == 100
    assert one["served"][-1]["from"] is None and one["served"][-1]["via"] == "unknown"
    assert three["served"][0]["to"] is None and three["served"][0]["endedBy"] == "unknown"
    _, table, _ = models(capsys, repository, "list")
    assert "→ ?" in table


@pytest.fixture
def server(repository: Path) -> Iterator[StandInServer]:
    server = StandInServer(repository)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_switch_is_hot_loaded_into_the_running_server(
    repository: Path, server: StandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.served == "3"
    flags = ("--serve-url", server.url, "--rollout-timeout-seconds", "2")

    code, out, _ = models(capsys, repository, "rollback", *flags)
    assert code == 0 and f"{server.url} serves version 2" in out
    assert server.served == "2"

    server.on_load = "ignore"
    code, _, err = models(capsys, repository, "promote", *flags)
    assert code == 1  # the switch failed: the server kept the old version
    assert "still serves the old one" in err
    assert serving(repository) == 3

    server.on_load = "swap"
    code, out, _ = models(capsys, repository, "promote", *flags)
    assert code == 0 and "is current already" in out
    assert server.served == "3"  # a server that missed the switch catches up


def test_flags_of_the_other_target_are_refused(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = models(capsys, repository, "list", "--kserve-namespace", "textops")
    assert code == 2 and "add --kserve" in err
    code, _, err = textops(capsys, "models", "rollback", "--kserve", "--serve-url", "http://x")
    assert code == 2 and "leave --serve-url out with --kserve" in err
