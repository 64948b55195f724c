"""An example detector-harness plugin: the model-backed ``keyword`` task.

Copy this package to start your own task plugin: rename the package and the entry point in
``pyproject.toml``, replace the data, the model recipe and the episode, keep the
``register_tasks`` hook. This module is imported by every ``harness`` command (``harness
list`` too), so it imports nothing heavy: torch loads only when a model is trained.
"""

from __future__ import annotations

from harness import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_tasks(register) -> None:
    """The plugin's one hook: hand each task class to the harness."""
    from harness_example_task.task import KeywordTask

    register(KeywordTask)
