"""Command-line flags of the training settings: one per `TrainingConfig` field, spelt, typed
and described by the field, so every command that takes a setting spells it as `textops run`.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable

from textops.components.common.config import TrainingConfig


def comma_list(value: str) -> list[str]:
    """A list setting's flag value: comma-separated items, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def add_config_flags(parser: argparse._ActionsContainer, names: Iterable[str]) -> None:
    """One flag per named TrainingConfig field (`text_column` -> `--text-column`).

    Unset, a flag is None, so a config file's value (or the field's default) stands.

    Args:
        parser: The parser or argument group the flags go in.
        names: The fields; a list field takes comma-separated items.
    """
    for name in names:
        field = TrainingConfig.model_fields[name]
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, typing.Any] = {
            "dest": name,
            "default": None,  # None = not given, so the config file's value stands
            "help": f"{field.description} (default: {field.default})",
        }
        if typing.get_origin(field.annotation) is typing.Literal:
            kwargs["choices"] = typing.get_args(field.annotation)
        elif field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(field.annotation) is list:
            kwargs["type"] = comma_list
            kwargs["metavar"] = "A,B,..."
            kwargs["help"] = f"{field.description} (default: none)"
        elif field.annotation in (int, float):
            kwargs["type"] = field.annotation
            kwargs["metavar"] = field.annotation.__name__.upper()
        else:
            kwargs["metavar"] = name.split("_")[-1].upper()
        parser.add_argument(flag, **kwargs)
