"""The training pipeline: validate -> preprocess -> train -> evaluate -> export -> deploy.

Parameter defaults are `TrainingConfig`'s, so the compiled pipeline and `textops run` agree.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Metrics, Model

from textops.components.common.config import TrainingConfig
from textops.components.deploy.component import deploy_model
from textops.components.evaluate.component import evaluate_model
from textops.components.export.component import export_model
from textops.components.preprocess.component import preprocess_data
from textops.components.train.component import train_model
from textops.components.validate.component import validate_data
from textops.pipelines.cluster import use_artifact_store_credentials

PIPELINE_NAME = "textops-training"
TRAIN_CPU_REQUEST = "4"
TRAIN_MEMORY_REQUEST = "16Gi"
TRAIN_MEMORY_LIMIT = "32Gi"
_DEFAULTS = TrainingConfig()
_DEFAULT_VALUES = _DEFAULTS.model_dump()  # plain JSON values, for list parameters


def request_training_resources(task: dsl.PipelineTask, gpus: Any) -> None:
    """What the train pod asks a cluster for: `gpus` (a pipeline parameter), CPU, memory, /dev/shm.

    kfp.local ignores these; on Kubeflow they place the step on a GPU node.
    """
    task.set_accelerator_type("nvidia.com/gpu")
    task.set_accelerator_limit(gpus)
    task.set_cpu_request(TRAIN_CPU_REQUEST)
    task.set_memory_request(TRAIN_MEMORY_REQUEST)
    task.set_memory_limit(TRAIN_MEMORY_LIMIT)
    # GPU node pools are commonly tainted so that only pods that ask for GPUs land there.
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    # PyTorch's data loaders and NCCL share memory through /dev/shm, 64 MiB by default in a pod.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")


class TrainingOutputs(NamedTuple):
    """What a run hands back: the bundle, its test metrics, the reports, the gate's decision."""

    bundle: Model
    test_metrics: Metrics
    validation_report: HTML
    evaluation_report: HTML
    deploy: bool
    decision: Artifact


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
    allowed_labels: list = _DEFAULTS.allowed_labels,
    min_rows: int = _DEFAULTS.min_rows,
    min_text_chars: int = _DEFAULTS.min_text_chars,
    max_text_chars: int = _DEFAULTS.max_text_chars,
    text_mostly: float = _DEFAULTS.text_mostly,
    max_duplicate_share: float = _DEFAULTS.max_duplicate_share,
    max_conflicting_label_share: float = _DEFAULTS.max_conflicting_label_share,
    min_class_share: float = _DEFAULTS.min_class_share,
    enforce_production_labels: bool = _DEFAULTS.enforce_production_labels,
    redact_pii: bool = _DEFAULTS.redact_pii,
    base_model: str = _DEFAULTS.base_model,
    max_seq_length: int = _DEFAULTS.max_seq_length,
    epochs: int = _DEFAULTS.epochs,
    batch_size: int = _DEFAULTS.batch_size,
    learning_rate: float = _DEFAULTS.learning_rate,
    weight_decay: float = _DEFAULTS.weight_decay,
    warmup_ratio: float = _DEFAULTS.warmup_ratio,
    lr_schedule: str = _DEFAULTS.lr_schedule,
    gradient_accumulation_steps: int = _DEFAULTS.gradient_accumulation_steps,
    max_grad_norm: float = _DEFAULTS.max_grad_norm,
    class_weights: str = _DEFAULTS.class_weights,
    early_stopping_patience: int = _DEFAULTS.early_stopping_patience,
    checkpoint_every_steps: int = _DEFAULTS.checkpoint_every_steps,
    checkpoint_dir: str = _DEFAULTS.checkpoint_dir,
    train_gpus: int = _DEFAULTS.train_gpus,
    train_nodes: int = _DEFAULTS.train_nodes,
    node_gpus: int = _DEFAULTS.node_gpus,
    shared_storage: str = _DEFAULTS.shared_storage,
    train_timeout_seconds: int = _DEFAULTS.train_timeout_seconds,
    seed: int = _DEFAULTS.seed,
    validation_fraction: float = _DEFAULTS.validation_fraction,
    test_fraction: float = _DEFAULTS.test_fraction,
    min_accuracy: float = _DEFAULTS.min_accuracy,
    min_macro_f1: float = _DEFAULTS.min_macro_f1,
    max_regression: float = _DEFAULTS.max_regression,
    slice_column: str = _DEFAULTS.slice_column,
    behaviour_tests: list = _DEFAULT_VALUES["behaviour_tests"],
    device: str = _DEFAULTS.device,
    model_name: str = _DEFAULTS.model_name,
    deploy_target: str = _DEFAULTS.deploy_target,
    serve_url: str = _DEFAULTS.serve_url,
    kserve_namespace: str = _DEFAULTS.kserve_namespace,
    canary_traffic_percent: int = _DEFAULTS.canary_traffic_percent,
    rollout_timeout_seconds: int = _DEFAULTS.rollout_timeout_seconds,
    prometheus_url: str = _DEFAULTS.prometheus_url,
    canary_analysis_seconds: int = _DEFAULTS.canary_analysis_seconds,
    canary_min_requests: int = _DEFAULTS.canary_min_requests,
    canary_max_error_rate_increase: float = _DEFAULTS.canary_max_error_rate_increase,
    canary_max_p99_ratio: float = _DEFAULTS.canary_max_p99_ratio,
    champion_url: str = _DEFAULTS.champion_url,
    model_repository: str = str(_DEFAULTS.model_repository),
) -> TrainingOutputs:
    validate = validate_data(
        data=data,
        data_format=data_format,
        text_column=text_column,
        label_column=label_column,
        allowed_labels=allowed_labels,
        min_rows=min_rows,
        min_text_chars=min_text_chars,
        max_text_chars=max_text_chars,
        text_mostly=text_mostly,
        max_duplicate_share=max_duplicate_share,
        max_conflicting_label_share=max_conflicting_label_share,
        min_class_share=min_class_share,
        enforce_production_labels=enforce_production_labels,
        redact_pii=redact_pii,
        model_repository=model_repository,
        model_name=model_name,
        deploy_target=deploy_target,
        kserve_namespace=kserve_namespace,
    ).set_display_name("validate")
    # The published model's label set is read afresh on every run.
    validate.set_caching_options(False)
    # The data, and the bundle KServe serves, may be s3:// URIs.
    use_artifact_store_credentials(validate)
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
        lr_schedule=lr_schedule,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_grad_norm=max_grad_norm,
        class_weights=class_weights,
        early_stopping_patience=early_stopping_patience,
        checkpoint_every_steps=checkpoint_every_steps,
        checkpoint_dir=checkpoint_dir,
        seed=seed,
        device=device,
        train_nodes=train_nodes,
        node_gpus=node_gpus,
        shared_storage=shared_storage,
        train_timeout_seconds=train_timeout_seconds,
    ).set_display_name("train")
    request_training_resources(train, train_gpus)
    use_artifact_store_credentials(train)  # multi-node training hands over through the store
    evaluate = evaluate_model(
        model=train.outputs["model"],
        test_data=preprocess.outputs["test_data"],
        model_repository=model_repository,
        model_name=model_name,
        deploy_target=deploy_target,
        kserve_namespace=kserve_namespace,
        champion_url=champion_url,
        min_accuracy=min_accuracy,
        min_macro_f1=min_macro_f1,
        max_regression=max_regression,
        enforce_production_labels=enforce_production_labels,
        slice_column=slice_column,
        behaviour_tests=behaviour_tests,
    ).set_display_name("evaluate")
    # The model in production may have changed since the last run: never answer from a cache.
    evaluate.set_caching_options(False)
    # The champion may be the bundle KServe serves, in the object store.
    use_artifact_store_credentials(evaluate)
    export = export_model(
        model=train.outputs["model"],
        validation_data=preprocess.outputs["validation_data"],
        train_data=preprocess.outputs["train_data"],
        evaluation=evaluate.outputs["metrics"],
    ).set_display_name("export")
    # Only a model that passed the gate replaces the one in production.
    with dsl.If(evaluate.outputs["Output"] == True, name="passed-the-gate"):  # noqa: E712
        deploy = deploy_model(
            bundle=export.outputs["bundle"],
            model_repository=model_repository,
            model_name=model_name,
            deploy_target=deploy_target,
            serve_url=serve_url,
            kserve_namespace=kserve_namespace,
            canary_traffic_percent=canary_traffic_percent,
            rollout_timeout_seconds=rollout_timeout_seconds,
            prometheus_url=prometheus_url,
            canary_analysis_seconds=canary_analysis_seconds,
            canary_min_requests=canary_min_requests,
            canary_max_error_rate_increase=canary_max_error_rate_increase,
            canary_max_p99_ratio=canary_max_p99_ratio,
        ).set_display_name("deploy")
        # Publishing has an effect outside the pipeline: never answer it from a cache.
        deploy.set_caching_options(False)
        use_artifact_store_credentials(deploy)
    return TrainingOutputs(
        bundle=export.outputs["bundle"],
        test_metrics=evaluate.outputs["metrics"],
        validation_report=validate.outputs["report"],
        evaluation_report=evaluate.outputs["report"],
        deploy=evaluate.outputs["Output"],
        decision=evaluate.outputs["decision"],
    )


def pipeline_arguments(config: TrainingConfig) -> dict[str, object]:
    """The pipeline's arguments for one configuration (every parameter, by name)."""
    values = config.model_dump()
    arguments = {
        name: values[name] for name in training_pipeline.component_spec.inputs if name in values
    }
    arguments["model_repository"] = str(config.model_repository)
    return arguments
