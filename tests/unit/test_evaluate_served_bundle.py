"""With deploy_target 'kserve' and no champion_url, the champion is the bundle the
InferenceService serves, fetched from its storageUri and scored as the repository's would be.

The object store and the Kubernetes API are the fixtures of tests/unit/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kubernetes.client.exceptions import ApiException

from tests.s3_server import S3Bucket
from textops.components.common.bundle import MODEL_FILE, TOKENIZER_FILE
from textops.components.deploy.publish import publish_bundle
from textops.components.evaluate.champion import score_champion

MODEL = "textops-classifier"
NAMESPACE = "textops"


@pytest.fixture(scope="module")
def test_split(tiny_splits: dict[str, Path]) -> pd.DataFrame:
    return pd.read_parquet(tiny_splits["test"])


def champion_on_cluster(frame: pd.DataFrame, tmp_path: Path) -> Any:
    """The champion in kserve mode, on the `kserve_api` made last."""
    return score_champion(
        tmp_path / "no-repository",
        MODEL,
        frame["text"].tolist(),
        frame["label"].tolist(),
        ("negative", "positive"),
        kserve_namespace=NAMESPACE,
    )


def test_the_served_bundle_scores_as_the_same_bundle_does_from_the_repository(
    tiny_bundle_in_store: str,
    inference_service: Callable[..., Any],
    kserve_api: Callable[[Any], Any],
    test_split: pd.DataFrame,
    tiny_bundle_dir: Path,
    tmp_path: Path,
) -> None:
    api = kserve_api(inference_service(tiny_bundle_in_store, version=4))
    served = champion_on_cluster(test_split, tmp_path)

    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)
    local = score_champion(
        repository,
        MODEL,
        test_split["text"].tolist(),
        test_split["label"].tolist(),
        ("negative", "positive"),
    )
    assert served.status == local.status == "scored"
    assert served.scores is not None and local.scores is not None
    assert served.scores.scalars() == pytest.approx(local.scores.scalars(), abs=1e-6)
    assert served.version == 4
    assert str(served.path) == tiny_bundle_in_store.split("://", 1)[1]
    api.get_namespaced_custom_object.assert_called_once_with(
        "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL
    )


def test_before_the_first_deployment_there_is_no_champion(
    kserve_api: Callable[[Any], Any],
    test_split: pd.DataFrame,
    tmp_path: Path,
) -> None:
    kserve_api(ApiException(status=404, reason="Not Found"))
    assert champion_on_cluster(test_split, tmp_path).status == "none"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("forbidden", "needs get on inferenceservices"),
        ("incomplete", f"missing {TOKENIZER_FILE}"),
        ("altered", f"{MODEL_FILE} differ"),
    ],
)
def test_a_champion_that_cannot_be_read_is_unreadable_so_the_gate_refuses(
    damage: str,
    message: str,
    tiny_bundle_in_store: str,
    s3_bucket: S3Bucket,
    inference_service: Callable[..., Any],
    kserve_api: Callable[[Any], Any],
    test_split: pd.DataFrame,
    tmp_path: Path,
) -> None:
    store, root = s3_bucket.fs, tiny_bundle_in_store.removeprefix("s3://")
    if damage == "incomplete":
        store.rm(f"{root}/{TOKENIZER_FILE}")
    if damage == "altered":
        store.pipe_file(f"{root}/{MODEL_FILE}", b"not the exported graph")
    kserve_api(
        ApiException(status=403, reason="Forbidden")
        if damage == "forbidden"
        else inference_service(tiny_bundle_in_store, version=2)
    )
    champion = champion_on_cluster(test_split, tmp_path)
    assert champion.status == "unreadable"
    assert message in champion.error
