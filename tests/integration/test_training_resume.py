"""A training run killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends, alone or under DDP (torchrun, gloo on CPU); DDP trains a model too."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings
from textops.components.train import checkpoint
from textops.components.train.launch import TrainingJob, run_training

pytestmark = pytest.mark.integration

LABELS = LabelMap(("negative", "positive"))

# Runs the trainer, alone or as a torchrun worker; after the N-th checkpoint is saved (or
# while it is being written) the process sends itself SIGKILL: a real kill at a known point,
# with nothing left in memory.
DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch.distributed as dist
    from textops.components.common.labels import LabelMap
    from textops.components.train import checkpoint
    from textops.components.common.settings import TrainSettings
    from textops.components.train.trainer import train_classifier

    model_dir, train, validation, out, ckpt, kill_after, mode = sys.argv[1:]
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    kill_after, saves, save = int(kill_after), 0, checkpoint.save_atomically

    def save_then_die(obj, path):
        global saves
        if path.name == checkpoint.CHECKPOINT_FILE:
            saves += 1
            if saves == kill_after and mode == "during":
                path.with_name("." + path.name + ".partial").write_bytes(b"half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
        save(obj, path)
        if path.name == checkpoint.CHECKPOINT_FILE and saves == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save_atomically = save_then_die
    settings = TrainSettings(
        base_model=model_dir, max_seq_length=32, epochs=3, batch_size=16, seed=11,
        checkpoint_every_steps=3,
    )
    result = train_classifier(
        train_path=train, validation_path=validation, labels=LabelMap(("negative", "positive")),
        settings=settings, output_dir=out, checkpoint_dir=ckpt,
    )
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(result.model_metadata()))
    """
)


def drive(
    driver: Path, model_dir: Path, splits: dict[str, Path], out: Path, ckpt: Path,
    kill_after: int, mode: str = "after", processes: int = 1,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return subprocess.run(
        [*launcher, str(driver), str(model_dir), str(splits["train"]),
         str(splits["validation"]), str(out), str(ckpt), str(kill_after), mode],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def state(directory: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(directory).state_dict()


@pytest.fixture(scope="module")
def reference(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    """An uninterrupted run with the same settings: (model directory, metadata)."""
    root = tmp_path_factory.mktemp("reference")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    done = drive(driver, tiny_model_dir, tiny_splits, root / "model", root / "ckpt", 0)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "model", json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("kill_after", "mode"),
    [(2, "after"), (3, "after"), (5, "during")],
    ids=["mid-epoch-1", "end-of-epoch-1", "while-writing"],
)
def test_killed_run_resumes_to_the_same_model(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tmp_path: Path,
    reference: tuple[Path, dict[str, object]],
    kill_after: int,
    mode: str,
) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"

    killed = drive(driver, tiny_model_dir, tiny_splits, out, ckpt, kill_after, mode)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (ckpt / checkpoint.CHECKPOINT_FILE).is_file()
    assert not (out / "model.safetensors").exists()

    resumed = drive(driver, tiny_model_dir, tiny_splits, out, ckpt, 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metadata = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert metadata["resumed_from_step"] > 0

    reference_dir, reference_metadata = reference
    expected, got = state(reference_dir), state(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    for key in ("validation_accuracy", "validation_macro_f1", "validation_loss", "best_epoch"):
        assert metadata[key] == reference_metadata[key], key
    assert not ckpt.exists(), "a finished run leaves no checkpoint to resume"


def test_killed_ddp_run_resumes_to_the_same_model(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    """Every process restores its own state; only rank 0 writes the checkpoint."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    paths = {name: (tmp_path / name / "model", tmp_path / name / "ckpt") for name in ("a", "b")}

    uninterrupted = drive(driver, tiny_model_dir, tiny_splits, *paths["a"], 0, processes=2)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    killed = drive(driver, tiny_model_dir, tiny_splits, *paths["b"], 2, processes=2)
    assert killed.returncode != 0
    assert (paths["b"][1] / checkpoint.CHECKPOINT_FILE).is_file()
    resumed = drive(driver, tiny_model_dir, tiny_splits, *paths["b"], 0, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert json.loads(resumed.stdout.strip().splitlines()[-1])["resumed_from_step"] > 0
    expected, got = state(paths["a"][0]), state(paths["b"][0])
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    from textops.components.common.errors import TrainingError

    checkpoint.save_atomically({"identity": "another run"}, tmp_path / checkpoint.CHECKPOINT_FILE)
    with pytest.raises(TrainingError, match="another run"):
        checkpoint.load_checkpoint(tmp_path, "this run")


def test_ddp_with_two_processes(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    job = TrainingJob(
        train_path=str(tiny_splits["train"]),
        validation_path=str(tiny_splits["validation"]),
        labels=LABELS,
        settings=TrainSettings(
            base_model=str(tiny_model_dir), max_seq_length=32, epochs=1, batch_size=8, seed=5
        ),
        output_dir=str(tmp_path / "ddp"),
    )
    metadata = run_training(job, processes=2)
    assert metadata["world_size"] == 2
    # 15 batches of 8, cut to 14 and shared: 7 optimizer steps in each process.
    assert metadata["optimizer_steps"] == 7
    assert LabelMap.load(tmp_path / "ddp" / "labels.json") == LABELS
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
