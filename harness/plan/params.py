"""Detector hyperparameters from the command line: type-checked against the dataclass fields.

``--param DETECTOR.FIELD=VALUE`` values arrive as JSON-like data; :func:`make_detector`
checks each against the field's annotation before the detector is built, so a wrong type is
a usage error naming the detector, the field and what it accepts.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any

from harness.interfaces import ConfigError, Detector

UNION_TYPES = (typing.Union, types.UnionType)


def make_detector(cls: type[Detector], params: dict[str, Any]) -> Detector:
    """Instantiate with overrides; an unknown field, a value of the wrong type or a bad value is
    a ConfigError naming the detector, the field and what it accepts."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - fields
    if unknown:
        raise ConfigError(
            f"detector {cls.name!r} has no hyperparameter {sorted(unknown)[0]!r}; valid: {', '.join(sorted(fields)) or '(none)'}"
        )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: leave the checking to the detector
        hints = {}
    for name, value in params.items():
        if name in hints and not matches_type(value, hints[name]):
            raise ConfigError(
                f"detector {cls.name!r} hyperparameter {name!r} must be {type_name(hints[name])}, "
                f"got {type(value).__name__} {value!r}"
            )
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detector {cls.name!r}: {exc}") from exc


def matches_type(value: Any, annotation: Any) -> bool:
    """Whether a JSON-like ``value`` fits a hyperparameter annotation (int, float, bool, str,
    Optional/Union, Literal, list/tuple/Sequence of X, dict). Unknown annotations match."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in UNION_TYPES:
        return any(matches_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(matches_type(v, inner) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def type_name(annotation: Any) -> str:
    """A readable name for an annotation: ``int``, ``int or null``, ``list of int``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if args and origin in UNION_TYPES:
        return " or ".join(type_name(a) for a in args)
    if args and origin is not None:
        return f"{getattr(origin, '__name__', str(origin))} of {type_name(args[0])}"
    return str(annotation)
