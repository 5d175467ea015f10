"""The training pipeline: collect feedback -> validate -> preprocess -> train -> evaluate ->
export -> deploy.

collect_feedback turns the payload store's labelled traffic into a feedback snapshot and
passes it on with `feedback_snapshots`; validate merges the snapshots into the data and hands
their held-out rows to evaluate as the production test set.

Its parameters are generated from `TrainingConfig`'s fields (names, types, defaults), so the
compiled pipeline and `textops run` agree; each step gets the parameters its component
declares (`parameters.settings_for`).
"""

import inspect
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Metrics, Model

from textops.components.common.cluster_run import PAYLOAD_STORE_SECRET, PAYLOAD_STORE_SECRET_KEY
from textops.components.common.config import TrainingConfig
from textops.components.deploy.component import deploy_model
from textops.components.evaluate.component import evaluate_model
from textops.components.export.component import export_model
from textops.components.monitor.collector_cli import STORE_URL_ENV
from textops.components.monitor.component import collect_feedback
from textops.components.preprocess.component import preprocess_data
from textops.components.train.component import train_model
from textops.components.validate.component import validate_data
from textops.pipelines.cluster import use_artifact_store_credentials
from textops.pipelines.parameters import pipeline_function, settings_for, settings_parameters

PIPELINE_NAME = "textops-training"
TRAIN_CPU_REQUEST = "4"
TRAIN_MEMORY_REQUEST = "16Gi"
TRAIN_MEMORY_LIMIT = "32Gi"


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


def use_payload_store_url(task: dsl.PipelineTask) -> None:
    """Give `task` the payload store's URL from the collector's Secret, where there is one.

    The URL carries a password, so it comes from the Secret (manifests/README.md,
    "Production") rather than a parameter; a setting that names a store wins.
    """
    kubernetes.use_secret_as_env(
        task,
        secret_name=PAYLOAD_STORE_SECRET,
        secret_key_to_env={PAYLOAD_STORE_SECRET_KEY: STORE_URL_ENV},
        optional=True,
    )


class TrainingOutputs(NamedTuple):
    """What a run hands back: the bundle, its test metrics, the reports, the gate's decision."""

    bundle: Model
    test_metrics: Metrics
    validation_report: HTML
    evaluation_report: HTML
    deploy: bool
    decision: Artifact


#: The pipeline's parameters: every setting of `TrainingConfig` (name, KFP type, default),
#: then the model repository, which a local run derives from `output_dir`.
PARAMETERS: tuple[inspect.Parameter, ...] = (
    *settings_parameters(TrainingConfig, exclude={"output_dir"}),
    inspect.Parameter(
        "model_repository",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=str(TrainingConfig().model_repository),
        annotation=str,
    ),
)


def _training(params: dict[str, Any]) -> TrainingOutputs:
    collect = collect_feedback(**settings_for(collect_feedback, params)).set_display_name(
        "collect feedback"
    )
    # Labels arrive all the time, and the model in production may have changed: never cached.
    collect.set_caching_options(False)
    use_payload_store_url(collect)
    # feedback_dir, and the bundle KServe serves, may be in the object store.
    use_artifact_store_credentials(collect)
    validate = validate_data(
        # The feedback snapshots merged into the data: the fresh one and those given.
        feedback=collect.outputs["snapshots"],
        **settings_for(validate_data, params, wired={"feedback"}),
    ).set_display_name("validate")
    # The published model's label set is read afresh on every run.
    validate.set_caching_options(False)
    # The data, and the bundle KServe serves, may be s3:// URIs.
    use_artifact_store_credentials(validate)
    preprocess = preprocess_data(
        validated_data=validate.outputs["validated_data"],
        **settings_for(preprocess_data, params),
    ).set_display_name("preprocess")
    train = train_model(
        train_data=preprocess.outputs["train_data"],
        validation_data=preprocess.outputs["validation_data"],
        **settings_for(train_model, params),
    ).set_display_name("train")
    request_training_resources(train, params["train_gpus"])
    use_artifact_store_credentials(train)  # multi-node training hands over through the store
    evaluate = evaluate_model(
        model=train.outputs["model"],
        test_data=preprocess.outputs["test_data"],
        # The split the model learned from: the linear baseline is fitted on the same rows.
        train_data=preprocess.outputs["train_data"],
        # The calibration temperature is fitted on a split the weights were not trained on.
        validation_data=preprocess.outputs["validation_data"],
        # Held-out production traffic: the gate compares both models there too.
        production_test=validate.outputs["production_test"],
        **settings_for(evaluate_model, params),
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
            bundle=export.outputs["bundle"], **settings_for(deploy_model, params)
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


training_pipeline = dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate labelled text, fine-tune a transformer classifier, evaluate it, "
    "export it to ONNX and publish the model bundle.",
)(pipeline_function(_training, PARAMETERS, returns=TrainingOutputs))


def pipeline_arguments(config: TrainingConfig) -> dict[str, object]:
    """The pipeline's arguments for one configuration (every parameter, by name)."""
    values = config.model_dump()
    arguments = {
        name: values[name] for name in training_pipeline.component_spec.inputs if name in values
    }
    arguments["model_repository"] = str(config.model_repository)
    return arguments
