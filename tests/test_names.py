"""File names fit the file system's 255 bytes, the same way every run."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from command_handlers.intelligent_parallel.names import NAME_MAX, fit_name, name_bytes
from command_handlers.intelligent_parallel.write_back import (
    _document,
    docs_folder,
    document_path,
)


def test_a_name_that_fits_is_kept_as_it_is() -> None:
    assert fit_name("what-is-recursion-clarification-path", ".md") == (
        "what-is-recursion-clarification-path.md"
    )
    stem = "x" * (NAME_MAX - 3)
    assert fit_name(stem, ".md") == stem + ".md"  # exactly 255 bytes


def test_a_long_name_is_cut_and_gets_a_hash_of_the_whole() -> None:
    stem = "topic-" + "a" * 300
    name = fit_name(stem, ".md")
    assert name_bytes(name) <= NAME_MAX
    assert name.startswith("topic-aaaa")
    assert name.endswith(".md")
    assert fit_name(stem, ".md") == name  # the same every time
    assert fit_name(stem[:-1] + "b", ".md") != name  # alike at the start, still apart
    # Its numbered names share the shortened stem.
    assert fit_name(stem, "-2.md") == name[: -len(".md")] + "-2.md"


@given(st.text(min_size=1, max_size=400), st.sampled_from([".md", "-2.md", "-123456.md", ""]))
def test_every_name_fits(stem: str, suffix: str) -> None:
    stem = stem.replace("/", "-").replace("\0", "-")
    assert name_bytes(fit_name(stem, suffix)) <= NAME_MAX


def test_multibyte_characters_are_counted_in_bytes_and_never_split() -> None:
    stem = "é" * 200  # 400 bytes in UTF-8
    name = fit_name(stem, ".md")
    assert name_bytes(name) <= NAME_MAX
    name.encode("utf-8")  # no half character (it would not even encode)
    assert name.startswith("é" * 100)


def test_a_long_agent_name_gets_a_document_on_every_run(tmp_path: Path) -> None:
    agent = "a" * 250
    path = document_path(tmp_path, "What is recursion?", agent)
    assert name_bytes(path.name) <= NAME_MAX
    first = _document(tmp_path, f"what-is-recursion-{agent}", "# T\n\nanswer\n")
    again = _document(tmp_path, f"what-is-recursion-{agent}", "# T\n\nanswer\n")
    other = _document(tmp_path, f"what-is-recursion-{agent}", "# T\n\nanother\n")
    assert first == again == path
    assert other.name == path.name[: -len(".md")] + "-2.md"


def test_the_default_documents_folder_of_a_long_canvas_name_fits(tmp_path: Path) -> None:
    canvas = tmp_path / ("c" * 248 + ".canvas")
    assert docs_folder(tmp_path / "notes.canvas", None, tmp_path).name == "notes answers"
    folder = docs_folder(canvas, None, tmp_path)
    assert name_bytes(folder.name) <= NAME_MAX
    assert folder.name.endswith(" answers")
    assert folder == docs_folder(canvas, None, tmp_path)
