"""Training on several nodes: stage the job on shared storage, run a TrainJob, fetch the model.

The train step's pod cannot share a disk with the job's nodes (a volume mounted only when
`train_nodes > 1` would need a second train task, and `kfp.local` cannot pick between two
tasks' artifacts), so the hand-over goes through object storage, which every pod reaches with
the artifact store's credentials:

    <shared_storage>/<job name>/train.parquet, validation.parquet, job.json   (the step writes)
    <shared_storage>/<job name>/model/, result.json                          (rank 0 writes)

The job name is a digest of the data and the settings, so a retried step finds the TrainJob
its earlier attempt submitted (`trainjob.submit_and_wait` reuses it) instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textops.components.common.artifact_store import ARTIFACT_STORE_SECRET
from textops.components.common.errors import ConfigError, TrainingError
from textops.components.common.kubernetes_api import resolve_namespace
from textops.components.train.launch import TrainingJob
from textops.components.train.trainjob import submit_and_wait, trainjob_manifest, trainjob_name

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

logger = logging.getLogger(__name__)

#: Each node's CPU and memory requests: room for the data loaders and NCCL beside the GPUs.
NODE_CPU = "8"
NODE_MEMORY = "32Gi"

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
MODEL_DIR = "model"


def train_on_nodes(
    job: TrainingJob,
    *,
    nodes: int,
    gpus_per_node: int,
    shared_storage: str,
    image: str,
    timeout_s: float,
    api: CustomObjectsApi,
    namespace: str = "",
    cpu: str = NODE_CPU,
    memory: str = NODE_MEMORY,
    poll_s: float = 10,
) -> dict[str, Any]:
    """Train `job` on `nodes` nodes through a Kubeflow Trainer TrainJob; the model metadata.

    The nodes train a copy of `job` whose paths are on `shared_storage`, without its
    `checkpoint_dir` (a path on this pod's disk, which no node reaches). `namespace` empty:
    the namespace of the pod this runs in. `cpu` and `memory` are each node's requests (see
    `trainjob.trainjob_manifest`).

    The model lands in `job.output_dir` as `run_training` would leave it, and the staged files
    are removed from `shared_storage` once it is there.

    Raises:
        ConfigError: No shared storage was given, or it cannot be written.
        TrainingError: The job failed or timed out (see `trainjob.submit_and_wait`), or it
            ended without writing its model.
    """
    from fsspec.core import url_to_fs

    if not shared_storage:
        raise ConfigError(
            f"training on {nodes} nodes needs shared_storage: an object-store URI (such as "
            "s3://bucket/textops-jobs) that this step and every node can read and write"
        )
    namespace = resolve_namespace(namespace, "the TrainJob's namespace")
    name = trainjob_name(f"textops-{_job_digest(job)}")
    fs, root = url_to_fs(shared_storage)
    stage = f"{root.rstrip('/')}/{name}"
    try:
        fs.makedirs(stage, exist_ok=True)
        fs.put_file(job.train_path, f"{stage}/train.parquet")
        fs.put_file(job.validation_path, f"{stage}/validation.parquet")
    except OSError as e:
        raise ConfigError(f"cannot write the training job to {shared_storage}: {e}") from e
    staged = replace(
        job,
        train_path=fs.unstrip_protocol(f"{stage}/train.parquet"),
        validation_path=fs.unstrip_protocol(f"{stage}/validation.parquet"),
        output_dir=fs.unstrip_protocol(f"{stage}/{MODEL_DIR}"),
        checkpoint_dir=None,
        result_path=fs.unstrip_protocol(f"{stage}/{RESULT_FILE}"),
    )
    with fs.open(f"{stage}/{JOB_FILE}", "w", encoding="utf-8") as f:
        json.dump(staged.to_json(), f)
    manifest = trainjob_manifest(
        name=name,
        namespace=namespace,
        image=image,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        job_path=fs.unstrip_protocol(f"{stage}/{JOB_FILE}"),
        cpu=cpu,
        memory=memory,
        credentials_secret=ARTIFACT_STORE_SECRET,
    )
    logger.info("training nodes=%d gpus_per_node=%d job=%s", nodes, gpus_per_node, name)
    submit_and_wait(manifest, api=api, timeout_s=timeout_s, poll_s=poll_s)
    if not fs.exists(f"{stage}/{RESULT_FILE}"):
        raise TrainingError(
            f"TrainJob {name} completed without writing {stage}/{RESULT_FILE}: its rank 0 "
            f"did not finish; see `kubectl -n {namespace} logs -l "
            f"jobset.sigs.k8s.io/jobset-name={name}`"
        )
    metadata: dict[str, Any] = json.loads(fs.cat_file(f"{stage}/{RESULT_FILE}"))
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    for remote in fs.find(f"{stage}/{MODEL_DIR}"):
        relative = remote[len(f"{stage}/{MODEL_DIR}/") :]
        target = Path(job.output_dir) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    fs.rm(stage, recursive=True)
    return metadata


def _job_digest(job: TrainingJob) -> str:
    """Twenty hex digits that name one training job: same data and settings, same digest."""
    document = {
        "settings": job.settings.model_dump(),
        "labels": job.labels.to_dict(),
        "data": job.data_fingerprint,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:20]
