"""What the predictor serves, from its command line (KServe's parser, extended)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textops.components.common.config import TrainingConfig
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.serve.command import register
from textops.components.serve.settings import (
    ServeSettings,
    bundle_version,
    choose_precision,
    default_model_name,
    resolve_source,
)


def test_default_model_name_follows_the_bundle_folder(tmp_path: Path) -> None:
    assert default_model_name(None) == "textops-classifier"
    # Training's default: `serve --model-repository` finds what `textops run` published.
    assert default_model_name(None) == TrainingConfig().model_name
    assert default_model_name(tmp_path / "models" / "reviews" / "3") == "reviews"
    assert default_model_name(tmp_path / "my-bundle") == "my-bundle"


def test_bundle_version_from_metadata_else_folder(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle-a"
    bundle.mkdir()
    assert bundle_version(bundle) == "bundle-a"  # no metadata.json at all
    (bundle / "metadata.json").write_text(json.dumps({"version": 12}))
    assert bundle_version(bundle) == "12"
    (bundle / "metadata.json").write_text(json.dumps({"created_at": "x"}))
    assert bundle_version(bundle) == "bundle-a"


def test_repository_mode_serves_the_current_version(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    from textops.components.deploy.publish import publish_bundle

    settings = ServeSettings(model_name="m", model_repository=tmp_path / "repo")
    with pytest.raises(ModelNotFoundError, match="no published version of 'm'"):
        resolve_source(settings)
    publish_bundle(tiny_bundle_dir, tmp_path / "repo", "m")
    published = publish_bundle(tiny_bundle_dir, tmp_path / "repo", "m")
    source = resolve_source(settings)
    assert (source.path, source.version) == (published.path, "2")
    assert source.precision == choose_precision(published.path, None)


def test_precision_defaults_to_int8_when_the_bundle_has_it(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, bundle)
    (bundle / "model.int8.onnx").unlink(missing_ok=True)
    assert choose_precision(bundle, None) == "fp32"
    (bundle / "model.int8.onnx").write_bytes(b"")
    assert choose_precision(bundle, None) == "int8"
    assert choose_precision(bundle, "fp32") == "fp32"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --bundle"),
        ({"bundle": Path("a"), "model_repository": Path("b")}, "exactly one of --bundle"),
        ({"bundle": Path("a"), "max_batch_size": 0}, "--max-batch-size must be at least 1"),
        ({"bundle": Path("a"), "intra_op_threads": 0}, "--intra-op-threads"),
        ({"bundle": Path("a"), "max_chars_per_token": 0}, "--max-chars-per-token must be"),
        ({"bundle": Path("a"), "explain_max_texts": 0}, "--explain-max-texts must be"),
        ({"bundle": Path("a"), "explain_max_words": 0}, "--explain-max-words must be"),
        ({"bundle": Path("a"), "explain_concurrency": 0}, "--explain-concurrency must be"),
        ({"bundle": Path("a"), "explain_timeout_seconds": 0}, "--explain-timeout-seconds"),
        ({"bundle": Path("a"), "explain_timeout_seconds": float("nan")}, "--explain-timeout"),
        ({"bundle": Path("a"), "explain_share": 1.5}, "--explain-share must be between"),
        ({"bundle": Path("a"), "explain_share": -0.1}, "--explain-share must be between"),
    ],
)
def test_settings_refuse_contradictions(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeSettings(model_name="m", **kwargs)  # type: ignore[arg-type]


def test_the_parser_extends_kserves_own(tmp_path: Path) -> None:
    from kserve.model_server import parser as kserve_parser

    from textops.components.serve.server import build_parser, settings_from_args

    args = build_parser().parse_args(
        [
            *("--bundle", str(tmp_path / "reviews"), "--http_port", "9000", "--workers", "2"),
            *("--intra-op-threads", "3", "--payload-logger-url", "http://collector/events"),
        ]
    )
    assert (args.http_port, args.workers, args.enable_grpc) == (9000, 2, False)
    settings = settings_from_args(args)
    assert settings.model_name == "reviews"
    assert settings.intra_op_threads == 3
    assert settings.intra_op_spinning is False
    spinning = build_parser().parse_args(["--bundle", "b", "--intra-op-spinning"])
    assert settings_from_args(spinning).intra_op_spinning is True
    assert settings.payload_logger is not None
    assert settings.payload_logger.source == "http://localhost:9000/"
    # Our defaults live in a copy: KServe's parser keeps its own.
    assert kserve_parser.get_default("model_name") == "model"
    assert kserve_parser.get_default("enable_grpc") is True

    repository = build_parser().parse_args(["--model-repository", str(tmp_path), "--workers", "4"])
    chosen = settings_from_args(repository)
    assert chosen.model_name == "textops-classifier"
    assert chosen.intra_op_threads is not None and chosen.intra_op_threads >= 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--bundle", "a", "--model-repository", "b"])


def test_kserves_flags_that_textops_hands_on_take_the_project_spelling_too(
    tmp_path: Path,
) -> None:
    from kserve import context as kserve_context
    from kserve.model_server import parser as kserve_parser

    from textops.components.serve.repository import BundleRepository
    from textops.components.serve.server import TextopsModelServer, build_parser, settings_from_args
    from textops.components.serve.transformer_main import TransformerServer
    from textops.components.serve.transformer_main import build_parser as transformer_parser
    from textops.components.serve.transformer_main import (
        settings_from_args as transformer_settings,
    )

    kserve_spelling = ["--model_name", "reviews", "--http_port", "9000", "--max_threads", "3"]
    project_spelling = ["--model-name", "reviews", "--http-port", "9000", "--max-threads", "3"]
    spelt = [
        build_parser().parse_args(["--bundle", "b", *argv])
        for argv in (kserve_spelling, project_spelling)
    ]
    assert vars(spelt[0]) == vars(spelt[1])
    assert settings_from_args(spelt[1]).model_name == "reviews"
    help_text = build_parser().format_help()
    assert "--model-name MODEL_NAME, --model_name MODEL_NAME" in help_text
    # KServe reads --enable_docs_url from sys.argv when it is imported: only its spelling works.
    assert "--enable-docs-url" not in help_text
    # KServe's own parser keeps its own spellings.
    assert "--model-name" not in kserve_parser.format_help()

    # The model server gets the flags' values, whichever the spelling.
    server = TextopsModelServer(BundleRepository(settings_from_args(spelt[1])), spelt[1])
    assert (server.http_port, server.max_threads) == (9000, 3)

    transformer = transformer_parser().parse_args(
        [
            *("--bundle", str(tmp_path), "--model-name", "reviews"),
            *("--predictor-host", "triton:8000", "--predictor-request-timeout-seconds", "7"),
            "--enable-predictor-health-check",
        ]
    )
    settings, predictor = transformer_settings(transformer)
    assert settings.model_name == "reviews"
    assert (predictor.predictor_host, predictor.timeout) == ("triton:8000", 7)
    assert predictor.predictor_health_check is True
    before = kserve_context.get_predictor_config()
    try:
        TransformerServer(BundleRepository(settings), transformer, predictor)
        # KServe's data plane checks the predictor's health at the address the flags name.
        assert kserve_context.get_predictor_config() is predictor
    finally:
        if before is not None:
            kserve_context.set_predictor_config(before)


def test_the_text_cut_follows_the_models_sequence_length() -> None:
    settings = ServeSettings(model_name="m", bundle=Path("b"), max_chars_per_token=10)
    assert settings.max_text_chars(128) == 1280
    assert settings.max_text_chars(32) == 320


def test_the_cost_limits_come_from_their_flags_with_the_settings_defaults() -> None:
    from textops.components.serve.server import build_parser, settings_from_args
    from textops.components.serve.transformer_main import build_parser as transformer_parser

    defaults = settings_from_args(build_parser().parse_args(["--bundle", "b"]))
    bare = ServeSettings(model_name="m", bundle=Path("b"))
    names = (
        "max_chars_per_token",
        "explain_max_texts",
        "explain_max_words",
        "explain_concurrency",
        "explain_timeout_seconds",
        "explain_share",
    )
    assert {n: getattr(defaults, n) for n in names} == {n: getattr(bare, n) for n in names}

    args = build_parser().parse_args(
        [
            *("--bundle", "b", "--max-chars-per-token", "6", "--explain-max-texts", "3"),
            *("--explain-max-words", "5", "--explain-concurrency", "4"),
            *("--explain-timeout-seconds", "2.5", "--explain-share", "0.25"),
        ]
    )
    chosen = settings_from_args(args)
    assert {n: getattr(chosen, n) for n in names} == {
        "max_chars_per_token": 6,
        "explain_max_texts": 3,
        "explain_max_words": 5,
        "explain_concurrency": 4,
        "explain_timeout_seconds": 2.5,
        "explain_share": 0.25,
    }
    # The transformer tokenizes too, so it cuts texts by the same flag.
    transformer = transformer_parser().parse_args(
        ["--bundle", "b", "--predictor_host", "h", "--max-chars-per-token", "7"]
    )
    assert transformer.max_chars_per_token == 7
    help_text = build_parser().format_help()
    for flag in ("--max-chars-per-token", "--explain-timeout-seconds", "--explain-share"):
        assert flag in help_text


def test_textops_serve_hands_every_argument_to_the_predictor() -> None:
    parser = argparse.ArgumentParser(prog="textops")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--bundle", "b", "--http_port", "1", "--help"])
    assert args.serve_args == ["--bundle", "b", "--http_port", "1", "--help"]


def test_registering_textops_serve_imports_neither_kserve_nor_onnxruntime() -> None:
    code = (
        "import argparse, sys; from textops.components.serve.command import register; "
        "register(argparse.ArgumentParser().add_subparsers()); "
        "print('kserve' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_serving_path_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, textops.components.serve.server; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
