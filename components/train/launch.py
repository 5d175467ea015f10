"""Run training in this process, or in one process per GPU under torchrun (DDP).

The train step calls `run_training`; with more than one GPU in the pod it starts
`torchrun --standalone` on `python -m textops.components.train`, whose rank 0 writes the model
and a result file that this process reads back.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from textops.components.common.errors import TrainingError
from textops.components.common.labels import LabelMap
from textops.components.train.trainer import TrainSettings, train_classifier

logger = logging.getLogger(__name__)


def default_processes() -> int:
    """One process per visible GPU; one process without GPUs."""
    import torch

    return max(1, torch.cuda.device_count())


def run_training(
    *,
    train_path: str | Path,
    validation_path: str | Path,
    labels: LabelMap,
    settings: TrainSettings,
    output_dir: str | Path,
    data_fingerprint: str = "",
    checkpoint_dir: str | Path | None = None,
    processes: int = 0,
) -> dict[str, Any]:
    """Train, and return the model metadata (`TrainResult.model_metadata`).

    Args:
        processes: DDP processes; 0 picks one per visible GPU. More than one on CPU runs DDP
            over gloo, which is slower than one process and exists to test the DDP path.
    """
    processes = processes or default_processes()
    job = {
        "train_path": str(train_path),
        "validation_path": str(validation_path),
        "labels": labels.to_dict(),
        "settings": asdict(settings),
        "output_dir": str(output_dir),
        "data_fingerprint": data_fingerprint,
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
    }
    if processes == 1:
        return train_job(job)
    with tempfile.TemporaryDirectory(prefix="textops-ddp-") as scratch:
        job_path = Path(scratch) / "job.json"
        result_path = Path(scratch) / "result.json"
        job["result_path"] = str(result_path)
        job_path.write_text(json.dumps(job), encoding="utf-8")
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


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one training job description in this process (a DDP worker, or the only process)."""
    result = train_classifier(
        train_path=job["train_path"],
        validation_path=job["validation_path"],
        labels=LabelMap.from_dict(job["labels"]),
        settings=TrainSettings(**job["settings"]),
        output_dir=job["output_dir"],
        data_fingerprint=job["data_fingerprint"],
        checkpoint_dir=job["checkpoint_dir"],
    )
    return result.model_metadata()


def worker_main(job_path: str) -> None:
    """Entry point of one torchrun worker: join the process group, train, rank 0 reports."""
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        job = json.loads(Path(job_path).read_text("utf-8"))
        metadata = train_job(job)
        if dist.get_rank() == 0:
            Path(job["result_path"]).write_text(json.dumps(metadata), encoding="utf-8")
    finally:
        dist.destroy_process_group()
