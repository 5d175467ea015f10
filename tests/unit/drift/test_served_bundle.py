"""The bundle a drift check compares with on a cluster: the one the InferenceService serves,
fetched from the object store.

The object store and the Kubernetes API are the fixtures of tests/unit/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kfp.dsl import HTML, Artifact, Metrics
from kubernetes.client.exceptions import ApiException

from tests.s3_server import S3Bucket
from textops.components.common.bundle import MODEL_FILE, REQUIRED_FILES
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.production_model import (
    InferenceServiceTarget,
    ProductionBundle,
    fetch_bundle_files,
    production_bundle,
)
from textops.components.monitor.drift_job import DRIFT_FILES
from textops.pipelines.cli import main

NAMESPACE = "textops"
MODEL = "textops-classifier"


@pytest.fixture
def object_store(drift_bundle_dir: Path, in_object_store: Callable[[Path], str]) -> str:
    """The drift bundle uploaded to the S3 object store; its URI."""
    return in_object_store(drift_bundle_dir)


def test_only_the_files_the_drift_job_reads_are_copied(object_store: str, tmp_path: Path) -> None:
    target = fetch_bundle_files(object_store, tmp_path / "copy", DRIFT_FILES)
    assert sorted(p.name for p in target.iterdir()) == sorted(DRIFT_FILES)
    assert MODEL_FILE not in DRIFT_FILES


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("s3://{bucket}/nowhere/bundle", ModelNotFoundError, "nothing is at s3://{bucket}/nowhere"),
        ("pvc://models/textops/1", ConfigError, "mount the claim in the drift step"),
        ("gs://bucket/bundle", ConfigError, "install gcsfs"),
        ("nosuchscheme://bucket/bundle", ConfigError, "cannot read the bundle"),
    ],
)
def test_a_bundle_that_cannot_be_fetched_says_why(
    uri: str, error: type[Exception], message: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message.format(bucket=s3_bucket.name)):
        fetch_bundle_files(uri.format(bucket=s3_bucket.name), tmp_path / "copy", DRIFT_FILES)


def test_an_incomplete_bundle_in_the_store_is_refused(
    object_store: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    s3_bucket.fs.rm(object_store.removeprefix("s3://") + "/" + MODEL_FILE)
    with pytest.raises(ModelNotFoundError, match=f"incomplete: missing {MODEL_FILE}"):
        fetch_bundle_files(object_store, tmp_path / "copy", DRIFT_FILES)
    assert MODEL_FILE in REQUIRED_FILES


def served(api: Any) -> ProductionBundle | None:
    """The bundle in production on the InferenceService that `api` answers for."""
    return production_bundle(MODEL, InferenceServiceTarget(NAMESPACE, api))


def test_the_served_bundle_is_the_latest_one_unless_a_canary_runs(
    kserve_api: Callable[[Any], Any], inference_service: Callable[..., Any]
) -> None:
    api = kserve_api(inference_service("s3://root/2/bundle", version=2))
    assert served(api) == ProductionBundle("s3://root/2/bundle", 2)
    api.get_namespaced_custom_object.assert_called_once_with(
        "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL
    )
    canary = kserve_api(
        inference_service("s3://root/3/bundle", version=3, canary=10, previous="s3://root/2/bundle")
    )
    assert served(canary) == ProductionBundle("s3://root/2/bundle", None)
    promoted = kserve_api(
        inference_service("s3://root/3/bundle", version=3, canary=100, previous="s3://root/2/b")
    )
    assert production_bundle(
        MODEL, InferenceServiceTarget(NAMESPACE, promoted)
    ) == ProductionBundle("s3://root/3/bundle", 3)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (ApiException(status=403, reason="Forbidden"), ConfigError, "needs get on"),
        ({"metadata": {"name": MODEL}, "spec": {}}, ModelNotFoundError, "names no storageUri"),
    ],
)
def test_an_unreadable_served_bundle_says_why(
    answer: Any, error: type[Exception], message: str, kserve_api: Callable[[Any], Any]
) -> None:
    with pytest.raises(error, match=message):
        served(kserve_api(answer))


def test_no_inference_service_means_nothing_is_served(kserve_api: Callable[[Any], Any]) -> None:
    missing = kserve_api(ApiException(status=404, reason="Not Found"))
    assert served(missing) is None


def run_drift_step(store_url: str, out: Path) -> bool:
    """The drift component's function with deploy_target 'kserve', on the `kserve_api` made last."""
    from textops.components.monitor.component import detect_drift

    drifted: bool = detect_drift.python_func(
        store_url=store_url,
        model_repository=str(out / "no-local-repository"),
        model_name=MODEL,
        deploy_target="kserve",
        kserve_namespace=NAMESPACE,
        bundle="",
        since="",
        until="",
        last=0,
        min_window_rows=200,
        family_alpha=0.05,
        drift_share=0.5,
        min_labelled_rows=100,
        max_accuracy_drop=0.05,
        max_macro_f1_drop=0.05,
        workspace="",
        pushgateway="",
        report=HTML(name="report", uri=str(out / "report")),
        summary=Artifact(name="summary", uri=str(out / "summary")),
        metrics=Metrics(name="metrics", uri=str(out / "metrics")),
    )
    return drifted


def test_the_drift_step_compares_with_the_bundle_kserve_serves(
    object_store: str,
    kserve_api: Callable[[Any], Any],
    held_out_traffic: Any,
    traffic_store: Any,
    tmp_path: Path,
) -> None:
    url = traffic_store(held_out_traffic.head(250))
    api = kserve_api(object_store)
    assert run_drift_step(url, tmp_path) is False
    written = json.loads((tmp_path / "summary").read_text())
    assert written["status"] == "no_drift" and written["window_rows"] == 250
    assert written["bundle"] == object_store
    api.get_namespaced_custom_object.assert_called_once()


def test_the_drift_step_without_an_inference_service_says_what_to_do(
    kserve_api: Callable[[Any], Any],
    held_out_traffic: Any,
    traffic_store: Any,
    tmp_path: Path,
) -> None:
    url = traffic_store(held_out_traffic.head(250))
    kserve_api(ApiException(status=404, reason="Not Found"))
    with pytest.raises(ModelNotFoundError, match="no InferenceService 'textops-classifier'"):
        run_drift_step(url, tmp_path)


def test_textops_drift_takes_a_bundle_uri(
    object_store: str, tweet_traffic: Any, tmp_path: Path
) -> None:
    window = tmp_path / "window.csv"
    tweet_traffic.head(250).to_csv(window, index=False)
    out = tmp_path / "out"
    code = main(
        [
            *("drift", "--bundle", object_store, "--window-file", str(window)),
            *("--output-dir", str(out), "--no-workspace"),
        ]
    )
    assert code == 4
    assert json.loads((out / "summary.json").read_text())["bundle"] == object_store
