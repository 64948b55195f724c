"""docs/plugins.md keeps up with the code: every hook, every item accessor, every interface
member, every RunOptions field and Section member, every ``harness.*`` name it cites, and every
``harness`` command line it shows."""

import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest

from harness import hookspecs
from harness.cli import build_parser
from harness.interfaces import Detector, Episode, Task, RunContext
from harness.features.items import TextItems, ModelItem
from harness.leaderboard.report import Section
from harness.run.runner import RunOptions

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text()
BLOCKS = re.findall(r"```[^\n]*\n(.*?)```", DOC, re.S)
# inline code spans and fenced blocks: where names of the API are written
CODE = BLOCKS + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", DOC, flags=re.S))


def test_every_hook_is_documented():
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert hooks
    for name in hooks:
        assert f"`{name}(register)`" in DOC, name


def public_members(cls):
    fields = getattr(cls, "__dataclass_fields__", {})
    return sorted(n for n in set(vars(cls)) | set(fields) if not n.startswith("_"))


@pytest.mark.parametrize("cls", [TextItems, ModelItem, Detector, Task, Episode, RunContext, RunOptions, Section])
def test_every_item_accessor_and_interface_member_is_documented(cls):
    assert cls.__name__ in DOC
    for name in public_members(cls):
        assert any(re.search(rf"\b{name}\b", code) for code in CODE), (
            f"{cls.__name__}.{name} is not in docs/plugins.md (in code)"
        )


def test_every_harness_name_it_cites_exists():
    names = sorted(set(re.findall(r"\bharness(?:\.[A-Za-z_]\w*)+", "\n".join(CODE))))
    assert len(names) > 20
    for dotted in names:
        parts = dotted.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attribute in parts[split:]:
                assert hasattr(obj, attribute), f"docs/plugins.md cites {dotted}, which does not exist"
                obj = getattr(obj, attribute)
            break


def documented_commands():
    lines = []
    for block in BLOCKS:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("harness "):
                lines.append(line)
            elif "harness " in line and line.startswith(("HARNESS_", "(")):
                lines.append(line[line.index("harness "):].rstrip(")"))
    return lines


def test_every_command_line_it_shows_parses():
    commands = documented_commands()
    assert len(commands) >= 10 and any("--task keyword" in c for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"docs/plugins.md shows a command the CLI rejects: {command}")


def test_both_examples_exist_where_the_page_says():
    for folder in ("harness-example-detector", "harness-example-task"):
        assert f"examples/{folder}/" in DOC
        assert (ROOT / "examples" / folder / "pyproject.toml").exists()
