"""KFP component for the evaluate step; the logic is in `evaluation.py`."""

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    test_data: Input[Dataset],
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    production_test: Input[Dataset],
    model_repository: str,
    model_name: str,
    min_accuracy: float,
    min_macro_f1: float,
    max_regression: float,
    max_production_regression: float,
    min_margin_over_baseline: float,
    enforce_production_labels: bool,
    slice_column: str,
    behaviour_tests: list,
    champion_url: str,
    deploy_target: str,
    kserve_namespace: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    summary: Output[Markdown],
    decision: Output[Artifact],
) -> bool:
    """Score the new model and the one in production on the test split and, when it has rows,
    on `production_test` (held-out production traffic); decide what ships.

    A TF-IDF + logistic regression baseline is fitted on `train_data`, the split the model
    learned from, and scored on the same test split: reported beside both models, and held
    against the new model when `min_margin_over_baseline` is above -1. A calibration
    temperature is fitted on `validation_data` (metrics `temperature`, `ece_calibrated`); export
    records it in the bundle and every runtime applies it.

    The model in production is the model the server at `champion_url` (an InferenceService)
    answers for when it is set; else, with `deploy_target` 'kserve', the bundle the
    InferenceService `model_name` in `kserve_namespace` (empty: this pod's) serves; else the
    model repository's current version.

    The settings are `GateSettings`, `EvaluationSettings` and `ProductionModelSettings`
    (common/settings.py), each checked by its model.

    Returns whether the new model may ship; the reasons are in `decision`'s metadata. (A single
    output, because kfp.local cannot branch on one field of a NamedTuple output.)
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    import json

    from textops.components.common.kubernetes_api import resolve_namespace
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import (
        EvaluationSettings,
        GateSettings,
        ProductionModelSettings,
        section_from,
    )
    from textops.components.evaluate.evaluation import evaluate_challenger

    configure_logging()
    gate = section_from(GateSettings, parameters)
    evaluation = section_from(EvaluationSettings, parameters)
    production = section_from(ProductionModelSettings, parameters)
    served_from = None
    if production.deploy_target == "kserve" and not evaluation.champion_url.strip():
        served_from = resolve_namespace(production.kserve_namespace, "kserve_namespace")

    outcome = evaluate_challenger(
        model_dir=model.path,
        test_path=test_data.path,
        train_path=train_data.path,
        validation_path=validation_data.path,
        model_repository=model_repository,
        model_name=production.model_name,
        settings=gate,
        slice_column=evaluation.slice_column,
        behaviour_tests=evaluation.behaviour_tests,
        report_path=report.path,
        summary_path=summary.path,
        decision_path=decision.path,
        champion_url=evaluation.champion_url,
        kserve_namespace=served_from,
        production_test_path=production_test.path,
    )
    scalars = outcome.scalars()
    for name, value in scalars.items():
        metrics.log_metric(name, value)
    # The UI reads metadata; the file is for people and scripts reading the artifact store.
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump(scalars, f, indent=2)
    classification_metrics.log_confusion_matrix(list(outcome.labels), outcome.confusion_matrix)
    if outcome.roc is not None:
        classification_metrics.log_roc_curve(
            outcome.roc.fpr, outcome.roc.tpr, outcome.roc.thresholds
        )
    decision.metadata.update({"deploy": outcome.deploy, "reasons": outcome.reasons})
    return outcome.deploy
