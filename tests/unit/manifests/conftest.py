"""Rendering the kustomize manifests for the tests in this folder.

`kubectl kustomize` is run once per kustomization per session (client side only, no cluster).
Without kubectl the tests that need it fail, saying so, rather than skip: a manifest check that
quietly did not run has checked nothing. The KServe schemas they check against are vendored in
tests/reference.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]

Object = dict[str, Any]


class Manifests:
    """The repository's manifests/ folder, rendered on demand."""

    root = ROOT
    path = ROOT / "manifests"

    @functools.cache  # noqa: B019 - one instance per session; the cache is the point
    def render(self, kustomization: str) -> tuple[Object, ...]:
        """The objects `kubectl kustomize manifests/<kustomization>` prints."""
        result = subprocess.run(
            ["kubectl", "kustomize", str(self.path / kustomization)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"kubectl kustomize {kustomization}:\n{result.stderr}"
        return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)

    @staticmethod
    def only(objects: tuple[Object, ...], kind: str, name: str) -> Object:
        """The one object of this kind and name."""
        found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    @staticmethod
    def containers(obj: Object) -> Iterator[tuple[str, Object]]:
        """Every container an object runs, as (`<component>/<container>`, container)."""
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            for key in ("initContainers", "containers"):
                for container in pod.get(key, []):
                    yield container["name"], container
        elif obj["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
            for container in obj["spec"]["containers"]:
                yield container["name"], container
        elif obj["kind"] == "InferenceService":
            for component, spec in obj["spec"].items():
                if "model" in spec:
                    yield f"{component}/model", spec["model"]
                for container in spec.get("containers", []):
                    yield f"{component}/{container['name']}", container


@pytest.fixture(scope="session")
def manifests() -> Manifests:
    """The manifests, rendered with kubectl; fails, naming it, when kubectl is not installed."""
    if shutil.which("kubectl") is None:
        pytest.fail(
            "kubectl is not installed: the manifests are rendered with `kubectl kustomize` "
            "(client side only, no cluster needed); install kubectl to run these tests"
        )
    return Manifests()
