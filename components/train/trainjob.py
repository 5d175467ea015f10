"""Training on several nodes: a Kubeflow Trainer `TrainJob`, submitted and waited for.

The train step writes its job description (see `launch.run_training`) to storage every node
can read, then submits a TrainJob whose nodes each start `torchrun`; torchrun starts one
`python -m textops.components.train --job FILE` worker per GPU. The `torch-distributed`
ClusterTrainingRuntime gives every node the rendezvous through `PET_NNODES`,
`PET_NPROC_PER_NODE`, `PET_NODE_RANK`, `PET_MASTER_ADDR` and `PET_MASTER_PORT`, which torchrun
reads as its own flags; torchrun then sets `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and `MASTER_ADDR`
for each worker.

The manifest follows the TrainJob API (`trainer.kubeflow.org/v1alpha1`) of Kubeflow Trainer
v2.2 and later, whose pod settings (tolerations, volumes, security context) go through
`spec.runtimePatches`. Trainer v2.0 and v2.1 named that field `podTemplateOverrides`, with
another shape, and reject this manifest: upgrade the Trainer, or set those pod settings in
the cluster's ClusterTrainingRuntime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from textops.components.common.artifact_store import ARTIFACT_STORE_KEYS
from textops.components.common.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

logger = logging.getLogger(__name__)

API_GROUP = "trainer.kubeflow.org"
API_VERSION = "v1alpha1"
KIND = "TrainJob"
#: The ClusterTrainingRuntime that Kubeflow Trainer installs for PyTorch DDP.
DEFAULT_RUNTIME = "torch-distributed"
#: The runtime's replicated job and container that run the trainer (fixed by Kubeflow Trainer).
NODE = "node"
#: Who owns our entry in `spec.runtimePatches`; patches are keyed by manager, so Kueue or an
#: admission webhook can add their own beside it.
PATCH_MANAGER = "textops.dev/train-step"
#: Annotation holding a digest of the spec, so that a retried step recognises its own job.
SPEC_DIGEST_ANNOTATION = "textops.dev/spec-sha256"
PART_OF_LABEL = {"app.kubernetes.io/part-of": "textops"}

#: The TrainJob CRD accepts RFC 1035 labels (a letter first). Pods get the hostname
#: `<name>-node-0-<index>`, a DNS label of at most 63 characters: with up to 64 nodes the
#: suffix takes 10 characters, which leaves 53 for the name.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 53
#: Namespaces are RFC 1123 labels.
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: A Kubernetes resource quantity, as the CRD's OpenAPI schema spells it.
QUANTITY_PATTERN = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

#: Condition types that end a job, for TrainJob (`Complete`) and PyTorchJob (`Succeeded`).
SUCCEEDED_CONDITIONS = ("Complete", "Succeeded")
FAILED_CONDITION = "Failed"
#: HTTP statuses worth polling through: the API server is busy or restarting.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
PLURALS = {"TrainJob": "trainjobs", "PyTorchJob": "pytorchjobs"}


def trainjob_name(text: str) -> str:
    """A valid TrainJob name made from any text (a run id, a model name).

    Lower-cases, turns every run of other characters into one hyphen, puts a letter first and
    cuts to `MAX_NAME_LENGTH`.

    Raises:
        ConfigError: `text` holds no letter or digit at all.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name:
        raise ConfigError(f"cannot make a TrainJob name from {text!r}: it has no letter or digit")
    if not name[0].isalpha():
        name = f"train-{name}"
    return name[:MAX_NAME_LENGTH].rstrip("-")


def trainjob_manifest(
    *,
    name: str,
    namespace: str,
    image: str,
    nodes: int,
    gpus_per_node: int,
    job_path: str,
    cpu: str,
    memory: str,
    runtime: str = DEFAULT_RUNTIME,
    shm_size: str = "2Gi",
    shared_claim: str = "",
    shared_mount_path: str = "/mnt/textops",
    run_as_user: int | None = 1000,
    active_deadline_s: int | None = None,
    credentials_secret: str = "",
) -> dict[str, Any]:
    """A TrainJob that trains the job description at `job_path` on `nodes` nodes.

    Args:
        name: The TrainJob's name: an RFC 1035 label of at most 53 characters (see
            `trainjob_name` to make one).
        namespace: Where the job runs.
        image: The train image, with textops installed.
        nodes: Number of nodes (pods), each running torchrun.
        gpus_per_node: GPUs each node asks for; one worker process per GPU. 0 trains on CPU
            with one process per node.
        job_path: Where every node reads the job description (`launch.TrainingJob`):
            an absolute path inside the pods, or an object-store URI (s3://...).
        cpu: CPU request per node (a Kubernetes quantity, "8" or "7500m"). No CPU limit is
            set: a throttled data loader or NCCL thread stalls every GPU of the job.
        memory: Memory request and limit per node ("32Gi"); the /dev/shm volume counts in it.
        runtime: The ClusterTrainingRuntime to run on.
        shm_size: Size limit of the memory-backed /dev/shm, which NCCL and data-loader
            workers use; a container's default 64 MiB is too small for them.
        shared_claim: A ReadWriteMany PersistentVolumeClaim to mount at `shared_mount_path`,
            where the job description and the outputs live. Empty: the runtime or the image
            already makes `job_path` readable.
        shared_mount_path: Where `shared_claim` is mounted; `job_path` must lie under it.
        run_as_user: The UID the containers run as. None leaves it to the image or, on
            OpenShift, to the namespace's assigned range.
        active_deadline_s: Seconds after which the Trainer stops the job and marks it Failed
            (DeadlineExceeded); None for no deadline.
        credentials_secret: A Secret whose `ARTIFACT_STORE_KEYS` become the nodes'
            environment (each optional), so they can read and write object-store URIs.

    Raises:
        ConfigError: An invalid name, namespace, count, quantity or path.
    """
    # Refuse what the API server would refuse, with a message that says how to fix it.
    _check_names(name, namespace)
    _check_sizes(image, nodes, gpus_per_node, {"cpu": cpu, "memory": memory, "shm_size": shm_size})
    _check_job_path(job_path, shared_claim, shared_mount_path)
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if gpus_per_node:
        # Extended resources need only a limit; Kubernetes sets the request equal to it.
        limits["nvidia.com/gpu"] = str(gpus_per_node)
    node_patch = _node_patch(
        shm_size=shm_size,
        shared_claim=shared_claim,
        shared_mount_path=shared_mount_path,
        run_as_user=run_as_user,
        gpus_per_node=gpus_per_node,
    )
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": API_GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
        "trainer": {
            "image": image,
            # torchrun takes its node count, rank and rendezvous from the runtime's PET_* env.
            "command": ["torchrun", "--module", "textops.components.train", "--job", job_path],
            "env": [
                {"name": "PYTHONUNBUFFERED", "value": "1"},  # log lines as they happen
                *_secret_env(credentials_secret),
            ],
            "numNodes": nodes,
            "numProcPerNode": max(1, gpus_per_node),
            "resourcesPerNode": {"requests": requests, "limits": limits},
        },
        "runtimePatches": [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "metadata": {"labels": dict(PART_OF_LABEL)},
                        "spec": {"replicatedJobs": [node_patch]},
                    }
                },
            }
        ],
    }
    if active_deadline_s is not None:
        if active_deadline_s < 1:
            raise ConfigError(f"active_deadline_s must be at least 1; got {active_deadline_s}")
        spec["activeDeadlineSeconds"] = active_deadline_s
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**PART_OF_LABEL, "app.kubernetes.io/component": "train"},
            "annotations": {SPEC_DIGEST_ANNOTATION: spec_digest(spec)},
        },
        "spec": spec,
    }


def _secret_env(secret: str) -> list[dict[str, Any]]:
    """Environment variables read from the credentials Secret, by reference only."""
    if not secret:
        return []
    return [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
        }
        for key in ARTIFACT_STORE_KEYS
    ]


def _node_patch(
    *,
    shm_size: str,
    shared_claim: str,
    shared_mount_path: str,
    run_as_user: int | None,
    gpus_per_node: int,
) -> dict[str, Any]:
    """The runtime patch of the `node` pods: volumes, tolerations, labels, security context."""
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if shared_claim:
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": shared_claim}})
        mounts.append({"name": "shared", "mountPath": shared_mount_path})
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_user is not None:
        pod_security |= {"runAsUser": run_as_user, "runAsGroup": run_as_user}
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        "volumes": volumes,
        "containers": [
            {
                "name": NODE,
                "volumeMounts": mounts,
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if gpus_per_node:
        # GPU node pools are commonly tainted so that only pods asking for GPUs land there.
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "name": NODE,
        "template": {
            "spec": {"template": {"metadata": {"labels": dict(PART_OF_LABEL)}, "spec": pod_spec}}
        },
    }


def _check_names(name: str, namespace: str) -> None:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"invalid TrainJob name {name!r}: use at most {MAX_NAME_LENGTH} lower-case letters, "
            "digits and '-', starting with a letter and ending with a letter or digit "
            f"(trainjob_name({name!r}) gives {_suggest(name)!r})"
        )
    if len(namespace) > 63 or not NAMESPACE_PATTERN.match(namespace):
        raise ConfigError(
            f"invalid namespace {namespace!r}: a namespace is at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )


def _check_sizes(image: str, nodes: int, gpus_per_node: int, quantities: dict[str, str]) -> None:
    if not image.strip():
        raise ConfigError("the TrainJob needs an image: give the train image reference")
    if not 1 <= nodes <= 64:
        raise ConfigError(f"nodes must be between 1 and 64; got {nodes}")
    if not 0 <= gpus_per_node <= 16:
        raise ConfigError(f"gpus_per_node must be between 0 and 16; got {gpus_per_node}")
    for field, value in quantities.items():
        if not QUANTITY_PATTERN.match(value):
            raise ConfigError(
                f"{field} {value!r} is not a Kubernetes quantity: write e.g. '8', '7500m', '32Gi'"
            )


def _check_job_path(job_path: str, shared_claim: str, shared_mount_path: str) -> None:
    if "://" in job_path:
        if shared_claim:
            raise ConfigError(
                f"job_path {job_path} is a URI, but a shared claim ({shared_claim}) is mounted "
                "for the job file: give a path under the claim, or no claim"
            )
        return
    path = PurePosixPath(job_path)
    if not path.is_absolute():
        raise ConfigError(
            f"job_path {job_path!r} must be an absolute path inside the pods, on storage every "
            "node can read, or an object-store URI"
        )
    if shared_claim and not path.is_relative_to(shared_mount_path):
        raise ConfigError(
            f"job_path {job_path} is not under {shared_mount_path}, where the claim "
            f"{shared_claim} is mounted: the nodes would not find it"
        )


def _suggest(name: str) -> str:
    try:
        return trainjob_name(name)
    except ConfigError:
        return "train"


def spec_digest(spec: dict[str, Any]) -> str:
    """A digest of a job's spec: two submissions of the same job have the same digest."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def submit_and_wait(
    manifest: dict[str, Any],
    *,
    api: CustomObjectsApi,
    timeout_s: float,
    poll_s: float = 10,
) -> dict[str, Any]:
    """Create the job (or find it, when a retried step created it before) and wait for its end.

    Args:
        manifest: A TrainJob (or PyTorchJob) manifest, as `trainjob_manifest` makes.
        api: A Kubernetes custom objects client, configured for the cluster.
        timeout_s: Seconds to wait for the job to finish. The job keeps running after it.
        poll_s: Seconds between two reads of the job's status.

    Returns:
        The job object as last read, with its final status.

    Raises:
        TrainingError: The job failed, could not be created, another job holds its name, or
            it did not finish within `timeout_s`.
    """
    from kubernetes.client.exceptions import ApiException

    group, version = manifest["apiVersion"].split("/")
    kind = manifest["kind"]
    if kind not in PLURALS:
        raise ConfigError(f"cannot submit a {kind}: only {', '.join(PLURALS)} are known")
    plural = PLURALS[kind]
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    address = {"group": group, "version": version, "namespace": namespace, "plural": plural}
    describe = f"kubectl -n {namespace} describe {kind.lower()} {name}"
    deadline = time.monotonic() + timeout_s

    try:
        job: dict[str, Any] = api.create_namespaced_custom_object(**address, body=manifest)
        logger.info("submitted kind=%s name=%s namespace=%s", kind, name, namespace)
    except ApiException as e:
        if e.status != 409:
            raise TrainingError(
                f"cannot create {kind} {name} in namespace {namespace}: "
                f"{e.status} {e.reason}. Check that Kubeflow Trainer is installed and that "
                "this step's service account may create it"
            ) from e
        # A retried step: the job from the earlier attempt is ours if its spec is the same.
        job = api.get_namespaced_custom_object(**address, name=name)
        _check_same_job(job, manifest, describe)
        logger.info("reusing kind=%s name=%s namespace=%s", kind, name, namespace)

    last_state = ""
    while True:
        conditions = _true_conditions(job)
        failed = conditions.get(FAILED_CONDITION)
        if failed is not None:
            raise TrainingError(
                f"{kind} {name} in namespace {namespace} failed: "
                f"{failed.get('reason', 'no reason given')}: "
                f"{failed.get('message', 'no message')}. See `{describe}` and the logs of its "
                f"pods: `kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name}`"
            )
        if any(c in conditions for c in SUCCEEDED_CONDITIONS):
            logger.info("finished kind=%s name=%s namespace=%s", kind, name, namespace)
            return job
        state = ",".join(sorted(conditions)) or "pending"
        if state != last_state:
            logger.info("waiting kind=%s name=%s state=%s", kind, name, state)
            last_state = state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TrainingError(
                f"{kind} {name} in namespace {namespace} did not finish within {timeout_s:g} s "
                f"(last state: {state}); it is still there. Inspect it with `{describe}`, and "
                f"delete it with `kubectl -n {namespace} delete {kind.lower()} {name}` to stop it"
            )
        time.sleep(min(poll_s, remaining))
        try:
            job = api.get_namespaced_custom_object(**address, name=name)
        except ApiException as e:
            if e.status == 404:
                raise TrainingError(
                    f"{kind} {name} in namespace {namespace} disappeared while training: "
                    "someone or something deleted it"
                ) from e
            if e.status not in TRANSIENT_STATUSES:
                raise TrainingError(
                    f"cannot read {kind} {name} in namespace {namespace}: {e.status} {e.reason}"
                ) from e
            # The API server is busy or restarting: the job runs on, so read it again later.
            logger.warning("status read failed name=%s status=%s; retrying", name, e.status)


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's conditions whose status is True, by type."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def _check_same_job(existing: dict[str, Any], manifest: dict[str, Any], describe: str) -> None:
    """Refuse to wait on a job of the same name that another run created."""
    wanted = manifest["metadata"].get("annotations", {}).get(SPEC_DIGEST_ANNOTATION)
    found = (existing.get("metadata", {}).get("annotations") or {}).get(SPEC_DIGEST_ANNOTATION)
    if wanted is not None and found != wanted:
        name = manifest["metadata"]["name"]
        namespace = manifest["metadata"]["namespace"]
        raise TrainingError(
            f"a {manifest['kind']} named {name} already exists in namespace {namespace} and is "
            f"not this training job (see `{describe}`): delete it or give this run another name"
        )
