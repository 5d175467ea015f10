"""Errors a user can meet. Each says what was wrong and how to fix it."""

from __future__ import annotations


class TextopsError(Exception):
    """Base class of every error textops raises on purpose."""


class ConfigError(TextopsError):
    """The configuration is invalid: a bad value, an unknown key, a file that cannot be read."""


class DataError(TextopsError):
    """Input data cannot be read or lacks what training needs."""


class DataValidationError(DataError):
    """Input data failed one or more critical expectations."""


class ModelNotFoundError(TextopsError):
    """A base model or model bundle is missing or incomplete."""


class ExportError(TextopsError):
    """The exported model does not reproduce the trained model's outputs."""


class PublishError(TextopsError):
    """A bundle could not be published to the model repository."""


class TrainingError(TextopsError):
    """Training could not go on: out of GPU memory, or a loss that is no longer a number."""


class EventFormatError(TextopsError):
    """A CloudEvent, or the inference payload it carries, is not in a shape the collector reads."""


class PayloadStoreError(TextopsError):
    """The payload store cannot be opened, written or read."""


class DeployError(TextopsError):
    """A model could not be rolled out or loaded; the message says which model still serves."""


class RemoteModelError(TextopsError):
    """A model server could not be reached, or answered something that is not a prediction."""


class KubeflowError(TextopsError):
    """The Kubeflow Pipelines API could not be reached, or refused or failed a request."""


class DriftInputError(TextopsError):
    """The traffic window or the reference sample cannot be compared for drift."""
