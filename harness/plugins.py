"""The one plugin manager: loads ``harness`` entry points, isolates failures, builds the registry.

Each entry point of the ``harness`` group is imported in its own try/except: a plugin that
fails to import (or whose hook raises) is recorded with its error and shown by
``harness plugins`` and before every ``harness run``; the others still load.
``HARNESS_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none), for
deterministic CI and tests.

Names are never shadowed silently: when two plugins register the same task or detector name,
neither wins; using the name is an error that names both distributions and how to choose.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import pluggy

from harness import PROJECT_NAME, hookspecs
from harness.interfaces import NAME_PATTERN, ConfigError, Detector, Task

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "harness"
MODULE_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class PluginInfo:
    """What ``harness plugins`` shows about one plugin."""

    name: str
    module: str = ""
    distribution: str = ""
    version: str = ""
    tasks: list[str] = field(default_factory=list)
    detectors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, str]:
        """What a record stores about the plugin behind a task or detector (and its key hashes)."""
        return {"plugin": self.name, "distribution": self.distribution, "version": self.version}

    def describe(self) -> str:
        """``name (distribution version)``, or ``name (in-process)``."""
        origin = f"{self.distribution} {self.version}".strip() or "in-process"
        return f"{self.name} ({origin})"


class NameClashError(ConfigError):
    """A task or detector name registered by two plugins was used; the message names both."""


class UnknownNameError(KeyError):
    """An unknown task or detector name; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none registered)'}")

    def __str__(self) -> str:
        return self.args[0]


class Registry:
    """Tasks and detectors registered by the loaded plugins, by name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.tasks: dict[str, type[Task]] = {}
        self.detectors: dict[str, type[Detector]] = {}
        self._origin: dict[tuple[str, str], str] = {}
        # (kind, name) -> every plugin that registered it, when more than one did
        self.clashes: dict[tuple[str, str], list[str]] = {}

    # -- loading -------------------------------------------------------------------------
    def load_entry_points(self, only: Optional[Iterable[str]] = None) -> "Registry":
        """Import every entry point of the group (or only the named ones), isolating failures."""
        wanted = None if only is None else set(only)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if wanted is not None and ep.name not in wanted:
                continue
            if ep.name in self.plugins:  # the same entry point seen twice (duplicate installs)
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else "",
                version=dist.version if dist else "",
            )
            self.plugins[ep.name] = info
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the host down
                info.errors.append(f"import failed: {type(exc).__name__}: {exc}")
                logger.debug("plugin %s failed to import: %s", ep.name, exc)  # the CLI reports registry.problems()
                continue
            self._register_plugin(plugin, info)
        return self

    def add_plugin(self, plugin: Any, name: Optional[str] = None, distribution: str = "",
                   version: str = "") -> PluginInfo:
        """Register an in-process plugin object or module (tests, notebooks)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                          distribution=distribution, version=version)
        self.plugins[name] = info
        self._register_plugin(plugin, info)
        return info

    def _register_plugin(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
            self.pm.check_pending()  # a misspelled hook name fails loudly
        except Exception as exc:
            info.errors.append(f"registration failed: {type(exc).__name__}: {exc}")
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return
        for hook_name, register in (
            ("register_tasks", self._make_register(info, "task")),
            ("register_detectors", self._make_register(info, "detector")),
        ):
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    impl.function(register=register)
                except Exception as exc:
                    info.errors.append(f"{hook_name} raised {type(exc).__name__}: {exc}")
                    logger.debug("%s", traceback.format_exc())

    def _make_register(self, info: PluginInfo, kind: str) -> Callable[[type], None]:
        def register(cls: type) -> None:
            problem = self._validate(cls, kind)
            if problem:
                info.errors.append(f"cannot register {kind} {cls!r}: {problem}")
                return
            table = self.tasks if kind == "task" else self.detectors
            owner = self._origin.get((kind, cls.name))
            if owner == info.name:
                info.errors.append(f"{kind} name {cls.name!r} registered twice by this plugin; the second "
                                   f"({cls.__module__}.{cls.__qualname__}) was not registered")
                return
            if owner is not None:
                # neither wins: the name is unusable until the user chooses (see clash_message)
                claimants = self.clashes.setdefault((kind, cls.name), [owner])
                claimants.append(info.name)
                info.errors.append(f"{kind} name {cls.name!r} is also registered by plugin "
                                   f"{self.plugins[owner].describe()}; using it is an error until one is removed")
                (info.tasks if kind == "task" else info.detectors).append(cls.name)
                return
            table[cls.name] = cls  # type: ignore[index]
            self._origin[(kind, cls.name)] = info.name
            (info.tasks if kind == "task" else info.detectors).append(cls.name)

        return register

    @staticmethod
    def _validate(cls: Any, kind: str) -> str:
        base = Task if kind == "task" else Detector
        if not isinstance(cls, type) or not issubclass(cls, base):
            return f"it is not a subclass of harness.api.{base.__name__}"
        if not getattr(cls, "name", ""):
            return "it has no `name` class attribute"
        if not isinstance(cls.name, str) or not NAME_PATTERN.match(cls.name):
            return f"name {cls.name!r} is not lower_snake_case (letters, digits, underscores)"
        if kind == "task":
            if not isinstance(cls.items, type):
                return "its `items` is not an item type (e.g. harness.api.TextItems or ModelItems)"
            if cls.kind and not NAME_PATTERN.match(cls.kind):
                return f"task kind {cls.kind!r} is not lower_snake_case"
            if not isinstance(cls.report, str) or (cls.report and not MODULE_PATTERN.match(cls.report)):
                return f"its `report` {cls.report!r} is not a dotted module name (e.g. 'mypackage.report') or ''"
            return options_problem(getattr(cls, "options", {}))
        accepts = getattr(cls, "accepts", ())
        if not isinstance(accepts, tuple) or not accepts or not all(isinstance(t, type) for t in accepts):
            return "its `accepts` is not a non-empty tuple of item types (e.g. (harness.api.TextItems,))"
        if not dataclasses.is_dataclass(cls):
            return "it is not a dataclass (hyperparameters must be dataclass fields)"
        return ""

    # -- lookup --------------------------------------------------------------------------
    def origin(self, kind: str, name: str) -> str:
        return self._origin.get((kind, name), "")

    def provenance(self, kind: str, name: str) -> dict[str, str]:
        """Plugin, distribution and version that registered a task or detector (stored in
        records and hashed into result keys, so upgrading a plugin re-runs its jobs)."""
        owner = self.origin(kind, name)
        return self.plugins[owner].provenance() if owner in self.plugins else {"plugin": owner}

    def clash_message(self, kind: str, name: str) -> str:
        """Why a clashing name cannot be used, naming every plugin and how to choose."""
        owners = [self.plugins[p].describe() if p in self.plugins else p for p in self.clashes[(kind, name)]]
        entry_points = ",".join(p for p in self.plugins if p not in self.clashes[(kind, name)][1:])
        return (f"{kind} name {name!r} is registered by {len(owners)} plugins: {' and '.join(owners)}; "
                f"uninstall one of them, or load only the plugins you want with "
                f"HARNESS_LOAD_PLUGINS (e.g. HARNESS_LOAD_PLUGINS={entry_points})")

    def _lookup(self, kind: str, name: str, table: dict[str, Any]) -> Any:
        if (kind, name) in self.clashes:
            raise NameClashError(self.clash_message(kind, name))
        if name not in table:
            raise UnknownNameError(kind, name, table)
        return table[name]

    def task(self, name: str) -> type[Task]:
        return self._lookup("task", name, self.tasks)

    def detector(self, name: str) -> type[Detector]:
        return self._lookup("detector", name, self.detectors)

    def detectors_for(self, task: type[Task]) -> list[str]:
        """Usable detectors that accept the items of ``task`` (clashing names are left out)."""
        return sorted(n for n, cls in self.detectors.items()
                      if accepts(cls, task) and ("detector", n) not in self.clashes)

    @property
    def errors(self) -> dict[str, list[str]]:
        return {name: info.errors for name, info in self.plugins.items() if info.errors}

    def problems(self) -> list[str]:
        """One line per load problem (failed import, misspelled hook, invalid class, name clash)."""
        return [f"plugin {self.plugins[name].describe()}: {error}"
                for name, errors in self.errors.items() for error in errors]


def accepts(detector: type[Detector], task: type[Task]) -> bool:
    """Whether ``detector`` can score the items of ``task``'s episodes."""
    return isinstance(task.items, type) and issubclass(task.items, tuple(detector.accepts))


def options_problem(options: Any) -> str:
    """What is wrong with a task's ``options`` table (``""`` if nothing): it must map
    lower_snake_case names to ``(type, default, meaning)`` with a default of that type."""
    if not isinstance(options, dict):
        return "its `options` is not a dict of name -> (type, default, meaning)"
    for name, spec in options.items():
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            return f"option name {name!r} is not lower_snake_case"
        if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], type) and isinstance(spec[2], str)):
            return f"option {name!r} is not declared as (type, default, meaning), got {spec!r}"
        kind, default, _ = spec
        if not (isinstance(default, kind) or (kind is float and isinstance(default, int))) or (
                kind is not bool and isinstance(default, bool)):
            return f"option {name!r} declares type {kind.__name__} but its default is {default!r}"
    return ""


_registry: Optional[Registry] = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded once from the entry points (honours HARNESS_LOAD_PLUGINS)."""
    global _registry
    if _registry is None or reload:
        only_env = os.environ.get("HARNESS_LOAD_PLUGINS")
        only = None if only_env is None else [s.strip() for s in only_env.split(",") if s.strip()]
        _registry = Registry().load_entry_points(only)
    return _registry
