"""KFP component for the export step; the logic is in `onnx_export.py`."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def export_model(
    model: Input[Model],
    validation_data: Input[Dataset],
    train_data: Input[Dataset],
    evaluation: Input[Metrics],
    bundle: Output[Model],
):
    """Export the trained model to ONNX, check parity, and write the model bundle."""
    from textops.components.common.logs import configure_logging
    from textops.components.export.onnx_export import export_bundle

    configure_logging()

    result = export_bundle(
        model_dir=model.path,
        validation_path=validation_data.path,
        reference_source_path=train_data.path,
        training=dict(model.metadata),
        evaluation=dict(evaluation.metadata),
        bundle_dir=bundle.path,
    )
    bundle.framework = "onnx"
    bundle.metadata.update(result.artifact_metadata())
