"""Pipeline parameters made from the settings models, and each task's share of them.

Both DAGs are built the same way: their signature is generated from settings models (name,
KFP type, default: `settings_parameters`), kfp calls the DAG's body with one pipeline channel
per parameter, and each task takes exactly the inputs its component declares
(`settings_for`), except those the DAG wires from another task's outputs. A setting added
to a model thus becomes a pipeline parameter, and reaches every component that declares it,
without a line here or in a DAG.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from kfp.dsl.types.type_utils import is_parameter_type
from pydantic import BaseModel

R = TypeVar("R")

#: The Python types a KFP parameter may have.
KFP_PARAMETER_TYPES: tuple[type, ...] = (str, int, float, bool, list)


def kfp_type(annotation: Any) -> type:
    """The KFP parameter type of a settings field's annotation (a Literal of strings is str).

    Raises:
        TypeError: The annotation has no KFP parameter type.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        kinds = {type(value) for value in typing.get_args(annotation)}
        if len(kinds) == 1 and next(iter(kinds)) in KFP_PARAMETER_TYPES:
            return kinds.pop()
    elif origin is list or annotation is list:
        return list
    elif annotation in KFP_PARAMETER_TYPES:
        return typing.cast(type, annotation)
    raise TypeError(f"{annotation!r} is not a KFP parameter type ({KFP_PARAMETER_TYPES})")


def settings_parameters(
    model: type[BaseModel], exclude: Collection[str] = ()
) -> list[inspect.Parameter]:
    """One pipeline parameter per field of `model`, in field order, with its type and default.

    Args:
        model: A settings model whose every field has a default.
        exclude: Fields that are not pipeline parameters.
    """
    defaults = model().model_dump()  # plain values: nested models become JSON-like dicts
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=defaults[name],
            annotation=kfp_type(field.annotation),
        )
        for name, field in model.model_fields.items()
        if name not in exclude
    ]


def pipeline_function(
    body: Callable[[dict[str, Any]], R],
    parameters: Sequence[inspect.Parameter],
    returns: Any = inspect.Signature.empty,
) -> Callable[..., R]:
    """A function for `dsl.pipeline` whose signature is `parameters`; it calls `body` with
    the parameters' channels by name.

    kfp reads a pipeline's parameters from `inspect.signature` and calls the function with one
    argument per parameter, in order.
    """
    names = [parameter.name for parameter in parameters]

    def pipeline(*values: Any) -> R:
        return body(dict(zip(names, values, strict=True)))

    # Not functools.wraps: its __wrapped__ would lead inspect to the body's own signature.
    pipeline.__name__ = pipeline.__qualname__ = body.__name__
    pipeline.__doc__ = body.__doc__
    pipeline.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        list(parameters), return_annotation=returns
    )
    return pipeline


def settings_for(
    component: Any, parameters: Mapping[str, Any], wired: Collection[str] = ()
) -> dict[str, Any]:
    """The arguments of one task: each parameter input `component` declares, from `parameters`.

    Args:
        component: A kfp component or pipeline (anything with a `component_spec`).
        parameters: The pipeline's parameters (channels), by name.
        wired: Parameter inputs the DAG gives from other tasks' outputs, left out here.

    Raises:
        KeyError: The component declares an input the pipeline has no parameter for, or a
            `wired` input it does not declare.
    """
    inputs = component.component_spec.inputs or {}
    declared = [name for name, spec in inputs.items() if is_parameter_type(spec.type)]
    undeclared = sorted(set(wired) - set(declared))
    if undeclared:
        raise KeyError(f"{component.name} declares no parameter input {', '.join(undeclared)}")
    missing = [name for name in declared if name not in parameters and name not in wired]
    if missing:
        raise KeyError(
            f"{component.name} declares {', '.join(missing)}, which the pipeline has no "
            "parameter for: add the setting to a settings model the pipeline is made from"
        )
    return {name: parameters[name] for name in declared if name not in wired}
