"""The champion is scored with the model file the predictor serves by default: the gate judges
the model production answers with, whether it is read from a repository, an InferenceService's
bundle or the server itself (tests/integration/test_champion_url.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from textops.components.common.bundle import (
    INT8_MODEL_FILE,
    MODEL_FILE,
    ModelBundle,
    write_metadata,
)
from textops.components.evaluate.champion import load_champion
from textops.components.serve.settings import choose_precision


@pytest.fixture
def fp32_only_bundle(int8_bundle_dir: Path, tmp_path: Path) -> Path:
    """The INT8 bundle without its INT8 model, as export leaves it when INT8 loses too much."""
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle_dir, bundle)
    (bundle / INT8_MODEL_FILE).unlink()
    # Re-record the file hashes, so that the bundle verifies as exported.
    fields = ModelBundle.open(bundle).metadata
    for derived in ("files", "file_bytes", "textops_version"):
        fields.pop(derived, None)
    write_metadata(bundle, fields)
    assert ModelBundle.open(bundle).verify_hashes() == []
    return bundle


@pytest.mark.parametrize(
    ("which", "precision", "model_file"),
    [("int8_bundle_dir", "int8", INT8_MODEL_FILE), ("fp32_only_bundle", "fp32", MODEL_FILE)],
)
def test_the_champion_runs_what_the_predictor_serves_by_default(
    request: pytest.FixtureRequest, which: str, precision: str, model_file: str
) -> None:
    path: Path = request.getfixturevalue(which)
    bundle = ModelBundle.open(path)

    assert bundle.serving_precision == precision
    # The predictor's own rule, with no --precision, agrees.
    assert choose_precision(path, None) == precision
    assert load_champion(path).model_path == path / model_file
