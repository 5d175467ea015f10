"""How `textops loop` judges the versions it published: on shifted traffic it never trained on.

A held-out part of the replayed tweets (`HELD_OUT_SHARE`) never has its labels posted, so no
feedback snapshot holds it; the first version and the retrained one are scored on it and on
the rows of the first run's test split that the retraining did not train on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.config import TrainingConfig

if TYPE_CHECKING:
    import pandas as pd

    from textops.components.common.model_repository import PublishedVersion
    from textops.pipelines.local import LocalRunResult

#: Share of the shifted traffic whose labels are never posted: the models are scored on it.
HELD_OUT_SHARE = 1 / 3


@dataclass(frozen=True)
class VersionScores:
    """A published version's accuracy on the held-out tweets and the original test split."""

    version: int
    held_out_shifted: float
    original_test: float


@dataclass(frozen=True)
class Comparison:
    """The versions the loop published, scored on the same held-out rows.

    Attributes:
        scores: The first run's version, then the retrained one when it was published.
        held_out_rows: Held-out tweets with a label the model knows.
        original_test_rows: Rows of the first version's test split no version trained on.
    """

    scores: list[VersionScores]
    held_out_rows: int
    original_test_rows: int


def held_out_start(rows: int) -> int:
    """Where the held-out tail of `rows` replayed texts begins (`HELD_OUT_SHARE` of them)."""
    return rows - round(rows * HELD_OUT_SHARE)


def withhold_labels(traffic: pd.DataFrame) -> pd.DataFrame:
    """`traffic` with the labels of its held-out tail blanked, so they are never posted."""
    posted = traffic.copy()
    posted.loc[posted.index[held_out_start(len(traffic)) :], "label"] = ""
    return posted


def held_out_traffic(traffic: pd.DataFrame) -> pd.DataFrame:
    """The held-out tail's texts that have a label the model knows."""
    tail = traffic.iloc[held_out_start(len(traffic)) :]
    return tail[tail["label"] != ""].reset_index(drop=True)


def run_dir(training: LocalRunResult) -> Path:
    """The folder of a finished local run under the pipeline root."""
    # kfp.local lays a run out as <pipeline_root>/<run>/<task>/<output>; the report is one.
    return training.validation_report.parent.parent


def newest_run(pipeline_root: Path) -> Path:
    """The folder of the latest run under `pipeline_root` (kfp.local names them by time)."""
    return max(pipeline_root.glob("textops-training-*"))


def run_test_split(run: Path) -> pd.DataFrame:
    """The test split (text, label) of the run in `run`, which its model never trained on."""
    import pandas as pd

    return pd.read_parquet(run / "preprocess-data" / "test_data", columns=["text", "label"])


def original_test_rows(first: pd.DataFrame, retrained: pd.DataFrame | None) -> pd.DataFrame:
    """The first run's test rows that the retraining did not train on either.

    The retraining splits the base data merged with feedback afresh, so some of the first
    run's test rows land in its training split; only those in its test split too are fair to
    both versions.
    """
    if retrained is None:
        return first
    return first[first["text"].isin(set(retrained["text"]))].reset_index(drop=True)


def score_version(
    version: int, bundle: Path, held_out: pd.DataFrame, original: pd.DataFrame
) -> VersionScores:
    """A published version's accuracy on the held-out tweets and the original test rows."""
    from textops.components.common.onnx_classifier import OnnxClassifier

    classifier = OnnxClassifier.from_bundle(bundle)

    def accuracy(frame: pd.DataFrame) -> float:
        if frame.empty:
            return float("nan")
        predicted = classifier.predict(frame["text"].tolist())
        return sum(p == t for p, t in zip(predicted, frame["label"], strict=True)) / len(frame)

    return VersionScores(version, accuracy(held_out), accuracy(original))


def compare_versions(
    config: TrainingConfig,
    training: LocalRunResult,
    first: PublishedVersion,
    shifted: pd.DataFrame,
) -> Comparison:
    """Score the first run's version and, when one was published, the retrained one on the
    held-out tweets and on the test rows that neither trained on."""
    from textops.components.common.model_repository import current_version

    versions = [first]
    latest = current_version(config.model_repository, config.model_name)
    retrained = None
    if latest is not None and latest.version != first.version:
        versions.append(latest)
        retrained = run_test_split(newest_run(run_dir(training).parent))
    held_out = held_out_traffic(shifted)
    original = original_test_rows(run_test_split(run_dir(training)), retrained)
    scores = [score_version(v.version, v.path, held_out, original) for v in versions]
    return Comparison(scores, len(held_out), len(original))


def accuracy_lines(comparison: Comparison) -> list[str]:
    """Each version's accuracy on the held-out tweets and on the original test rows."""
    scores = comparison.scores

    def row(title: str, values: list[float], what: str) -> str:
        figures = ", ".join(
            f"version {s.version} {value:.3f}" for s, value in zip(scores, values, strict=True)
        )
        return f"  {title:20s}{figures} ({what})"

    return [
        row(
            "held-out tweets:",
            [s.held_out_shifted for s in scores],
            f"{comparison.held_out_rows} shifted texts whose labels were never posted",
        ),
        row(
            "original test:",
            [s.original_test for s in scores],
            f"{comparison.original_test_rows} rows of version {scores[0].version}'s test "
            "split that no version trained on",
        ),
    ]
