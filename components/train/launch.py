"""Run training in this process, or in one process per GPU under torchrun (DDP).

The train step calls `run_training`; with more than one GPU in the pod it starts
`torchrun --standalone` on `python -m textops.components.train`, whose rank 0 writes the model
and a result file that this process reads back. On several nodes (`multinode.py`) the job
description, the splits, the model and the result file live on shared object storage: a
worker reads them through fsspec and works on local copies.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from textops.components.common.errors import TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings
from textops.components.train.trainer import train_classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingJob:
    """What a worker needs to train: `train_classifier`'s arguments, and where to report.

    Paths may be fsspec URIs (s3://, gs://) on several nodes; see `worker_main`.
    """

    train_path: str
    validation_path: str
    labels: LabelMap
    settings: TrainSettings
    output_dir: str
    data_fingerprint: str = ""
    checkpoint_dir: str | None = None
    #: Where rank 0 writes the model metadata, for a launching process to read back.
    result_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The job as plain JSON, for the job file a worker reads."""
        return {
            **self._fields(),
            "labels": self.labels.to_dict(),
            "settings": self.settings.model_dump(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> TrainingJob:
        """The job `to_json` wrote."""
        return cls(
            **{
                **document,
                "labels": LabelMap.from_dict(document["labels"]),
                "settings": TrainSettings(**document["settings"]),
            }
        )

    def train(self) -> dict[str, Any]:
        """Run the job in this process (a DDP worker, or the only process); the model metadata."""
        arguments = self._fields()
        del arguments["result_path"]
        return train_classifier(**arguments).model_metadata()

    def _fields(self) -> dict[str, Any]:
        # Not `asdict`: it would turn the label map into a dict and copy the settings.
        return {f.name: getattr(self, f.name) for f in fields(self)}


def default_processes() -> int:
    """One process per visible GPU; one process without GPUs."""
    import torch

    return max(1, torch.cuda.device_count())


def run_training(job: TrainingJob, processes: int = 0) -> dict[str, Any]:
    """Train `job` and return the model metadata (`TrainResult.model_metadata`).

    Args:
        job: What to train and where the model goes; its `result_path` is set here when more
            than one process trains.
        processes: DDP processes; 0 picks one per visible GPU. More than one on CPU runs DDP
            over gloo, which is slower than one process and exists to test the DDP path.
    """
    processes = processes or default_processes()
    if processes == 1:
        return job.train()
    with tempfile.TemporaryDirectory(prefix="textops-ddp-") as scratch:
        job_path = Path(scratch) / "job.json"
        result_path = Path(scratch) / "result.json"
        job = replace(job, result_path=str(result_path))
        job_path.write_text(json.dumps(job.to_json()), encoding="utf-8")
        command = torchrun_command(job_path, processes)
        logger.info("launching processes=%d command=%s", processes, " ".join(command))
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            raise TrainingError(
                f"distributed training with {processes} processes failed "
                f"(torchrun exit status {completed.returncode}); see the log above"
            )
        metadata: dict[str, Any] = json.loads(result_path.read_text("utf-8"))
        return metadata


def torchrun_command(job_path: Path, processes: int) -> list[str]:
    """torchrun on this machine: `processes` workers, a rendezvous on a free local port."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc-per-node={processes}",
        "-m", "textops.components.train", "--job", str(job_path),
    ]  # fmt: skip


def worker_main(job_path: str) -> None:
    """Entry point of one torchrun worker: join the process group, train, rank 0 reports.

    `job_path` and the paths in the job may be fsspec URIs (s3://, gs://, file://): the splits
    are then copied to local scratch first, and rank 0 uploads the model and the result.
    """
    import fsspec
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        with fsspec.open(job_path, "r", encoding="utf-8") as f:
            job = TrainingJob.from_json(json.load(f))
        with tempfile.TemporaryDirectory(prefix="textops-worker-") as scratch:
            local, remote_output = _local_copy(job, Path(scratch))
            metadata = local.train()
            if dist.get_rank() == 0:
                if remote_output is not None:
                    fs, remote = fsspec.core.url_to_fs(remote_output)
                    fs.put(local.output_dir, remote, recursive=True)
                if job.result_path is not None:
                    with fsspec.open(job.result_path, "w", encoding="utf-8") as f:
                        json.dump(metadata, f)
    finally:
        dist.destroy_process_group()


def _local_copy(job: TrainingJob, scratch: Path) -> tuple[TrainingJob, str | None]:
    """The job with remote splits downloaded to `scratch` and a remote output dir made local.

    Returns the local job and the remote output dir to upload the model to (None: local).
    Checkpoints stay where the job says: a remote store cannot take their atomic renames.
    """
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    local_paths: dict[str, str] = {}
    for key in ("train_path", "validation_path"):
        fs, path = url_to_fs(getattr(job, key))
        if isinstance(fs, LocalFileSystem):
            local_paths[key] = path
        else:
            local_paths[key] = str(scratch / f"{key}.parquet")
            fs.get_file(path, local_paths[key])
    fs, path = url_to_fs(job.output_dir)
    local_output = path if isinstance(fs, LocalFileSystem) else str(scratch / "model")
    local_job = replace(
        job,
        train_path=local_paths["train_path"],
        validation_path=local_paths["validation_path"],
        output_dir=local_output,
    )
    return local_job, (None if isinstance(fs, LocalFileSystem) else job.output_dir)
