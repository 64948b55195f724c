"""Task options: ``--option KEY=VALUE`` validated against a task's declared option table.

A task declares ``{name: (type, default, meaning)}``; :func:`resolve_options` coerces each
given value to its type, fills the defaults, and raises a ConfigError that names the field,
the expected type and the valid names.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from harness.interfaces import ConfigError

OptionSpec = Mapping[str, tuple[type, Any, str]]


def resolve_options(task: str, spec: OptionSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Given options coerced to their declared types, plus defaults for the rest."""
    resolved: dict[str, Any] = {}
    for key, value in given.items():
        if key not in spec:
            raise ConfigError(f"task {task!r} has no option {key!r}; valid: {', '.join(spec)}")
        kind = spec[key][0]
        try:
            resolved[key] = _coerce(kind, value)
        except (TypeError, ValueError):
            raise ConfigError(f"task {task!r} option {key!r} must be {kind.__name__}, got {value!r}") from None
    for key, (_, default, _) in spec.items():
        resolved.setdefault(key, default)
    return resolved


def _coerce(kind: type, value: Any) -> Any:
    """``value`` as ``kind``; refuses lossy or ambiguous ones (1.5 -> int, "yes" -> bool)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(value)
    if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ValueError(value)
    if kind is str and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return kind(value)


def validate_options(task: str, spec: OptionSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The given options coerced to their declared types (no defaults added): what the runner
    passes to every task, so a task plugin never sees an unknown or mistyped option."""
    if given and not spec:
        raise ConfigError(f"task {task!r} takes no --option; got {next(iter(given))!r}")
    resolved = resolve_options(task, spec, given)
    return {key: resolved[key] for key in given}


def describe_options(spec: OptionSpec) -> str:
    """One line per option, for ``harness list --verbose``."""
    return "\n".join(f"{name} ({kind.__name__}, default {default!r}): {meaning}"
                     for name, (kind, default, meaning) in spec.items())
