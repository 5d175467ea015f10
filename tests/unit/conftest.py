"""Fixtures shared by the unit tests: an object store, a cluster's InferenceService API and a
Kubeflow Pipelines API.

The object store is a bucket on the real S3 protocol server of tests/s3_server.py, read through
the same `url_to_fs` calls and credentials that read `s3://` in a cluster; the Kubernetes API is
an autospec of the real `CustomObjectsApi`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kubernetes.client import CustomObjectsApi

from tests.s3_server import S3Bucket
from tests.unit.kubeflow_api import FakeKubeflow, serve_fake_kubeflow

_UPLOADS = itertools.count()


@pytest.fixture
def in_object_store(s3_bucket: S3Bucket) -> Callable[[Path], str]:
    """A function uploading a directory to the S3 object store; it returns its `s3://` URI."""

    def upload(directory: Path) -> str:
        key = f"pipeline-root-{next(_UPLOADS)}/bundle"
        s3_bucket.fs.put(str(directory), s3_bucket.path(key), recursive=True)
        return s3_bucket.url(key)

    return upload


@pytest.fixture
def tiny_bundle_in_store(tiny_bundle_dir: Path, in_object_store: Callable[[Path], str]) -> str:
    """The tiny bundle (labels negative, positive) in the S3 object store; its URI."""
    return in_object_store(tiny_bundle_dir)


def _inference_service(
    storage_uri: str,
    *,
    version: int = 1,
    canary: int | None = None,
    previous: str | None = None,
) -> dict[str, Any]:
    predictor: dict[str, Any] = {"model": {"storageUri": storage_uri}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    annotations = {"textops.dev/model-version": str(version)}
    if previous:
        annotations["textops.dev/previous-storage-uri"] = previous
    return {
        "metadata": {"name": "textops-classifier", "annotations": annotations},
        "spec": {"predictor": predictor},
    }


@pytest.fixture
def inference_service() -> Callable[..., dict[str, Any]]:
    """A function writing the InferenceService the deploy step leaves: its storageUri, and
    `version`, `canary` (canaryTrafficPercent) and `previous` (the previous storageUri)."""
    return _inference_service


@pytest.fixture
def kserve_api(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Any]:
    """A function giving a `CustomObjectsApi` autospec whose InferenceService read returns
    `answer`: an InferenceService (a mapping), one serving a storageUri (a string, version 1),
    or an exception it raises. The last one made is what `custom_objects_api()` returns, as
    the cluster's API, to the components that call it."""

    def api(answer: Any) -> Any:
        fake = mock.create_autospec(CustomObjectsApi, instance=True)
        if isinstance(answer, Exception):
            fake.get_namespaced_custom_object.side_effect = answer
        else:
            isvc = _inference_service(answer) if isinstance(answer, str) else answer
            fake.get_namespaced_custom_object.return_value = isvc
        monkeypatch.setattr(
            "textops.components.common.kubernetes_api.custom_objects_api", lambda: fake
        )
        return fake

    return api


@pytest.fixture
def kubeflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeflow]:
    """A fresh fake Kubeflow Pipelines API on a free loopback port (tests/unit/kubeflow_api.py),
    for the real `kfp.Client`; `.url` is its address."""
    from kfp.client import client as kfp_client

    # kfp keeps a context file in the home directory; keep the user's out of the tests.
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for variable in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    with serve_fake_kubeflow() as fake:
        yield fake
