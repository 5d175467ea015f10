"""Training on several nodes through a TrainJob, with the cluster played by this machine.

The Kubernetes API is the real client's interface (`create_autospec(CustomObjectsApi)`); what
it would make the cluster do is done for real here: each "node" of the submitted TrainJob is a
torchrun process started with the command and the `PET_*` rendezvous variables that Kubeflow
Trainer's torch runtime gives it, so two nodes rendezvous over loopback, train the tiny model
with DDP (gloo) and hand the model back through the shared storage.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pytest
from kubernetes.client import CustomObjectsApi

from tests.s3_server import S3Bucket
from textops.components.common.config import TrainingConfig
from textops.components.common.errors import ConfigError, TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings
from textops.components.train.launch import TrainingJob
from textops.components.train.multinode import train_on_nodes

pytestmark = pytest.mark.integration

LABELS = LabelMap(("negative", "positive"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Runs a submitted TrainJob's nodes as local processes; records what it was given."""

    def __init__(self, fail_nodes: bool = False) -> None:
        self.fail_nodes = fail_nodes
        self.manifests: list[dict[str, Any]] = []
        self.api = create_autospec(CustomObjectsApi, instance=True)
        self.api.create_namespaced_custom_object.side_effect = self.create
        self.api.get_namespaced_custom_object.side_effect = self.get
        self.job: dict[str, Any] = {}

    def create(self, group: str, version: str, namespace: str, plural: str, body: Any) -> Any:
        self.manifests.append(body)
        trainer = body["spec"]["trainer"]
        assert trainer["command"][0] == "torchrun"
        command = [sys.executable, "-m", "torch.distributed.run", *trainer["command"][1:]]
        if self.fail_nodes:
            command[-1] += ".missing"
        port = str(free_port())
        nodes = [
            subprocess.Popen(
                command,
                env={
                    **os.environ,
                    "PET_NNODES": str(trainer["numNodes"]),
                    "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                    "PET_NODE_RANK": str(rank),
                    "PET_MASTER_ADDR": "127.0.0.1",
                    "PET_MASTER_PORT": port,
                },
            )
            for rank in range(trainer["numNodes"])
        ]
        codes = [node.wait(timeout=600) for node in nodes]
        ok = all(code == 0 for code in codes)
        condition = {"type": "Complete" if ok else "Failed", "status": "True"}
        if not ok:
            condition |= {"reason": "NodeFailed", "message": f"exit codes {codes}"}
        self.job = {**body, "status": {"conditions": [condition]}}
        return body

    def get(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        return self.job


def settings(model_dir: Path) -> TrainSettings:
    return TrainSettings(
        base_model=str(model_dir), max_seq_length=32, epochs=1, batch_size=16, seed=3,
        device="cpu",
    )  # fmt: skip


def train(
    cluster: LocalCluster,
    tiny_model_dir: Path,
    splits: dict[str, Path],
    output_dir: Path,
    **kw: Any,
) -> Any:
    job = TrainingJob(
        train_path=str(splits["train"]),
        validation_path=str(splits["validation"]),
        labels=LABELS,
        settings=settings(tiny_model_dir),
        output_dir=str(output_dir),
        data_fingerprint="sha256:tiny",
    )
    arguments: dict[str, Any] = {
        "nodes": 2,
        "gpus_per_node": 0,
        "namespace": "ml",
        "image": "ghcr.io/textops/textops-train:test",
        "cpu": "2",
        "memory": "4Gi",
        "timeout_s": 60,
        "api": cluster.api,
        "poll_s": 0.01,
    }
    return train_on_nodes(job, **(arguments | kw))


def test_two_nodes_train_the_model_and_hand_it_back(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    cluster = LocalCluster()
    output = tmp_path / "model"

    # The shared storage is a bucket of a real S3 server; the nodes reach it with the artifact
    # store's variables, which they inherit here as a pod gets them from the Secret.
    metadata = train(
        cluster, tiny_model_dir, tiny_splits, output_dir=output,
        shared_storage=s3_bucket.url("jobs"),
    )  # fmt: skip

    (manifest,) = cluster.manifests
    assert manifest["kind"] == "TrainJob"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["trainer"]["numNodes"] == 2
    job_uri = manifest["spec"]["trainer"]["command"][-1]
    assert job_uri.startswith(s3_bucket.url("jobs/")) and job_uri.endswith("/job.json")
    # The nodes get the object store's credentials from the Secret, by reference only.
    env = {e["name"]: e for e in manifest["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    # The model came back as the train step leaves it, trained by two DDP processes.
    assert (output / "model.safetensors").is_file()
    assert LabelMap.load(output / "labels.json") == LABELS
    assert metadata["world_size"] == 2
    assert 0.0 <= metadata["validation_accuracy"] <= 1.0
    # What was staged on the shared storage is gone.
    s3_bucket.fs.invalidate_cache()
    assert s3_bucket.fs.find(s3_bucket.path("jobs")) == []


def test_a_failed_node_fails_the_step_with_the_reason(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    cluster = LocalCluster(fail_nodes=True)
    with pytest.raises(TrainingError, match="NodeFailed"):
        train(
            cluster, tiny_model_dir, tiny_splits, output_dir=tmp_path / "model",
            shared_storage=str(tmp_path / "shared"),
        )  # fmt: skip
    assert not (tmp_path / "model").exists()


def test_no_shared_storage_is_refused_before_anything_is_submitted(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    cluster = LocalCluster()
    with pytest.raises(ConfigError, match="shared_storage"):
        train(cluster, tiny_model_dir, tiny_splits, output_dir=tmp_path / "m", shared_storage="")
    cluster.api.create_namespaced_custom_object.assert_not_called()


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"train_nodes": 2, "shared_storage": "s3://b/jobs"}, "set train_gpus to 0"),
        ({"train_nodes": 2, "train_gpus": 0}, "give shared_storage"),
    ],
)
def test_multinode_settings_are_checked(settings_: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        TrainingConfig(**settings_)
    TrainingConfig(train_nodes=2, train_gpus=0, shared_storage="s3://b/jobs")
