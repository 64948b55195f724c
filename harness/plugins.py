"""The one plugin manager: loads ``harness`` entry points, isolates failures, builds the registry.

Each entry point of the ``harness`` group is imported in its own try/except: a plugin that
fails to import (or whose hook raises) is recorded with its error and shown by
``harness plugins``; the others still load. ``HARNESS_LOAD_PLUGINS=a,b`` loads only the
named entry points (empty: none), for deterministic CI and tests.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import pluggy

from harness import PROJECT_NAME, hookspecs
from harness.interfaces import TASK_KINDS, Detector, Task

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "harness"


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
                logger.warning("plugin %s failed to import: %s", ep.name, exc)
                continue
            self._register_plugin(plugin, info)
        return self

    def add_plugin(self, plugin: Any, name: Optional[str] = None) -> PluginInfo:
        """Register an in-process plugin object or module (tests, notebooks)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)))
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
            if owner is not None:
                info.errors.append(
                    f"{kind} name {cls.name!r} is already registered by plugin {owner!r}; "
                    f"{cls.__module__}.{cls.__qualname__} from {info.name!r} was not registered"
                )
                return
            table[cls.name] = cls  # type: ignore[index]
            self._origin[(kind, cls.name)] = info.name
            (info.tasks if kind == "task" else info.detectors).append(cls.name)

        return register

    @staticmethod
    def _validate(cls: Any, kind: str) -> str:
        base = Task if kind == "task" else Detector
        if not isinstance(cls, type) or not issubclass(cls, base):
            return f"it is not a subclass of harness.interfaces.{base.__name__}"
        if not getattr(cls, "name", ""):
            return "it has no `name` class attribute"
        if kind == "task" and cls.kind not in TASK_KINDS:
            return f"kind {cls.kind!r} is not one of {TASK_KINDS}"
        if kind == "detector":
            if not dataclasses.is_dataclass(cls):
                return "it is not a dataclass (hyperparameters must be dataclass fields)"
            unknown = set(cls.task_kinds) - set(TASK_KINDS)
            if unknown:
                return f"task_kinds {sorted(unknown)} not in {TASK_KINDS}"
        return ""

    # -- lookup --------------------------------------------------------------------------
    def origin(self, kind: str, name: str) -> str:
        return self._origin.get((kind, name), "")

    def task(self, name: str) -> type[Task]:
        if name not in self.tasks:
            raise UnknownNameError("task", name, self.tasks)
        return self.tasks[name]

    def detector(self, name: str) -> type[Detector]:
        if name not in self.detectors:
            raise UnknownNameError("detector", name, self.detectors)
        return self.detectors[name]

    def detectors_for(self, task_kind: str) -> list[str]:
        return sorted(n for n, cls in self.detectors.items() if task_kind in cls.task_kinds)

    @property
    def errors(self) -> dict[str, list[str]]:
        return {name: info.errors for name, info in self.plugins.items() if info.errors}


_registry: Optional[Registry] = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded once from the entry points (honours HARNESS_LOAD_PLUGINS)."""
    global _registry
    if _registry is None or reload:
        only_env = os.environ.get("HARNESS_LOAD_PLUGINS")
        only = None if only_env is None else [s.strip() for s in only_env.split(",") if s.strip()]
        _registry = Registry().load_entry_points(only)
    return _registry
