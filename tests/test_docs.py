"""docs/plugins.md's hook reference is generated from command_handlers/hookspecs.py.

``UPDATE_DOCS=1 python -m pytest tests/test_docs.py`` rewrites the section; without
it, the test fails when the section and the docstrings differ. Never edit the
section by hand.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import pluggy

from command_handlers import hookspecs
from command_handlers.plugins import BUILTIN_PLUGINS

PLUGINS_MD = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BEGIN = "<!-- hook reference: generated from command_handlers/hookspecs.py; do not edit -->"
END = "<!-- end of hook reference -->"
VIEWS = (hookspecs.TaskView, hookspecs.OutcomeView, hookspecs.RunView, hookspecs.WrittenAnswer)

_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|exc|obj):`(~?)([^`]+)`")
_SECTION = re.compile(r"^(Args|Attributes|Raises|Returns|Yields):$")
_ITEM = re.compile(r"^([\w*.]+(?: \([^)]*\))?):\s?(.*)$")


def hooks() -> list[Callable[..., Any]]:
    """The hook specifications of hookspecs.py, in the module's order."""
    found = [
        fn
        for fn in vars(hookspecs).values()
        if inspect.isfunction(fn) and hasattr(fn, "command_handlers_spec")
    ]
    return sorted(found, key=lambda fn: fn.__code__.co_firstlineno)


def _roles(line: str) -> str:
    """``:func:`x``` and ``:class:`~a.b.C``` -> Markdown code."""
    return _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines from ``start`` that are blank or indented deeper than ``indent``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    block = lines[start:end]
    while block and not block[-1].strip():
        block.pop()
    return textwrap.dedent("\n".join(block)).strip("\n").splitlines(), end


def render_docstring(doc: str) -> str:
    """A Google-style docstring as Markdown: literal blocks fenced, sections labelled."""
    lines, out, i = doc.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        section = _SECTION.match(line)
        if line.rstrip().endswith("::"):
            code, i = _block(lines, i + 1, _indent(line))
            out += [_roles(line.rstrip()[:-1]), "", "```python", *code, "```", ""]
        elif section:
            body, i = _block(lines, i + 1, 0)
            out.append(f"**{section[1]}:**")
            if section[1] in ("Returns", "Yields"):
                out += [_roles(text.strip()) for text in body]
            else:
                out.append("")
                for text in body:
                    item = _ITEM.match(text)
                    if _indent(text) == 0 and item:
                        out.append(f"- `{item[1]}`: {_roles(item[2])}".rstrip())
                    else:
                        out.append(("  " if _indent(text) else "- ") + _roles(text.strip()))
            out.append("")
        else:
            out.append(_roles(line))
            i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _hook(fn: Callable[..., Any]) -> str:
    names = ", ".join(inspect.signature(fn).parameters)
    parts = [f"### `{fn.__name__}({names})`"]
    if fn.command_handlers_spec.get("firstresult"):  # type: ignore[attr-defined]
        parts.append("`firstresult`: the first result other than `None` is the hook's answer.")
    parts.append(render_docstring(inspect.getdoc(fn) or ""))
    return "\n\n".join(parts)


def _view(cls: type) -> str:
    parts = [f"#### `{cls.__name__}`", render_docstring(inspect.getdoc(cls) or "")]
    fields = [
        f"- `{name}`: {_roles(' '.join((inspect.getdoc(value) or '').split()))}"
        for name, value in vars(cls).items()
        if isinstance(value, property)
    ]
    if fields:
        parts.append("\n".join(fields))
    return "\n\n".join(parts)


def render_hook_reference() -> str:
    """The text between the markers of docs/plugins.md."""
    parts = [
        render_docstring(inspect.getdoc(hookspecs) or ""),
        *(_hook(fn) for fn in hooks()),
        "### What plugins read",
        "What the hooks above hand over, from `command_handlers.hookspecs`.",
        *(_view(cls) for cls in VIEWS),
    ]
    return "\n\n" + "\n\n".join(parts) + "\n\n"


def _split(text: str) -> tuple[str, str, str]:
    assert text.count(BEGIN) == 1, f"docs/plugins.md needs one line {BEGIN}"
    assert text.count(END) == 1, f"docs/plugins.md needs one line {END}"
    head, rest = text.split(BEGIN)
    section, tail = rest.split(END)
    return head, section, tail


def test_the_hook_reference_is_generated_from_the_hookspecs() -> None:
    head, section, tail = _split(PLUGINS_MD.read_text(encoding="utf-8"))
    expected = render_hook_reference()
    if os.environ.get("UPDATE_DOCS") == "1":
        PLUGINS_MD.write_text(head + BEGIN + expected + END + tail, encoding="utf-8")
        section = expected
    assert section == expected, (
        "docs/plugins.md's hook reference differs from command_handlers/hookspecs.py;"
        " run UPDATE_DOCS=1 python -m pytest tests/test_docs.py"
    )


def test_every_hook_has_a_heading() -> None:
    _, section, _ = _split(PLUGINS_MD.read_text(encoding="utf-8"))
    names = [fn.__name__ for fn in hooks()]
    pm = pluggy.PluginManager("command_handlers")
    pm.add_hookspecs(hookspecs)
    assert sorted(names) == sorted(vars(pm.hook))  # every hook pluggy knows, none missed
    headings = re.findall(r"^### `(\w+)\(", section, flags=re.MULTILINE)
    assert headings == names


def test_every_builtin_plugin_is_documented() -> None:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    for name, module in BUILTIN_PLUGINS.items():
        assert f"`{name}`" in text, name
        assert f"`{module}`" in text, module


def test_the_renderer() -> None:
    doc = (
        "Do it; see :func:`other` and :class:`~a.b.Thing`.\n\n"
        "Example::\n\n    @hookimpl\n    def f(x):\n        return x\n\n"
        "Args:\n    x: The ``x``,\n        on two lines.\n\n"
        "Returns:\n    The answer, or ``None``."
    )
    assert render_docstring(doc) == (
        "Do it; see `other` and `Thing`.\n\n"
        "Example:\n\n```python\n@hookimpl\ndef f(x):\n    return x\n```\n\n"
        "**Args:**\n\n- `x`: The ``x``,\n  on two lines.\n\n"
        "**Returns:**\nThe answer, or ``None``."
    )
