"""KFP component for the evaluate step; the logic is in `scoring.py`."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
):
    """Accuracy, macro-F1 and the confusion matrix of the trained model on the test split."""
    from textops.components.common.logs import configure_logging
    from textops.components.evaluate.scoring import evaluate_saved_model

    configure_logging()

    result = evaluate_saved_model(
        model_dir=model.path, test_path=test_data.path, report_path=report.path
    )
    for name, value in result.scalars().items():
        metrics.log_metric(name, value)
    classification_metrics.log_confusion_matrix(list(result.labels), result.confusion_matrix)
