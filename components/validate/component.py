"""KFP component for the validate step; the logic is in `checks.py`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Output

from textops.components.common.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def validate_data(
    data: str,
    data_format: str,
    text_column: str,
    label_column: str,
    allowed_labels: list,
    min_rows: int,
    min_text_chars: int,
    max_text_chars: int,
    text_mostly: float,
    max_duplicate_share: float,
    max_conflicting_label_share: float,
    min_class_share: float,
    enforce_production_labels: bool,
    redact_pii: bool,
    model_repository: str,
    model_name: str,
    deploy_target: str,
    kserve_namespace: str,
    feedback_max_age_days: int,
    feedback_max_share: float,
    feedback_class_balance: bool,
    feedback: list,
    validated_data: Output[Dataset],
    production_test: Output[Dataset],
    validation_result: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
):
    """Merge feedback into labelled data, validate it with Great Expectations; fail the run on a
    critical finding.

    `feedback` lists the feedback snapshots (the collect_feedback step's output): their
    "train" rows join the data by the `FeedbackMergeSettings` before it is checked, their
    "test" rows become `production_test` (text, label; no rows when there are none), and the
    validated data's metadata records its lineage (the base data and each snapshot).

    On a cluster (its artifacts in an object store), first refuse a `deploy_target` that would
    publish the model inside a pod.

    With `enforce_production_labels`, the labels must be those of the model in production: the
    current version in `model_repository`, or with `deploy_target` 'kserve' the bundle the
    InferenceService `model_name` in `kserve_namespace` (empty: this pod's) serves.

    The settings are `DataSettings`, `ValidationSettings`, `LabelPolicySettings`,
    `ProductionModelSettings` and `FeedbackMergeSettings` (common/settings.py), each checked
    by its model.
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())
    # A list typed into the KFP UI is JSON, whose numbers name labels too.
    parameters["allowed_labels"] = [str(label) for label in allowed_labels]

    import tempfile
    from pathlib import Path

    from textops.components.common import production_model
    from textops.components.common.cluster_run import check_deploy_target, on_a_cluster
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import (
        DataSettings,
        FeedbackMergeSettings,
        LabelPolicySettings,
        ProductionModelSettings,
        ValidationSettings,
        section_from,
    )
    from textops.components.validate.checks import validate_file

    configure_logging()
    source = section_from(DataSettings, parameters)
    settings = section_from(ValidationSettings, parameters)
    policy = section_from(LabelPolicySettings, parameters)
    production = section_from(ProductionModelSettings, parameters)
    merge = section_from(FeedbackMergeSettings, parameters)
    # The first step: a cluster run whose model would end up on a pod's disk stops here.
    if on_a_cluster(report.uri):
        check_deploy_target(production.deploy_target, model_repository)

    production_labels = None
    if policy.enforce_production_labels:
        production_labels = production_model.production_labels(
            production.model_name,
            production_model.production_target(
                production.deploy_target, model_repository, production.kserve_namespace
            ),
            Path(tempfile.mkdtemp(prefix="textops-labels-")),
        )
    result = validate_file(
        data=source.data,
        data_format=source.data_format,
        text_column=source.text_column,
        label_column=source.label_column,
        settings=settings,
        production_labels=production_labels,
        validated_path=validated_data.path,
        result_path=validation_result.path,
        report_path=report.path,
        summary_path=summary.path,
        feedback=[str(uri) for uri in feedback],
        merge=merge,
        production_test_path=production_test.path,
    )
    validated_data.metadata.update(result.metadata())
