"""The plugin contract: the hooks a ``harness`` plugin may implement.

A plugin is a module (or object) listed in the ``harness`` entry-point group of its
distribution, e.g. in ``pyproject.toml``::

    [project.entry-points.harness]
    mydetector = "harness_mydetector"

and implementing one or both hooks below with ``@hookimpl`` from :mod:`harness.api`. The built-in tasks
and detectors are registered through exactly these hooks and entry points.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from harness import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register task classes by calling ``register(TaskClass)`` once per task.

    ``TaskClass`` must subclass :class:`harness.api.Task`, set a unique class attribute
    ``name`` (lower_snake_case; what users type after ``--task``) and ``items`` (the item type
    its episodes hold, e.g. :class:`harness.api.TextItems`: every detector that accepts it can
    score the task), and declare its ``options`` as ``name -> (type, default, meaning)``. The
    host validates each class when it is registered: a class that is not a Task, has no name,
    a malformed name, no item type or a malformed options table is reported and not
    registered. A name another plugin also registers is never resolved silently: both
    registrations are kept, and using the name is an error naming both distributions
    (``harness plugins`` and every ``harness run`` report the clash). Return nothing.
    """


@hookspec
def register_detectors(register: Callable[[type], None]) -> None:
    """Register detector classes by calling ``register(DetectorClass)`` once per detector.

    ``DetectorClass`` must subclass :class:`harness.api.Detector`, be a dataclass whose fields
    are its hyperparameters (all with defaults; they go into the result key), and set the class
    attributes ``name`` (what users type after ``--detector``) and ``accepts`` (the item types
    it can score, e.g. ``(TextItems,)``). Its ``fit(trusted)`` learns from trusted items only
    and returns ``self``; ``score(items)`` returns a float array of shape ``(n_items,)`` or a
    :class:`harness.api.Scores`, higher = more suspicious. Validation and name clashes are
    handled as for :func:`register_tasks`. Return nothing.
    """
