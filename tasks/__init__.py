"""Built-in task plugins, registered through the ``harness`` entry points like any third party's."""

from harness.api import hookimpl


@hookimpl
def register_tasks(register):
    from harness.tasks.mad.task import MadTask
    from harness.tasks.poser.task import PoserTask

    register(MadTask)
    register(PoserTask)
