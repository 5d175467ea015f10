"""KFP component for the train step; the logic is in `trainer.py`."""

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
    seed: int,
    device: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Fine-tune `base_model` on the train split, keeping the epoch best on validation."""
    from textops.components.common.labels import LabelMap
    from textops.components.common.logs import configure_logging
    from textops.components.train.trainer import TrainSettings, train_classifier

    configure_logging()

    settings = TrainSettings(
        base_model=base_model,
        max_seq_length=max_seq_length,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        seed=seed,
        device=device,
    )
    result = train_classifier(
        train_path=train_data.path,
        validation_path=validation_data.path,
        labels=LabelMap.from_dict(train_data.metadata),
        settings=settings,
        output_dir=model.path,
        data_fingerprint=str(train_data.metadata.get("fingerprint", "")),
    )
    model.framework = "pytorch"
    model.metadata.update(result.model_metadata())
    for name, value in result.best_metrics.items():
        metrics.log_metric(name, value)
