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
    long_text_strategy: str,
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

    The settings are `TrainSettings` and `TrainPlacementSettings` (common/settings.py); each
    is checked by its model, so a value out of bounds fails here, naming the setting.

    With several GPUs in the pod it trains with one DDP process per GPU (torchrun); with
    `train_nodes` > 1 it runs a Kubeflow Trainer TrainJob and waits for it (multinode.py).
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    from textops.components.common.images import TRAIN_IMAGE
    from textops.components.common.kubernetes_api import custom_objects_api
    from textops.components.common.labels import LabelMap
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import (
        TrainPlacementSettings,
        TrainSettings,
        section_from,
    )
    from textops.components.train.launch import TrainingJob, run_training
    from textops.components.train.multinode import train_on_nodes

    configure_logging()

    settings = section_from(TrainSettings, parameters)
    placement = section_from(TrainPlacementSettings, parameters)
    job = TrainingJob(
        train_path=train_data.path,
        validation_path=validation_data.path,
        labels=LabelMap.from_dict(train_data.metadata),
        settings=settings,
        output_dir=model.path,
        data_fingerprint=str(train_data.metadata.get("fingerprint", "")),
        checkpoint_dir=placement.checkpoint_dir or None,
    )
    if placement.train_nodes > 1:
        metadata = train_on_nodes(
            job,
            nodes=placement.train_nodes,
            gpus_per_node=placement.node_gpus,
            shared_storage=placement.shared_storage,
            image=TRAIN_IMAGE,
            timeout_s=placement.train_timeout_seconds,
            api=custom_objects_api(),
        )
    else:
        metadata = run_training(job)
    model.framework = "pytorch"
    model.metadata.update(metadata)
    # Where the data came from travels on to export, which records it in the bundle.
    if "lineage" in train_data.metadata:
        model.metadata["lineage"] = train_data.metadata["lineage"]
    for name, value in metadata.items():
        if name.startswith(("validation_", "train_")) and isinstance(value, float):
            metrics.log_metric(name, value)
