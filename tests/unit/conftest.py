"""Fixtures shared by the unit tests: an object store and a cluster's InferenceService API.

The object store is fsspec's in-memory filesystem (`memory://`), read through the same
`url_to_fs` calls that read `s3://` in a cluster; the Kubernetes API is an autospec of the
real `CustomObjectsApi`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import fsspec
import pytest
from kubernetes.client import CustomObjectsApi

_UPLOADS = itertools.count()


@pytest.fixture
def in_object_store() -> Iterator[Callable[[Path], str]]:
    """A function uploading a directory to the in-memory object store; it returns its URI.
    What was uploaded is removed after the test."""
    fs = fsspec.filesystem("memory")
    roots: list[str] = []

    def upload(directory: Path) -> str:
        root = f"/pipeline-root-{next(_UPLOADS)}"
        fs.put(str(directory), f"{root}/bundle", recursive=True)
        roots.append(root)
        return f"memory://{root}/bundle"

    yield upload
    for root in roots:
        fs.rm(root, recursive=True)


@pytest.fixture
def kserve_api() -> Callable[[Any], Any]:
    """A function giving a `CustomObjectsApi` autospec whose InferenceService read returns
    `answer`: an InferenceService (a mapping), one serving a storageUri (a string), or an
    exception it raises."""

    def api(answer: Any) -> Any:
        fake = mock.create_autospec(CustomObjectsApi, instance=True)
        if isinstance(answer, Exception):
            fake.get_namespaced_custom_object.side_effect = answer
        elif isinstance(answer, str):
            fake.get_namespaced_custom_object.return_value = {
                "metadata": {"name": "textops-classifier"},
                "spec": {"predictor": {"model": {"storageUri": answer}}},
            }
        else:
            fake.get_namespaced_custom_object.return_value = answer
        return fake

    return api
