"""KFP component for the train step; the logic is in `trainer.py` and `launch.py`."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_model(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    base_model: str,
    max_seq_length: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    lr_schedule: str,
    gradient_accumulation_steps: int,
    max_grad_norm: float,
    class_weights: str,
    early_stopping_patience: int,
    checkpoint_every_steps: int,
    checkpoint_dir: str,
    seed: int,
    device: str,
    train_nodes: int,
    node_gpus: int,
    shared_storage: str,
    train_timeout_seconds: int,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Fine-tune `base_model` on the train split, keeping the epoch best on validation.

    With several GPUs in the pod it trains with one DDP process per GPU (torchrun); with
    `train_nodes` > 1 it runs a Kubeflow Trainer TrainJob and waits for it (multinode.py).
    """
    from textops.components.common.images import TRAIN_IMAGE
    from textops.components.common.kubernetes_api import custom_objects_api
    from textops.components.common.labels import LabelMap
    from textops.components.common.logs import configure_logging
    from textops.components.train.launch import run_training
    from textops.components.train.multinode import train_on_nodes
    from textops.components.train.trainer import TrainSettings

    configure_logging()

    settings = TrainSettings(
        base_model=base_model,
        max_seq_length=max_seq_length,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        lr_schedule=lr_schedule,  # type: ignore[arg-type]
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_grad_norm=max_grad_norm,
        class_weights=class_weights,  # type: ignore[arg-type]
        early_stopping_patience=early_stopping_patience,
        checkpoint_every_steps=checkpoint_every_steps,
        seed=seed,
        device=device,
    )
    job = {
        "train_path": train_data.path,
        "validation_path": validation_data.path,
        "labels": LabelMap.from_dict(train_data.metadata),
        "settings": settings,
        "output_dir": model.path,
        "data_fingerprint": str(train_data.metadata.get("fingerprint", "")),
    }
    if train_nodes > 1:
        metadata = train_on_nodes(
            **job,
            nodes=train_nodes,
            gpus_per_node=node_gpus,
            shared_storage=shared_storage,
            image=TRAIN_IMAGE,
            timeout_s=train_timeout_seconds,
            api=custom_objects_api(),
        )
    else:
        metadata = run_training(**job, checkpoint_dir=checkpoint_dir or None)
    model.framework = "pytorch"
    model.metadata.update(metadata)
    for name, value in metadata.items():
        if name.startswith(("validation_", "train_")) and isinstance(value, float):
            metrics.log_metric(name, value)
