"""An example detector-harness plugin: the ``keyword`` task, a backdoored keyword spotter.

Copy this package to start your own task plugin: rename the package and the entry point in
``pyproject.toml``, replace the task, keep the ``register_tasks`` hook.
"""

from harness.api import hookimpl

from harness_example_task.task import KeywordTask

__version__ = "0.1.0"


@hookimpl
def register_tasks(register) -> None:
    """The plugin's one hook: hand each task class to the harness."""
    register(KeywordTask)
