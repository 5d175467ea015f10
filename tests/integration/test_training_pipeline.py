"""The whole training pipeline through `textops run` and kfp.local, as a user runs it."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.bundle import ModelBundle
from textops.components.common.config import sample_data_path
from textops.components.common.onnx_classifier import OnnxClassifier

pytestmark = pytest.mark.integration

TextopsCli = Callable[..., subprocess.CompletedProcess[str]]


def test_main_job_publishes_a_bundle_that_clears_the_accuracy_bar(
    sample_run: tuple[Path, str],
) -> None:
    output, stdout = sample_run
    published = output / "models" / "textops-classifier" / "1"
    assert f"published bundle:   {published}" in stdout
    bundle = ModelBundle.open(published)
    assert bundle.verify_hashes() == []
    metadata = bundle.metadata
    assert metadata["metrics"]["accuracy"] >= 0.85
    assert bundle.labels.names == ("negative", "positive")
    current = json.loads((output / "models" / "textops-classifier" / "current.json").read_text())
    assert current["version"] == 1


def test_main_job_reports_exist_where_it_says(sample_run: tuple[Path, str]) -> None:
    _, stdout = sample_run
    for key in ("validation report:", "evaluation report:", "metrics artifact:"):
        line = next(line for line in stdout.splitlines() if key in line)
        assert Path(line.split(key, 1)[1].strip()).is_file(), line


def test_published_onnx_model_reads_sentiment(sample_run: tuple[Path, str]) -> None:
    output, _ = sample_run
    classifier = OnnxClassifier.from_bundle(output / "models" / "textops-classifier" / "1")
    predicted = classifier.predict(
        ["I love this phone, it works great.", "Terrible food and rude staff. Never again."]
    )
    assert list(predicted) == ["positive", "negative"]


def test_bad_data_stops_the_run_and_leaves_the_published_model_alone(
    sample_run: tuple[Path, str],
    tmp_path: Path,
    textops_cli: TextopsCli,
    tree_digest: Callable[[Path], str],
) -> None:
    output, _ = sample_run
    models = output / "models"
    before = tree_digest(models)
    one_class = tmp_path / "one-class.csv"
    one_class.write_text("text,label\n" + "".join(f"text {i},spam\n" for i in range(50)))
    result = textops_cli("run", "--data", str(one_class), "--output-dir", str(output))
    assert result.returncode != 0
    assert "validate" in result.stderr and "spam" in result.stderr, result.stderr[-2000:]
    assert tree_digest(models) == before
    assert not (models / "textops-classifier" / "2").exists()


def test_other_columns_formats_and_string_labels(
    tmp_path: Path, tiny_model_dir: Path, textops_cli: TextopsCli
) -> None:
    """A 3-class task (which site a sentence came from) from a TSV with other column names."""
    frame = pd.read_csv(sample_data_path())
    frame = frame.groupby("source").head(120).rename(columns={"text": "sentence", "source": "site"})
    data = tmp_path / "sites.tsv"
    frame[["sentence", "site"]].to_csv(data, sep="\t", index=False)
    result = textops_cli(
        "run",
        "--data", str(data),
        "--text-column", "sentence",
        "--label-column", "site",
        "--base-model", str(tiny_model_dir),
        "--epochs", "1",
        "--min-macro-f1", "0",  # a random tiny model: this test is about data, not quality
        "--model-name", "site-classifier",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bundle = ModelBundle.open(tmp_path / "out" / "models" / "site-classifier" / "1")
    assert bundle.labels.names == ("amazon", "imdb", "yelp")
    reference = pd.read_parquet(bundle.reference_path)
    assert set(reference["prediction"]) <= {"amazon", "imdb", "yelp"}
