"""manifests/pipeline-rbac grants the pipeline exactly `PIPELINE_PERMISSIONS`, where it acts.

tests/unit/test_kubernetes_permissions.py holds the table to the calls the code makes; here the
rendered Roles are held to the table: each scope's verbs, and no more, in a Role in that
scope's namespace, bound to the service account the pipeline runs as. The namespaces and the
account come from pipeline.env alone, so the test renders copies with other names too, and
the copy the command in docs/operations.md writes. Rendering runs the real `kubectl kustomize`
(see conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from textops.components.common.kubernetes_api import PIPELINE_PERMISSIONS

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
RBAC = "pipeline-rbac"
IDENTITY = MANIFESTS / RBAC / "pipeline.env"
#: Which name in pipeline.env is each scope's namespace.
SCOPE_NAMESPACE = {"kserve_namespace": "kserveNamespace", "pipeline": "pipelineNamespace"}
RBAC_GROUP = "rbac.authorization.k8s.io"


def read_identity(text: str) -> dict[str, str]:
    """The names a pipeline.env sets (kustomize's env-file format: KEY=VALUE lines)."""
    names = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            names[key.strip()] = value.strip()
    return names


def render(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {folder}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in role["rules"]:
        assert not rule.get("nonResourceURLs") and not rule.get("resourceNames"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"a wildcard in {rule}"
                    granted.add((group, resource, verb))
    return granted


def check_grants(objects: list[dict[str, Any]], identity: dict[str, str]) -> None:
    """The Roles grant each scope's permissions in its namespace, and no more, bound to the
    pipeline's service account."""
    assert {o["kind"] for o in objects} == {"Role", "RoleBinding"}
    roles = [o for o in objects if o["kind"] == "Role"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    expected: dict[str, set[tuple[str, str, str]]] = {}
    for permission in PIPELINE_PERMISSIONS:
        namespace = identity[SCOPE_NAMESPACE[permission.scope]]
        expected.setdefault(namespace, set()).add(
            (permission.group, permission.resource, permission.verb)
        )
    granted: dict[str, set[tuple[str, str, str]]] = {}
    for role in roles:
        granted.setdefault(role["metadata"]["namespace"], set()).update(_granted(role))
    assert granted == expected
    subject = {
        "kind": "ServiceAccount",
        "name": identity["serviceAccount"],
        "namespace": identity["pipelineNamespace"],
    }
    for role in roles:
        name, namespace = role["metadata"]["name"], role["metadata"]["namespace"]
        (binding,) = [
            b
            for b in bindings
            if b["metadata"]["namespace"] == namespace
            and b["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name}
        ]
        assert binding["subjects"] == [subject], binding["metadata"]["name"]
    assert len(bindings) == len(roles)
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "textops"


@pytest.mark.usefixtures("manifests")  # fails when kubectl is not installed
def test_the_roles_grant_exactly_the_pipelines_permissions() -> None:
    check_grants(render(MANIFESTS / RBAC), read_identity(IDENTITY.read_text()))


def test_the_default_identity_is_a_standalone_kubeflow_pipelines() -> None:
    """pipeline-runner in kubeflow, and the InferenceService where the overlays put it."""
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    assert read_identity(IDENTITY.read_text()) == {
        "pipelineNamespace": "kubeflow",
        "serviceAccount": "pipeline-runner",
        "kserveNamespace": base["namespace"],
    }


@pytest.mark.usefixtures("manifests")
@pytest.mark.parametrize(
    "identity",
    [
        # A profile namespace in a multi-user Kubeflow.
        {
            "pipelineNamespace": "team-a",
            "serviceAccount": "default-editor",
            "kserveNamespace": "ml",
        },
        # kserve_namespace empty: the InferenceService is in the pipeline's own namespace.
        {
            "pipelineNamespace": "textops",
            "serviceAccount": "textops-runs",
            "kserveNamespace": "textops",
        },
    ],
)
def test_pipeline_env_alone_places_the_roles(identity: dict[str, str], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(MANIFESTS / RBAC, tmp_path / RBAC))
    (folder / IDENTITY.name).write_text("".join(f"{k}={v}\n" for k, v in identity.items()))
    check_grants(render(folder), identity)


def _documented_command(document: Path) -> str:
    """The command a document gives to write pipeline.env (a shell here-document)."""
    text = document.read_text()
    found = re.findall(
        r"^cat > manifests/pipeline-rbac/pipeline\.env <<EOF\n.*?^EOF$", text, re.M | re.S
    )
    assert len(found) == 1, f"{document.name} should write pipeline.env once"
    return str(found[0])


@pytest.mark.usefixtures("manifests")
@pytest.mark.parametrize("document", ["docs/operations.md", "manifests/README.md"])
def test_the_documented_commands_set_the_identity(document: str, tmp_path: Path) -> None:
    """The documents' command, run as written in a copy of the checkout, renders Roles for
    the namespace in $PIPELINE_NAMESPACE; both documents then apply the folder."""
    text = (ROOT / document).read_text()
    assert "kubectl apply -k manifests/pipeline-rbac" in text
    shutil.copytree(MANIFESTS / RBAC, tmp_path / "manifests" / RBAC)
    result = subprocess.run(
        ["bash", "-euc", _documented_command(ROOT / document)],
        cwd=tmp_path,
        env={**os.environ, "PIPELINE_NAMESPACE": "team-a"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    identity = read_identity((tmp_path / "manifests" / RBAC / IDENTITY.name).read_text())
    assert identity.keys() == read_identity(IDENTITY.read_text()).keys()
    assert identity["pipelineNamespace"] == "team-a"
    check_grants(render(tmp_path / "manifests" / RBAC), identity)


@pytest.mark.usefixtures("manifests")
def test_the_objects_match_the_kubernetes_schemas() -> None:
    import kubernetes_validate.utils as kv

    version = kv.latest_version()
    for obj in render(MANIFESTS / RBAC):
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {e}")
