"""Task options: ``--option KEY=VALUE`` validated against a task's declared option table.

A task declares ``{name: (type, default, meaning)}``; :func:`resolve_options` coerces each
given value to its type, fills the defaults, and raises a ConfigError that names the field,
the expected type and the valid names.
"""

from __future__ import annotations

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
            resolved[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"task {task!r} option {key!r} must be {kind.__name__}, got {value!r}") from None
    for key, (_, default, _) in spec.items():
        resolved.setdefault(key, default)
    return resolved


def describe_options(spec: OptionSpec) -> str:
    """One line per option, for ``harness list --verbose``."""
    return "\n".join(f"{name} ({kind.__name__}, default {default!r}): {meaning}"
                     for name, (kind, default, meaning) in spec.items())
