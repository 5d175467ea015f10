"""On a cluster (deploy_target 'kserve'), the validate step holds the data to the labels of the
bundle the InferenceService serves, as it holds them to the local repository's on one machine.

The object store and the Kubernetes API are the fixtures of tests/unit/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Markdown
from kubernetes.client.exceptions import ApiException

from textops.components.common.errors import DataValidationError
from textops.components.common.labels import LabelMap
from textops.components.common.production_model import InferenceServiceTarget, production_labels

MODEL = "textops-classifier"
NAMESPACE = "textops"


def validate_on_cluster(labels: tuple[str, ...], tmp_path: Path) -> None:
    """The validate component's function with deploy_target 'kserve' on 20 rows of `labels`,
    on the `kserve_api` made last."""
    from textops.components.validate.component import validate_data

    data = tmp_path / "data.csv"
    rows = [(f"review number {i} of the shop", labels[i % len(labels)]) for i in range(20)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(data, index=False)
    validate_data.python_func(
        data=str(data),
        data_format="auto",
        text_column="text",
        label_column="label",
        allowed_labels=[],
        min_rows=2,
        min_text_chars=1,
        max_text_chars=2000,
        text_mostly=1.0,
        max_duplicate_share=0.5,
        max_conflicting_label_share=0.5,
        min_class_share=0.0,
        enforce_production_labels=True,
        redact_pii=False,
        model_repository=str(tmp_path / "no-local-repository"),
        model_name=MODEL,
        deploy_target="kserve",
        kserve_namespace=NAMESPACE,
        feedback_max_age_days=0,
        feedback_max_share=0.5,
        feedback_class_balance=False,
        feedback=[],
        validated_data=Dataset(name="validated_data", uri=str(tmp_path / "out" / "data")),
        production_test=Dataset(name="production_test", uri=str(tmp_path / "out" / "test")),
        validation_result=Artifact(name="result", uri=str(tmp_path / "out" / "result")),
        report=HTML(name="report", uri=str(tmp_path / "out" / "report")),
        summary=Markdown(name="summary", uri=str(tmp_path / "out" / "summary")),
    )


def test_the_labels_in_production_are_the_served_bundles(
    tiny_bundle_in_store: str, kserve_api: Callable[[Any], Any], tmp_path: Path
) -> None:
    served = InferenceServiceTarget(NAMESPACE, kserve_api(tiny_bundle_in_store))
    labels = production_labels(MODEL, served, tmp_path)
    assert labels == LabelMap(("negative", "positive"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]
    missing = kserve_api(ApiException(status=404, reason="Not Found"))
    assert production_labels(MODEL, InferenceServiceTarget(NAMESPACE, missing), tmp_path) is None


def test_data_with_other_labels_than_the_served_model_stops_the_run(
    tiny_bundle_in_store: str,
    kserve_api: Callable[[Any], Any],
    tmp_path: Path,
) -> None:
    kserve_api(tiny_bundle_in_store)
    validate_on_cluster(("negative", "positive"), tmp_path)
    with pytest.raises(DataValidationError, match="the served model predicts"):
        validate_on_cluster(("neg", "pos"), tmp_path)


def test_the_first_deployment_may_choose_its_labels(
    kserve_api: Callable[[Any], Any], tmp_path: Path
) -> None:
    kserve_api(ApiException(status=404, reason="Not Found"))
    validate_on_cluster(("neg", "pos"), tmp_path)
    assert (tmp_path / "out" / "data").exists()
