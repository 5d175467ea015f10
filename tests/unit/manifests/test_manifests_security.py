"""The manifests lock the cluster down: restricted pods, least privilege, no secrets in the repo.

Also the payload path: the logger posts to the collector, which lets nothing else in.
Rendering runs the real `kubectl kustomize` (see conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
KUSTOMIZATIONS = [f"overlays/{name}" for name in OVERLAYS] + ["observability"]

NAMESPACE = "textops"
ISVC = "textops-classifier"
COLLECTOR = "textops-collector"
COLLECTOR_PORT = 8088


# --- the payload path --------------------------------------------------------------------------


def _logging_component(isvc: dict[str, Any]) -> str:
    (component,) = [name for name, spec in isvc["spec"].items() if "logger" in spec]
    return component


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_payload_logger_posts_to_the_collector(manifests: Any, overlay: str) -> None:
    objects = manifests.render(f"overlays/{overlay}")
    isvc = manifests.only(objects, "InferenceService", ISVC)
    service = manifests.only(objects, "Service", COLLECTOR)
    logger = isvc["spec"][_logging_component(isvc)]["logger"]
    assert logger["mode"] == "all"
    namespace = service["metadata"]["namespace"]
    assert logger["url"] == (
        f"http://{COLLECTOR}.{namespace}.svc.cluster.local:{COLLECTOR_PORT}/events"
    )
    assert [p["port"] for p in service["spec"]["ports"]] == [COLLECTOR_PORT]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_loggers_and_label_senders_reach_the_collector(manifests: Any, overlay: str) -> None:
    objects = manifests.render(f"overlays/{overlay}")
    isvc = manifests.only(objects, "InferenceService", ISVC)
    collector_labels = manifests.only(objects, "Deployment", COLLECTOR)["spec"]["template"][
        "metadata"
    ]["labels"]
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"]["matchLabels"].items() <= collector_labels.items()
    ]
    peers = []
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            assert rule["ports"] == [{"protocol": "TCP", "port": COLLECTOR_PORT}]
            peers.extend(rule["from"])
    model_peer = {
        "podSelector": {
            "matchLabels": {
                "serving.kserve.io/inferenceservice": ISVC,
                "component": _logging_component(isvc),
            }
        }
    }
    prometheus_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    # A labelling service's pods, labelled so, post ground truth to /labels.
    labels_peer = {"podSelector": {"matchLabels": {"textops.dev/sends-labels": "true"}}}
    expected = [model_peer, labels_peer]
    if overlay == "production":
        expected.append(prometheus_peer)
    assert sorted(peers, key=str) == sorted(expected, key=str)


# --- permissions and pod security ---------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_overlays_grant_no_permissions(manifests: Any, kustomization: str) -> None:
    """The pipeline's permissions are in manifests/pipeline-rbac, where its namespace is known
    (test_manifests_pipeline_rbac.py); what runs here talks to no Kubernetes API."""
    objects = manifests.render(kustomization)
    rbac = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert not rbac & {o["kind"] for o in objects}
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_the_namespace_enforces_the_restricted_profile(manifests: Any) -> None:
    for overlay in OVERLAYS:
        namespace = manifests.only(manifests.render(f"overlays/{overlay}"), "Namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_restricted(manifests: Any, overlay: str) -> None:
    containers = [
        (f"{obj['kind']} {obj['metadata']['name']} {name}", container)
        for obj in manifests.render(f"overlays/{overlay}")
        for name, container in manifests.containers(obj)
    ]
    assert len(containers) >= 3
    for where, container in containers:
        context = container.get("securityContext", {})
        for key, value in RESTRICTED_CONTAINER.items():
            assert context.get(key) == value, f"{where}: securityContext.{key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_restricted(manifests: Any, overlay: str) -> None:
    for obj in manifests.render(f"overlays/{overlay}"):
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                assert not pod.get(key)
        if obj["kind"] == "InferenceService":
            for spec in obj["spec"].values():
                assert not spec.get("hostNetwork") and not spec.get("hostPID")


def _volumes_of(obj: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        return list(obj["spec"]["template"]["spec"].get("volumes", []))
    if obj["kind"] == "ServingRuntime":
        return list(obj["spec"].get("volumes", []))
    return list(obj["spec"][where.split("/")[0]].get("volumes", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_read_only_containers_get_a_writable_tmp(manifests: Any, overlay: str) -> None:
    objects = manifests.render(f"overlays/{overlay}")
    runtimes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServingRuntime"}
    for obj in objects:
        for where, container in manifests.containers(obj):
            volumes = _volumes_of(obj, where)
            mounts = list(container.get("volumeMounts", []))
            runtime = runtimes.get(container.get("runtime", ""))
            if runtime:  # KServe merges the runtime's container and volumes in.
                mounts += runtime["spec"]["containers"][0].get("volumeMounts", [])
                volumes += runtime["spec"].get("volumes", [])
            tmp = [m["name"] for m in mounts if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, f"{obj['kind']} {where}: no /tmp mount"
            (volume,) = [v for v in volumes if v["name"] == tmp[0]]
            assert "emptyDir" in volume, f"{obj['kind']} {where}: /tmp is not an emptyDir"


# --- the collector's store ---------------------------------------------------------------------


def _collector_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == COLLECTOR
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("overlay", ["local", "gpu", "triton"])
def test_the_collector_stores_in_sqlite_on_a_volume(manifests: Any, overlay: str) -> None:
    objects = manifests.render(f"overlays/{overlay}")
    container = _collector_container(objects)
    assert container["command"] == ["python", "-m", "textops.components.monitor.collector"]
    assert container["args"] == [
        "--port",
        str(COLLECTOR_PORT),
        "--store",
        "sqlite:////var/lib/textops/payloads.db",
    ]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/textops"]
    deployment = manifests.only(objects, "Deployment", COLLECTOR)
    (volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    manifests.only(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    # One SQLite writer at a time.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_production_reads_the_store_url_from_a_secret(manifests: Any) -> None:
    objects = manifests.render("overlays/production")
    container = _collector_container(objects)
    assert container["args"] == ["--port", str(COLLECTOR_PORT)]
    assert container["env"] == [
        {
            "name": "TEXTOPS_STORE_URL",
            "valueFrom": {"secretKeyRef": {"name": "textops-collector-store", "key": "url"}},
        }
    ]
    assert not [o for o in objects if o["kind"] in ("Secret", "PersistentVolumeClaim")]
    assert "/var/lib/textops" not in str(container["volumeMounts"])


_CREDENTIALS_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


def test_no_secret_value_is_in_the_repository(manifests: Any) -> None:
    for kustomization in KUSTOMIZATIONS:
        assert "Secret" not in {o["kind"] for o in manifests.render(kustomization)}
    for path in MANIFESTS.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        assert not _CREDENTIALS_IN_URL.search(text), f"{path}: a URL with credentials"
        assert "postgresql://" not in text and "postgres://" not in text, path
        assert not re.search(r"^\s*(stringData|kind:\s*Secret)\b", text, re.M), path
        assert not re.search(r"secretGenerator", text), path
