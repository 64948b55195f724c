"""docs/plugins.md keeps up with the code: every hook, every item accessor, every interface member."""

import inspect
import re
from pathlib import Path

from harness import hookspecs
from harness.interfaces import Detector, Episode, Task, TaskConfig
from harness.items import InputItems, ModelItem

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
# inline code spans and fenced blocks: where names of the API are written
CODE = re.findall(r"```[^\n]*\n(.*?)```", DOC, re.S) + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", DOC, flags=re.S))


def test_every_hook_is_documented():
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert hooks
    for name in hooks:
        assert f"`{name}(register)`" in DOC, name


def public_members(cls):
    fields = getattr(cls, "__dataclass_fields__", {})
    return sorted(n for n in set(vars(cls)) | set(fields) if not n.startswith("_"))


def test_every_item_accessor_and_interface_member_is_documented():
    for cls in (InputItems, ModelItem, Detector, Task, Episode, TaskConfig):
        assert cls.__name__ in DOC
        for name in public_members(cls):
            assert any(re.search(rf"\b{name}\b", code) for code in CODE), (
                f"{cls.__name__}.{name} is not in docs/plugins.md (in code)"
            )
