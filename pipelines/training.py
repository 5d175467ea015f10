"""The training pipeline: validate -> preprocess -> train -> evaluate -> export -> deploy.

Parameter defaults are `TrainingConfig`'s, so the compiled pipeline and `textops run` agree.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Metrics, Model

from textops.components.common.config import TrainingConfig
from textops.components.deploy.component import deploy_model
from textops.components.evaluate.component import evaluate_model
from textops.components.export.component import export_model
from textops.components.preprocess.component import preprocess_data
from textops.components.train.component import train_model
from textops.components.validate.component import validate_data

PIPELINE_NAME = "textops-training"
_DEFAULTS = TrainingConfig()


class TrainingOutputs(NamedTuple):
    """What a run hands back: the bundle, its test metrics, the reports, the published path."""

    bundle: Model
    test_metrics: Metrics
    validation_report: HTML
    evaluation_report: HTML
    published_path: str


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate labelled text, fine-tune a transformer classifier, evaluate it, "
    "export it to ONNX and publish the model bundle.",
)
def training_pipeline(
    data: str = _DEFAULTS.data,
    data_format: str = _DEFAULTS.data_format,
    text_column: str = _DEFAULTS.text_column,
    label_column: str = _DEFAULTS.label_column,
    base_model: str = _DEFAULTS.base_model,
    max_seq_length: int = _DEFAULTS.max_seq_length,
    epochs: int = _DEFAULTS.epochs,
    batch_size: int = _DEFAULTS.batch_size,
    learning_rate: float = _DEFAULTS.learning_rate,
    weight_decay: float = _DEFAULTS.weight_decay,
    warmup_ratio: float = _DEFAULTS.warmup_ratio,
    seed: int = _DEFAULTS.seed,
    validation_fraction: float = _DEFAULTS.validation_fraction,
    test_fraction: float = _DEFAULTS.test_fraction,
    device: str = _DEFAULTS.device,
    model_name: str = _DEFAULTS.model_name,
    model_repository: str = str(_DEFAULTS.model_repository),
) -> TrainingOutputs:
    validate = validate_data(
        data=data, data_format=data_format, text_column=text_column, label_column=label_column
    ).set_display_name("validate")
    preprocess = preprocess_data(
        validated_data=validate.outputs["validated_data"],
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    ).set_display_name("preprocess")
    train = train_model(
        train_data=preprocess.outputs["train_data"],
        validation_data=preprocess.outputs["validation_data"],
        base_model=base_model,
        max_seq_length=max_seq_length,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        seed=seed,
        device=device,
    ).set_display_name("train")
    evaluate = evaluate_model(
        model=train.outputs["model"], test_data=preprocess.outputs["test_data"]
    ).set_display_name("evaluate")
    export = export_model(
        model=train.outputs["model"],
        validation_data=preprocess.outputs["validation_data"],
        train_data=preprocess.outputs["train_data"],
        evaluation=evaluate.outputs["metrics"],
    ).set_display_name("export")
    deploy = deploy_model(
        bundle=export.outputs["bundle"], model_repository=model_repository, model_name=model_name
    ).set_display_name("deploy")
    # Publishing has an effect outside the pipeline: never answer it from a cache.
    deploy.set_caching_options(False)
    return TrainingOutputs(
        bundle=export.outputs["bundle"],
        test_metrics=evaluate.outputs["metrics"],
        validation_report=validate.outputs["report"],
        evaluation_report=evaluate.outputs["report"],
        published_path=deploy.output,
    )


def pipeline_arguments(config: TrainingConfig) -> dict[str, object]:
    """The pipeline's arguments for one configuration (every parameter, by name)."""
    values = config.model_dump()
    arguments = {
        name: values[name] for name in training_pipeline.component_spec.inputs if name in values
    }
    arguments["model_repository"] = str(config.model_repository)
    return arguments
