"""The `textops` command: its flags, and bad input stopped before any step runs."""

from pathlib import Path

import pytest

from textops.components.common.config import TrainingConfig
from textops.pipelines.cli import CONFIG_FILE_ONLY, build_parser, main


def test_every_config_field_has_a_flag_with_help() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {a.dest: a for a in run._actions}
    assert {"behaviour_tests"} == CONFIG_FILE_ONLY
    for name, field in TrainingConfig.model_fields.items():
        if name in CONFIG_FILE_ONLY:
            continue
        assert name in flags, f"no flag for {name}"
        assert field.description and field.description in (flags[name].help or "")


def test_flags_parse_to_typed_values() -> None:
    args = build_parser().parse_args(
        ["run", "--epochs", "2", "--learning-rate", "3e-5", "--text-column", "body"]
    )
    assert args.epochs == 2
    assert args.learning_rate == pytest.approx(3e-5)
    assert args.text_column == "body"
    assert args.seed is None  # unset flags do not override the config file


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["run", "--data", str(tmp_path / "absent.csv")], capsys)
    assert code == 2
    assert "data file not found" in err and "absent.csv" in err


def test_unknown_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.csv"
    data.write_text("body,label\nhello,a\nbye,b\n")
    code, err = _run(["run", "--data", str(data), "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "no column 'text'" in err and "body" in err


def test_base_model_path_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--base-model", str(tmp_path / "nomodel"), "--output-dir", str(tmp_path)]
    code, err = _run(argv, capsys)
    assert code == 2
    assert "base model directory not found" in err


def test_bad_config_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: -1\n")
    code, err = _run(["run", "--config", str(config)], capsys)
    assert code == 2
    assert "epochs" in err


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.xlsx"
    data.write_text("x")
    code, err = _run(["run", "--data", str(data), "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "cannot tell the format" in err
