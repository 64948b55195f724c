"""docs/plugins.md keeps up with the code: every hook, every item accessor, every interface member."""

import inspect
from pathlib import Path

from harness import hookspecs
from harness.interfaces import Detector, Episode, Task, TaskConfig
from harness.items import InputItems, ModelItem

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()


def test_every_hook_is_documented():
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert hooks
    for name in hooks:
        assert f"`{name}(register)`" in DOC, name


def test_every_item_accessor_and_interface_member_is_documented():
    members = ["activations", "logodds", "attributions", "prompts", "records", "handle", "from_arrays"]
    assert set(members) <= set(dir(InputItems)) | set(InputItems.__dataclass_fields__)
    members += ["p_benign", "critical_prompts", "benign_letters", "mask"]
    members += ["fit", "score", "diagnostics", "task_kinds", "name"]
    members += ["dataset_names", "episodes", "metrics", "version", "kind"]
    members += [f for f in Episode.__dataclass_fields__] + [f for f in TaskConfig.__dataclass_fields__]
    for name in members:
        assert f"`{name}" in DOC or f"{name}`" in DOC, name
    for cls in (Detector, Task, ModelItem):
        assert f"`{cls.__module__}.{cls.__name__}`" in DOC or cls.__name__ in DOC
