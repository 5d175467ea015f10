"""The multi-node TrainJob: the manifest it generates, and submitting and waiting for it.

No cluster runs here, so `submit_and_wait` talks to an autospec of the real
`kubernetes.client.CustomObjectsApi`: calls that the real client would refuse fail here too.
"""

from __future__ import annotations

import copy
from typing import Any
from unittest import mock

import pytest
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from textops.components.common.errors import ConfigError, TrainingError
from textops.components.train.trainjob import (
    MAX_NAME_LENGTH,
    SPEC_DIGEST_ANNOTATION,
    submit_and_wait,
    trainjob_manifest,
    trainjob_name,
)

JOB_PATH = "/mnt/textops/runs/abc123/job.json"


def make_manifest(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "name": "textops-train-abc123",
        "namespace": "ml-team",
        "image": "ghcr.io/textops/textops-train:0.1.0",
        "nodes": 3,
        "gpus_per_node": 4,
        "job_path": JOB_PATH,
        "cpu": "16",
        "memory": "64Gi",
        **overrides,
    }
    return trainjob_manifest(**arguments)


def node_pod(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod template patch of the runtime's `node` replicated job."""
    (patch,) = manifest["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod: dict[str, Any] = replicated["template"]["spec"]["template"]
    return pod


def node_container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = node_pod(manifest)["spec"]["containers"]
    assert container["name"] == "node"
    return container


# --- the manifest ---------------------------------------------------------------------------


def test_manifest_is_a_trainjob_on_the_torch_runtime() -> None:
    manifest = make_manifest()
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert manifest["kind"] == "TrainJob"
    assert manifest["metadata"]["name"] == "textops-train-abc123"
    assert manifest["metadata"]["namespace"] == "ml-team"
    assert manifest["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }


def test_manifest_runs_torchrun_on_every_node_with_one_worker_per_gpu() -> None:
    trainer = make_manifest()["spec"]["trainer"]
    assert trainer["numNodes"] == 3
    assert trainer["numProcPerNode"] == 4
    assert trainer["image"] == "ghcr.io/textops/textops-train:0.1.0"
    # torchrun starts `python -m textops.components.train --job FILE` per worker; it reads
    # its node count, rank and rendezvous from the PET_* variables the runtime sets.
    assert trainer["command"] == [
        "torchrun", "--module", "textops.components.train", "--job", JOB_PATH,
    ]  # fmt: skip
    assert not any(env["name"].startswith("PET_") for env in trainer["env"])


def test_manifest_asks_for_gpus_and_tolerates_the_gpu_taint() -> None:
    manifest = make_manifest()
    resources = manifest["spec"]["trainer"]["resourcesPerNode"]
    assert resources["limits"]["nvidia.com/gpu"] == "4"
    assert resources["requests"] == {"cpu": "16", "memory": "64Gi"}
    assert resources["limits"]["memory"] == "64Gi"
    assert "cpu" not in resources["limits"]  # throttling would stall every GPU
    assert {
        "key": "nvidia.com/gpu",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in node_pod(manifest)["spec"]["tolerations"]


def test_manifest_on_cpu_asks_for_no_gpu() -> None:
    manifest = make_manifest(gpus_per_node=0)
    assert manifest["spec"]["trainer"]["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in manifest["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert "tolerations" not in node_pod(manifest)["spec"]


def test_manifest_mounts_a_memory_backed_shm() -> None:
    manifest = make_manifest(shm_size="8Gi")
    volumes = {v["name"]: v for v in node_pod(manifest)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in node_container(manifest)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_manifest_mounts_the_shared_claim_that_holds_the_job_file() -> None:
    manifest = make_manifest(shared_claim="textops-pipeline-root")
    volumes = {v["name"]: v for v in node_pod(manifest)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in node_container(manifest)["volumeMounts"]}
    claim = volumes[mounts["/mnt/textops"]]["persistentVolumeClaim"]
    assert claim == {"claimName": "textops-pipeline-root"}


def test_manifest_runs_as_non_root_without_privileges() -> None:
    manifest = make_manifest()
    pod_security = node_pod(manifest)["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 1000
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    container_security = node_container(manifest)["securityContext"]
    assert container_security["runAsNonRoot"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"] == {"drop": ["ALL"]}
    assert "runAsUser" not in node_pod(make_manifest(run_as_user=None))["spec"]["securityContext"]


def test_manifest_labels_the_job_and_its_pods() -> None:
    manifest = make_manifest()
    part_of = {"app.kubernetes.io/part-of": "textops"}
    assert part_of.items() <= manifest["metadata"]["labels"].items()
    assert part_of.items() <= node_pod(manifest)["metadata"]["labels"].items()


def test_manifest_sets_a_deadline_only_when_asked() -> None:
    assert "activeDeadlineSeconds" not in make_manifest()["spec"]
    assert make_manifest(active_deadline_s=7200)["spec"]["activeDeadlineSeconds"] == 7200
    with pytest.raises(ConfigError, match="active_deadline_s"):
        make_manifest(active_deadline_s=0)


def test_manifest_digest_changes_with_the_spec_only() -> None:
    def digest(manifest: dict[str, Any]) -> str:
        return manifest["metadata"]["annotations"][SPEC_DIGEST_ANNOTATION]

    assert digest(make_manifest()) == digest(make_manifest())
    assert digest(make_manifest()) != digest(make_manifest(nodes=2))


@pytest.mark.parametrize(
    "name",
    [
        "Textops-Train",  # upper case
        "1-train",  # the CRD wants a letter first (RFC 1035)
        "train-",  # ends with a hyphen
        "train_job",  # underscore
        "",
        "t" * (MAX_NAME_LENGTH + 1),  # pod hostnames would pass 63 characters
    ],
)
def test_invalid_names_are_refused_with_a_suggestion(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid TrainJob name"):
        make_manifest(name=name)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("namespace", "ML_Team", "invalid namespace"),
        ("nodes", 0, "nodes"),
        ("gpus_per_node", -1, "gpus_per_node"),
        ("memory", "64 GB", "not a Kubernetes quantity"),
        ("cpu", "lots", "not a Kubernetes quantity"),
        ("job_path", "runs/job.json", "absolute path"),
        ("image", " ", "image"),
    ],
)
def test_invalid_inputs_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_manifest(**{field: value})


def test_job_path_must_lie_on_the_shared_claim() -> None:
    with pytest.raises(ConfigError, match="not under /mnt/textops"):
        make_manifest(shared_claim="root", job_path="/tmp/job.json")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("textops-train-abc123", "textops-train-abc123"),
        ("Run 2024_05_01 / sentiment", "run-2024-05-01-sentiment"),
        ("123e4567-e89b", "train-123e4567-e89b"),
        ("--Model--", "model"),
    ],
)
def test_trainjob_name_makes_valid_names(text: str, name: str) -> None:
    assert trainjob_name(text) == name
    make_manifest(name=name)  # accepted


def test_trainjob_name_cuts_long_text_to_a_valid_name() -> None:
    name = trainjob_name("a" * 52 + "-" + "b" * 20)
    assert len(name) <= MAX_NAME_LENGTH
    assert not name.endswith("-")
    make_manifest(name=name)


def test_trainjob_name_refuses_text_without_letters_or_digits() -> None:
    with pytest.raises(ConfigError, match="no letter or digit"):
        trainjob_name("__--__")


# --- submitting and waiting -----------------------------------------------------------------


@pytest.fixture
def api() -> Any:
    """The real client's interface, with no server behind it."""
    return mock.create_autospec(CustomObjectsApi, instance=True)


def with_status(manifest: dict[str, Any], *conditions: dict[str, str]) -> dict[str, Any]:
    job = copy.deepcopy(manifest)
    job["status"] = {"conditions": list(conditions)}
    return job


RUNNING: dict[str, str] = {"type": "Suspended", "status": "False", "reason": "Resumed"}
COMPLETE: dict[str, str] = {"type": "Complete", "status": "True", "reason": "JobsCompleted"}
FAILED: dict[str, str] = {
    "type": "Failed",
    "status": "True",
    "reason": "FailedJobs",
    "message": "jobset failed: node-0 exited with 1",
}


def test_submit_and_wait_returns_the_job_once_it_completes(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.return_value = copy.deepcopy(manifest)
    api.get_namespaced_custom_object.side_effect = [
        with_status(manifest, RUNNING),
        with_status(manifest, RUNNING),
        with_status(manifest, RUNNING, COMPLETE),
    ]
    job = submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)
    assert job["status"]["conditions"][-1]["type"] == "Complete"
    api.create_namespaced_custom_object.assert_called_once_with(
        group="trainer.kubeflow.org",
        version="v1alpha1",
        namespace="ml-team",
        plural="trainjobs",
        body=manifest,
    )
    assert api.get_namespaced_custom_object.call_count == 3
    api.get_namespaced_custom_object.assert_called_with(
        group="trainer.kubeflow.org",
        version="v1alpha1",
        namespace="ml-team",
        plural="trainjobs",
        name="textops-train-abc123",
    )


def test_submit_and_wait_raises_the_failure_reason(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.return_value = copy.deepcopy(manifest)
    api.get_namespaced_custom_object.side_effect = [
        with_status(manifest, RUNNING),
        with_status(manifest, FAILED),
    ]
    with pytest.raises(TrainingError) as raised:
        submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)
    message = str(raised.value)
    assert "textops-train-abc123" in message
    assert "ml-team" in message
    assert "FailedJobs" in message
    assert "node-0 exited with 1" in message


def test_submit_and_wait_reuses_the_job_a_retried_step_created(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.side_effect = ApiException(status=409, reason="Conflict")
    api.get_namespaced_custom_object.side_effect = [
        with_status(manifest, RUNNING),
        with_status(manifest, COMPLETE),
    ]
    job = submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)
    assert job["status"]["conditions"][0]["type"] == "Complete"
    assert api.create_namespaced_custom_object.call_count == 1


def test_submit_and_wait_refuses_another_job_of_the_same_name(api: Any) -> None:
    manifest = make_manifest()
    other = make_manifest(nodes=2)  # same name, other spec
    api.create_namespaced_custom_object.side_effect = ApiException(status=409, reason="Conflict")
    api.get_namespaced_custom_object.return_value = with_status(other, RUNNING)
    with pytest.raises(TrainingError, match="already exists"):
        submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)


def test_submit_and_wait_times_out_saying_how_to_inspect(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.return_value = copy.deepcopy(manifest)
    api.get_namespaced_custom_object.return_value = with_status(manifest, RUNNING)
    with pytest.raises(TrainingError) as raised:
        submit_and_wait(manifest, api=api, timeout_s=0.05, poll_s=0.01)
    message = str(raised.value)
    assert "did not finish within 0.05 s" in message
    assert "kubectl -n ml-team describe trainjob textops-train-abc123" in message


def test_submit_and_wait_reports_a_refused_create(api: Any) -> None:
    api.create_namespaced_custom_object.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(TrainingError, match="403 Forbidden") as raised:
        submit_and_wait(make_manifest(), api=api, timeout_s=5, poll_s=0.001)
    assert isinstance(raised.value.__cause__, ApiException)


def test_submit_and_wait_polls_through_a_busy_api_server(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.return_value = copy.deepcopy(manifest)
    api.get_namespaced_custom_object.side_effect = [
        ApiException(status=503, reason="Service Unavailable"),
        with_status(manifest, COMPLETE),
    ]
    job = submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)
    assert job["status"]["conditions"][0]["type"] == "Complete"


def test_submit_and_wait_reports_a_deleted_job(api: Any) -> None:
    manifest = make_manifest()
    api.create_namespaced_custom_object.return_value = copy.deepcopy(manifest)
    api.get_namespaced_custom_object.side_effect = ApiException(status=404, reason="Not Found")
    with pytest.raises(TrainingError, match="disappeared"):
        submit_and_wait(manifest, api=api, timeout_s=5, poll_s=0.001)
