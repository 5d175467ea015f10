"""Shared fixtures: a tiny random classifier, small splits of the sample data, its bundle, and
an S3 object store.

Everything is built offline in a few seconds, once per session: the base model's real
tokenizer with a 2-layer, 32-wide BERT that is random but deterministic. The object store is a
real S3 protocol server on a loopback port (tests/s3_server.py).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from tests.s3_server import S3Bucket, open_bucket, remove_bucket, running_s3_server
from textops.components.common.config import resolve_base_model, sample_data_path
from textops.components.common.labels import LabelMap
from textops.components.common.settings import DEFAULT_BASE_MODEL

if TYPE_CHECKING:
    from textops.components.export.onnx_export import ExportResult

#: The tiny model's classes, in output order (the sample data's labels).
TINY_LABELS = LabelMap(("negative", "positive"))
#: Tokens kept per text by the tiny model; short, so truncation is exercised.
TINY_MAX_SEQ_LENGTH = 32
#: Rows of each split written by `tiny_splits`.
TINY_SPLIT_ROWS = {"train": 120, "validation": 40, "test": 40}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train-step output directory: random 2-layer BERT, the base tokenizer, labels.json."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        # Far wider than the usual 0.02, so the random model's outputs depend on the text:
        # predictions vary across the sample data and no margin comes near a float-noise tie.
        initializer_range=0.5,
        id2label=dict(enumerate(TINY_LABELS.names)),
        label2id={name: i for i, name in enumerate(TINY_LABELS.names)},
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()

    directory = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(directory)
    tokenizer.model_max_length = TINY_MAX_SEQ_LENGTH
    tokenizer.save_pretrained(directory)
    TINY_LABELS.save(directory / "labels.json")
    return directory


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Parquet splits `train`, `validation`, `test` of the sample data (text, label, label_id)."""
    frame = pd.read_csv(sample_data_path(), dtype=str)
    frame = frame.sample(n=sum(TINY_SPLIT_ROWS.values()), random_state=0).reset_index(drop=True)
    frame["label_id"] = frame["label"].map(TINY_LABELS.index).astype("int32")
    directory = tmp_path_factory.mktemp("tiny-splits")
    paths: dict[str, Path] = {}
    start = 0
    for split, rows in TINY_SPLIT_ROWS.items():
        paths[split] = directory / f"{split}.parquet"
        part = frame.iloc[start : start + rows][["text", "label", "label_id"]]
        part.reset_index(drop=True).to_parquet(paths[split], index=False)
        start += rows
    return paths


@pytest.fixture(scope="session")
def tiny_training_metadata() -> dict[str, Any]:
    """Train-artifact metadata for `tiny_model_dir`, floats where KFP turns ints into floats."""
    return {
        "base_model": DEFAULT_BASE_MODEL,
        "data_fingerprint": "sha256:tiny-test-splits",
        "max_seq_length": float(TINY_MAX_SEQ_LENGTH),
        "epochs": 1,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "seed": 7,
    }


@pytest.fixture(scope="session")
def export_tiny(
    tiny_splits: dict[str, Path],
) -> Callable[[Path, dict[str, Any], Path], ExportResult]:
    """`export_bundle` on the tiny splits: call it with (model_dir, training, bundle_dir)."""
    from textops.components.export.onnx_export import export_bundle

    def export(model_dir: Path, training: dict[str, Any], bundle_dir: Path) -> ExportResult:
        return export_bundle(
            model_dir=model_dir,
            validation_path=tiny_splits["validation"],
            reference_source_path=tiny_splits["train"],
            training=training,
            evaluation={"accuracy": 0.5, "macro_f1": 0.4},
            bundle_dir=bundle_dir,
        )

    return export


@pytest.fixture(scope="session")
def tiny_export(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    export_tiny: Callable[[Path, dict[str, Any], Path], ExportResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> ExportResult:
    """`export_bundle`'s result for the tiny model; shared by the session, so never modify it."""
    return export_tiny(
        tiny_model_dir, tiny_training_metadata, tmp_path_factory.mktemp("tiny-export") / "bundle"
    )


@pytest.fixture(scope="session")
def tiny_bundle_dir(tiny_export: ExportResult) -> Path:
    """A complete model bundle of the tiny model, shared by the session: copy it to modify it."""
    return tiny_export.bundle_dir


@pytest.fixture(scope="session")
def int8_bundle_dir(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    export_tiny: Callable[[Path, dict[str, Any], Path], ExportResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A bundle of the tiny model whose INT8 model ships (`tiny_bundle_dir` has none: a random
    model loses more than the allowance), exported with an allowance wide enough for it.
    Shared by the session: copy it to modify it."""
    from textops.components.export import parity

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parity, "INT8_MAX_LOSS_POINTS", 100.0)
        result = export_tiny(
            tiny_model_dir,
            tiny_training_metadata,
            tmp_path_factory.mktemp("int8-export") / "bundle",
        )
    return result.bundle_dir


def run_textops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `textops` command of this environment, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "textops.pipelines", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.fixture(scope="session")
def textops_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_textops`, for tests: call it with the command's arguments."""
    return run_textops


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The main job, `textops run` with every default on the sample data: (output dir, stdout).

    It fine-tunes the real base model (a few minutes on two cores), once per session.
    """
    output = tmp_path_factory.mktemp("sample-run")
    result = run_textops("run", "--output-dir", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, result.stdout


@pytest.fixture(scope="session")
def sample_bundle_dir(sample_run: tuple[Path, str]) -> Path:
    """The bundle the main job published (version 1 of textops-classifier)."""
    return sample_run[0] / "models" / "textops-classifier" / "1"


def _tree_digest(path: Path) -> str:
    """One hash over every name (files and directories) and every file's bytes below `path`."""
    digest = hashlib.sha256()
    for entry in sorted(path.rglob("*")):
        digest.update(str(entry.relative_to(path)).encode())
        if entry.is_file():
            digest.update(entry.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[Path], str]:
    """A digest of a directory tree, to prove that something was left byte for byte."""
    return _tree_digest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 protocol server (moto's server mode) on a loopback port, for the session; its
    endpoint URL."""
    with running_s3_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on the S3 server, and the artifact store's variables set for it as a pod
    has them, so `s3://` URIs reach it; removed after the test."""
    bucket = open_bucket(s3_endpoint, monkeypatch)
    yield bucket
    remove_bucket(bucket)
