"""What a pipeline run on a cluster keeps: nothing it is for may be left on a pod's own disk.

Kubeflow Pipelines on a cluster writes every artifact to its pipeline root in an object store
(`minio://`, `s3://`, `gs://`), and a step's own filesystem is gone when its pod ends; under
`kfp.local` the pipeline root is a local directory. So a step tells the two apart by the URI of
one of its own output artifacts. On a cluster, settings whose effect would stay inside the pod
(a model "published" to the pod's model repository, traffic read from a SQLite file that only
the pod has) are refused by the run's first step, with the parameter to set, instead of a run
that reports success having changed nothing. `textops submit` and `textops schedule` apply the
same rules to the arguments they send, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textops.components.common.config import check_canary_analysis
from textops.components.common.errors import ConfigError

#: The Secret (and key) that holds the payload store's URL in a cluster: the collector reads it
#: (manifests/overlays/production), and the monitoring pipeline passes it to the drift step.
PAYLOAD_STORE_SECRET = "textops-collector-store"
PAYLOAD_STORE_SECRET_KEY = "url"


def on_a_cluster(artifact_uri: str) -> bool:
    """Whether an output artifact's URI is in an object store (a run on a cluster).

    Args:
        artifact_uri: The `.uri` of one of the running step's output artifacts.
    """
    scheme, separator, _ = artifact_uri.partition("://")
    return bool(separator) and scheme.lower() != "file"


def check_deploy_target(deploy_target: str, model_repository: str) -> None:
    """Refuse a cluster run whose deploy step would publish inside its own pod.

    Raises:
        ConfigError: `deploy_target` is not 'kserve'; the message names the parameters to set.
    """
    if deploy_target == "kserve":
        return
    raise ConfigError(
        f"deploy_target is {deploy_target!r}, which publishes the model to model_repository "
        f"({model_repository}), a directory inside the deploy step's pod: on a cluster it is "
        "gone when the pod ends, and the run would end having deployed nothing. Set the "
        "pipeline parameter deploy_target to 'kserve' (and kserve_namespace to the "
        "InferenceService's namespace) to roll the model out to KServe"
    )


def check_payload_store(store_url: str) -> None:
    """Refuse a cluster drift check that would read a payload store only its pod has.

    Args:
        store_url: The store the step would read: the parameter, else the URL from the Secret
            `textops-collector-store`; empty when neither is given.

    Raises:
        ConfigError: No store, or a SQLite file; the message names what to set.
    """
    if not store_url:
        raise ConfigError(
            "no payload store to read the traffic from: set the pipeline parameter store_url "
            f"(postgresql://...), or create the Secret {PAYLOAD_STORE_SECRET} with the key "
            f"{PAYLOAD_STORE_SECRET_KEY} in the pipeline's namespace (the collector's store). "
            "Without one, the drift check would read an empty SQLite file inside its pod and "
            "find nothing"
        )
    if store_url.lower().startswith("sqlite"):
        raise ConfigError(
            "store_url is a SQLite file, which on a cluster exists only inside the drift "
            "step's pod and holds no traffic: set store_url to the collector's PostgreSQL "
            f"store, or leave it empty to use the Secret {PAYLOAD_STORE_SECRET}"
        )


def check_local_path(parameter: str, value: str) -> None:
    """Refuse a cluster step an output directory on its pod's disk (empty means none).

    Raises:
        ConfigError: `value` is a local path; the message names `parameter`.
    """
    if value and not on_a_cluster(value):
        raise ConfigError(
            f"{parameter} is {value!r}, a directory inside this step's pod, gone when the pod "
            f"ends: leave {parameter} empty on a cluster (the step's artifacts in the pipeline "
            "root keep what it found)"
        )


def check_cluster_arguments(arguments: Mapping[str, Any]) -> None:
    """The rules above, for the arguments of a run that will run on a cluster.

    Checks what `arguments` holds (a pipeline's parameter values, defaults included): the
    deploy target of a pipeline that trains and the Prometheus its canary is judged by, and
    the drift check's store and workspace. An
    empty `store_url` passes here, since the Secret may hold the URL; the drift step itself
    checks what it finally reads.

    Raises:
        ConfigError: The first rule broken, naming the parameter to set.
    """
    if "deploy_target" in arguments:
        check_deploy_target(
            str(arguments["deploy_target"]), str(arguments.get("model_repository", ""))
        )
    canary = ("canary_traffic_percent", "canary_analysis_seconds", "prometheus_url")
    if "deploy_target" in arguments and all(name in arguments for name in canary):
        check_canary_analysis(
            str(arguments["deploy_target"]),
            int(arguments["canary_traffic_percent"]),
            int(arguments["canary_analysis_seconds"]),
            str(arguments["prometheus_url"]),
        )
    store_url = str(arguments.get("store_url", "") or "")
    if store_url:
        check_payload_store(store_url)
    check_local_path("workspace", str(arguments.get("workspace", "") or ""))
