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
    import json

    from textops.components.common.logs import configure_logging
    from textops.components.evaluate.scoring import evaluate_saved_model

    configure_logging()

    result = evaluate_saved_model(
        model_dir=model.path, test_path=test_data.path, report_path=report.path
    )
    for name, value in result.scalars().items():
        metrics.log_metric(name, value)
    # The UI reads metadata; the file is for people and scripts reading the artifact store.
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump(result.scalars(), f, indent=2)
    classification_metrics.log_confusion_matrix(list(result.labels), result.confusion_matrix)
