"""`champion_url` against the real predictor: the evaluate step scores the model in production
through the V2 route of `textops serve` on a loopback port, and the scores are those of the
same bundle scored from a model repository.

The server runs as production runs it, with the precision it picks by itself (the INT8 model
when the bundle ships one), on a bundle without and one with model.int8.onnx; the stand-in
servers of tests/unit/test_evaluate_remote.py cover the ways a server can answer badly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest
from kfp import dsl

from tests.integration.conftest import textops_serve
from textops.components.common.bundle import INT8_MODEL_FILE, ModelBundle
from textops.components.deploy.publish import publish_bundle
from textops.components.evaluate.champion import score_champion
from textops.components.evaluate.component import evaluate_model
from textops.components.evaluate.gate import ChampionResult

if TYPE_CHECKING:
    from tests.integration.conftest import ServeProcess, StartServer

pytestmark = pytest.mark.integration

MODEL_NAME = "textops-classifier"
#: The version the server reports; a repository's first version is 1, so the two differ.
SERVED_VERSION = "3"
MAX_REGRESSION = 0.01


@pytest.fixture(scope="module", params=["tiny_bundle_dir", "int8_bundle_dir"])
def bundle(request: pytest.FixtureRequest) -> Path:
    """The champion's bundle: fp32 only, and one that ships model.int8.onnx too."""
    path: Path = request.getfixturevalue(request.param)
    return path


@pytest.fixture(scope="module")
def predictor(
    bundle: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """`textops serve` on the bundle, with the model's name and version, serving the graph
    evaluate scores a local champion with (`ModelBundle.serving_precision`): without
    `--variant` it would serve the variant fastest on this machine, whose answers may differ
    from that graph's within its allowance, and this test compares the two paths exactly."""
    variant = ModelBundle(bundle).serving_precision
    command = [*textops_serve(bundle, MODEL_NAME, SERVED_VERSION), "--variant", variant]
    log = tmp_path_factory.mktemp("champion-predictor") / "server.log"
    running = serve_process(command, log, model=MODEL_NAME)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def test_split(tiny_splits: dict[str, Path]) -> pd.DataFrame:
    return pd.read_parquet(tiny_splits["test"])


@pytest.fixture(scope="module")
def local_champion(
    bundle: Path, test_split: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> ChampionResult:
    """The same bundle, published to a repository and scored from there."""
    repository = tmp_path_factory.mktemp("champion-repository") / "models"
    publish_bundle(bundle, repository, MODEL_NAME)
    labels = ("negative", "positive")
    texts, truth = test_split["text"].tolist(), test_split["label"].tolist()
    result = score_champion(repository, MODEL_NAME, texts, truth, labels)
    assert result.status == "scored", result.error
    return result


def test_the_served_champion_scores_as_the_same_bundle_does_locally(
    bundle: Path,
    predictor: ServeProcess,
    local_champion: ChampionResult,
    test_split: pd.DataFrame,
    tmp_path: Path,
) -> None:
    # The server runs what production runs: the INT8 model whenever the bundle ships one.
    parameters = httpx.get(f"{predictor.url}/v2/models/{MODEL_NAME}").json()["parameters"]
    assert parameters["precision"] == ("int8" if (bundle / INT8_MODEL_FILE).is_file() else "fp32")
    texts, truth = test_split["text"].tolist(), test_split["label"].tolist()

    served = score_champion(
        tmp_path / "no-repository",
        MODEL_NAME,
        texts,
        truth,
        ("negative", "positive"),
        champion_url=predictor.url,
    )

    assert served.status == "scored", served.error
    assert served.scores is not None and local_champion.scores is not None
    assert served.scores.scalars() == pytest.approx(local_champion.scores.scalars(), abs=1e-6)
    assert served.scores.confusion_matrix == local_champion.scores.confusion_matrix
    assert served.labels == local_champion.labels
    assert served.version == int(SERVED_VERSION)
    assert str(served.path) == f"{predictor.url.split('://', 1)[1]}/v2/models/{MODEL_NAME}"


def _artifact(kind: type[dsl.Artifact], path: Path) -> Any:
    return kind(uri=str(path), metadata={})


def test_the_evaluate_step_compares_with_the_served_champion(
    bundle: Path,
    predictor: ServeProcess,
    local_champion: ChampionResult,
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tmp_path: Path,
) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    decision = _artifact(dsl.Artifact, out / "decision")

    # The component's own body, as a pipeline run calls it, with the champion behind its URL
    # and a repository that holds nothing: only the server can have been scored.
    deploy = evaluate_model.python_func(
        model=_artifact(dsl.Model, tiny_model_dir),
        test_data=_artifact(dsl.Dataset, tiny_splits["test"]),
        train_data=_artifact(dsl.Dataset, tiny_splits["train"]),
        validation_data=_artifact(dsl.Dataset, tiny_splits["validation"]),
        # Production traffic held out: here the test texts again, scored at the URL too.
        production_test=_artifact(dsl.Dataset, tiny_splits["test"]),
        model_repository=str(tmp_path / "empty-repository"),
        model_name=MODEL_NAME,
        min_accuracy=0.0,
        min_macro_f1=0.0,
        max_regression=MAX_REGRESSION,
        max_production_regression=1.0,
        min_margin_over_baseline=-1.0,
        enforce_production_labels=True,
        slice_column="",
        behaviour_tests=[],
        metrics=_artifact(dsl.Metrics, out / "metrics"),
        classification_metrics=_artifact(dsl.ClassificationMetrics, out / "classification"),
        report=_artifact(dsl.HTML, out / "report"),
        summary=_artifact(dsl.Markdown, out / "summary"),
        decision=decision,
        champion_url=predictor.url,
        deploy_target="local",
        kserve_namespace="",
    )

    recorded = json.loads((out / "decision").read_text())
    champion = recorded["champion"]
    assert champion["status"] == "scored" and champion["version"] == int(SERVED_VERSION)
    assert local_champion.scores is not None
    # The decision records the champion's headline scores: those of the bundle itself.
    assert champion["scores"] == pytest.approx(local_champion.scores.scalars(), abs=1e-6)
    # The gate judged those scores: its champion check names them and decides on them.
    (check,) = [c for c in recorded["checks"] if c["name"] == "champion"]
    champion_f1 = local_champion.scores.macro_f1
    assert check["reason"].startswith(f"champion v{SERVED_VERSION} macro-F1 {champion_f1:.3f}")
    regression = champion_f1 - recorded["challenger"]["scores"]["macro_f1"]
    assert check["passed"] is (regression <= MAX_REGRESSION + 1e-9)
    assert deploy is check["passed"] and decision.metadata["deploy"] is deploy
    assert f"v{SERVED_VERSION}" in (out / "summary").read_text(encoding="utf-8")
    # On the production texts, the served champion is scored as well, and the gate says so.
    production = recorded["production"]
    assert production["champion"]["scores"] == pytest.approx(champion["scores"], abs=1e-6)
    (check,) = [c for c in recorded["checks"] if c["name"] == "production"]
    assert f"champion v{SERVED_VERSION}" in check["reason"] and check["passed"]
    if not (bundle / INT8_MODEL_FILE).is_file():
        # The champion is the challenger exported, run in fp32: the same model may ship.
        assert deploy is True
