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
