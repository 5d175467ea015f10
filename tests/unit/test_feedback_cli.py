"""`textops feedback`: a snapshot from a real SQLite store, and its failures."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.unit.feedback_store import MODEL, labelled_store
from textops.pipelines.cli import build_parser, main
from textops.pipelines.feedback_cli import CONFIG_FLAGS


def test_a_snapshot_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = labelled_store(
        tmp_path / "store.db", [("a fresh complaint", "negative"), ("loved it", "positive")]
    )
    argv = ["feedback", "--store", url, "--output-dir", str(tmp_path / "out")]
    assert main([*argv, "--feedback-test-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert f"snapshot: {tmp_path / 'out' / 'feedback' / MODEL}/" in out
    assert "rows: 2 (2 train, 0 held out for test)" in out
    assert "labels: negative=1, positive=1" in out and "window: " in out
    assert main([*argv, "--feedback-test-fraction", "0"]) == 0
    assert "(already written, reused)" in capsys.readouterr().out


def test_no_labelled_feedback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = labelled_store(tmp_path / "store.db", [])
    assert main(["feedback", "--store", url, "--output-dir", str(tmp_path)]) == 0
    assert "no labelled feedback" in capsys.readouterr().out


def test_an_unreachable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://textops:s3cret@127.0.0.1:1/textops?connect_timeout=2"
    assert main(["feedback", "--store", url, "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot read labelled feedback from the payload store" in err
    assert "textops:***@127.0.0.1" in err and "s3cret" not in err


def test_a_mistyped_store_path_is_not_read_as_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir" / "payloads.db"
    url = f"sqlite:///{missing}"
    assert main(["feedback", "--store", url, "--output-dir", str(tmp_path)]) == 1
    assert f"no payload store at {missing}" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_unknown_labels_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = labelled_store(tmp_path / "store.db", [("meh", "neutral")])
    assert main(["feedback", "--store", url, "--output-dir", str(tmp_path)]) == 2
    assert "neutral" in capsys.readouterr().err
    argv = ["feedback", "--store", url, "--output-dir", str(tmp_path)]
    assert main([*argv, "--feedback-unknown-labels", "drop"]) == 0


def _flags(*command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_the_flags_are_the_run_flags() -> None:
    """Each setting's flag is spelt, typed and described as `textops run`'s."""
    run, feedback = _flags("run"), _flags("feedback")
    for name in CONFIG_FLAGS:
        mine, theirs = feedback[name], run[name]
        assert mine.option_strings == theirs.option_strings, name
        assert (mine.type, mine.choices, mine.help) == (theirs.type, theirs.choices, theirs.help)
    assert "feedback_store_url" not in feedback and "store" in feedback
