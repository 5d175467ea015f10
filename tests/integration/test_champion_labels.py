"""`champion_url` against the real predictor when the label sets differ: the served model's
classes come from its V2 metadata, and a challenger that adds or drops a class is refused
before a single text is sent to the model in production.

`textops serve` runs the tiny bundle (negative, positive) on a loopback port; its
`textops_predictions_total` counter proves that nothing was scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import textops_serve
from textops.components.common.settings import GateSettings
from textops.components.evaluate.champion import score_champion
from textops.components.evaluate.gate import decide
from textops.components.evaluate.scoring import score_model

if TYPE_CHECKING:
    from tests.integration.conftest import ServeProcess, StartServer

pytestmark = pytest.mark.integration

MODEL_NAME = "textops-classifier"
SERVED_VERSION = "5"
SERVED_LABELS = ("negative", "positive")
ENFORCED = GateSettings(
    min_accuracy=0.0, min_macro_f1=0.0, max_regression=0.01, enforce_production_labels=True
)


@pytest.fixture(scope="module")
def predictor(
    tiny_bundle_dir: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """`textops serve` on the tiny bundle, as production runs it."""
    command = textops_serve(tiny_bundle_dir, MODEL_NAME, SERVED_VERSION)
    log = tmp_path_factory.mktemp("champion-labels") / "server.log"
    running = serve_process(command, log, model=MODEL_NAME)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def test_split(tiny_splits: dict[str, Path]) -> pd.DataFrame:
    return pd.read_parquet(tiny_splits["test"])


def texts_scored(predictor: ServeProcess) -> float:
    """How many texts the server has classified, by its own counter."""
    metrics = httpx.get(f"{predictor.url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        if family.name == "textops_predictions":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def test_the_metadata_names_the_served_classes(predictor: ServeProcess) -> None:
    metadata = httpx.get(f"{predictor.url}/v2/models/{MODEL_NAME}", timeout=10).json()
    assert json.loads(metadata["parameters"]["labels"]) == list(SERVED_LABELS)


@pytest.mark.parametrize(
    ("challenger_labels", "difference"),
    [
        (("negative", "neutral", "positive"), "the new model adds [neutral]"),
        (("negative",), "the new model drops [positive]"),
        (("negative", "mixed"), "the new model adds [mixed] and drops [positive]"),
    ],
    ids=["class-added", "class-dropped", "class-swapped"],
)
def test_a_challenger_that_adds_or_drops_a_class_is_refused_unscored(
    predictor: ServeProcess,
    test_split: pd.DataFrame,
    tmp_path: Path,
    challenger_labels: tuple[str, ...],
    difference: str,
) -> None:
    scored_before = texts_scored(predictor)

    champion = score_champion(
        tmp_path / "no-repository",
        MODEL_NAME,
        test_split["text"].tolist(),
        test_split["label"].tolist(),
        challenger_labels,
        champion_url=predictor.url,
    )

    assert champion.status == "labels_differ", champion.error
    assert champion.labels == SERVED_LABELS
    assert champion.version == int(SERVED_VERSION)
    assert champion.scores is None
    assert texts_scored(predictor) == scored_before  # refused from the metadata alone
    # The gate's refusal names both sets and what differs between them.
    # A challenger of those classes that gets each of them right once.
    classes = len(challenger_labels)
    challenger = score_model(list(range(classes)), np.eye(classes), challenger_labels)
    decision = decide(ENFORCED, challenger, champion)
    assert not decision.deploy
    reason = decision.reasons[0]
    assert f"production v{SERVED_VERSION} has [negative, positive]" in reason
    assert f"the new model has [{', '.join(challenger_labels)}]: {difference}" in reason


def test_the_same_classes_in_another_order_are_scored(
    predictor: ServeProcess, test_split: pd.DataFrame, tmp_path: Path
) -> None:
    scored_before = texts_scored(predictor)

    champion = score_champion(
        tmp_path / "no-repository",
        MODEL_NAME,
        test_split["text"].tolist(),
        test_split["label"].tolist(),
        SERVED_LABELS[::-1],
        champion_url=predictor.url,
    )

    assert champion.status == "scored", champion.error
    assert champion.scores is not None
    assert texts_scored(predictor) == scored_before + len(test_split)
