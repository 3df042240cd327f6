"""Obsidian fidelity, in folders laid out like a vault.

``vault/.obsidian/`` marks the vault's root; canvases live in subfolders and
are reached through symbolic links. Edits come from real second processes:
the agent program itself (while the agents run), or an editor started at the
very moment the run replaces the file (``merge_canvas``'s ``before_replace``).
Nothing waits on a clock: processes are run to completion, or followed
through their output lines, and every one is reaped.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers.canvas import Canvas
from command_handlers.fileio import (
    CanvasBusyError,
    CanvasMergeError,
    canvas_lock,
    find_vault,
    merge_canvas,
)
from command_handlers.intelligent_parallel.write_back import Layout, write_answers

Run = Callable[..., "tuple[int, str, str]"]

#: An agent program: answers at once; a note saying EDIT first has the agent (a
#: second process) edit the canvas named in TEST_CANVAS like Obsidian (in place):
#: add a node and move another; a note saying DELETE has it delete that note;
#: a note saying PLEASE WAIT waits until killed.
AGENT = r"""
import json, os, sys, time
from pathlib import Path
log = Path(sys.argv[1])
data = sys.stdin.read()
note = data.split("## Learner's understanding\n", 1)[-1].split("\n\n", 1)[0].strip()
with log.open("a", encoding="utf-8") as handle:
    handle.write(note.replace("\n", " ") + "\n")
canvas = os.environ.get("TEST_CANVAS")
if canvas and ("EDIT" in note or "DELETE" in note):
    path = Path(canvas)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if "EDIT" in note:
        doc["nodes"].append({"id": "added-by-user", "type": "text", "text": "mine",
                             "x": -900, "y": -900, "width": 200, "height": 100})
        for node in doc["nodes"]:
            if node["id"] == "q1":
                node["x"] -= 77
    else:
        gone = [n["id"] for n in doc["nodes"] if "DELETE" in n.get("text", "")]
        doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in gone]
        doc["edges"] = [e for e in doc["edges"]
                        if e["fromNode"] not in gone and e["toNode"] not in gone]
    with open(path, "w", encoding="utf-8") as handle:  # in place, as Obsidian saves
        handle.write(json.dumps(doc, indent="\t"))
if "PLEASE WAIT" in note:
    time.sleep(120)
print("ANSWER: " + note[:60])
"""

#: An editor, as a second process: adds a node to the canvas given, in place or by rename.
EDITOR = r"""
import json, os, sys
path, how = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as handle:
    doc = json.load(handle)
doc["nodes"].append({"id": "late-edit", "type": "text", "text": "saved at the last moment",
                     "x": -2000, "y": 0, "width": 200, "height": 100})
text = json.dumps(doc, indent="\t")
if how == "rename":
    with open(path + ".tmp-editor", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp-editor", path)
else:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
"""


def _note(node_id: str, text: str, x: float, y: float) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": text,
        "x": x,
        "y": y,
        "width": 300,
        "height": 150,
        "color": "6",
    }


def _canvas(*notes: dict[str, Any], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    question = {
        "id": "q1",
        "type": "text",
        "text": "# What is a matrix?",
        "x": -400,
        "y": 0,
        "width": 300,
        "height": 100,
        "color": "1",
    }
    return {
        "nodes": [question, *notes, *(extra or [])],
        "edges": [{"id": "e1", "fromNode": "q1", "toNode": notes[0]["id"]}],
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent="\t"), encoding="utf-8")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """``<tmp>/vault`` with ``.obsidian/`` and a canvas in ``Courses/Math/la.canvas``."""
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    (root / ".obsidian" / "app.json").write_text("{}", encoding="utf-8")
    _write(
        root / "Courses" / "Math" / "la.canvas",
        _canvas(
            _note("n1", "A matrix is a table of numbers.", 0, 0),
            _note("n2", "A vector is an arrow.", 0, 400),
        ),
    )
    return root


@pytest.fixture
def agent(tmp_path: Path) -> tuple[str, Path]:
    """The agent program's ``--agent-command`` and its call log."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT, encoding="utf-8")
    log = tmp_path / "calls.log"
    return f"{sys.executable} {script} {log}", log


def _calls(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _file_nodes(path: Path) -> list[str]:
    return [n["file"] for n in _load(path)["nodes"] if n["type"] == "file"]


# --- vault-aware paths ---------------------------------------------------------------------


def test_file_nodes_resolve_from_the_vault_root(
    run_cli: Run, vault: Path, agent: tuple[str, Path]
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"

    code, _, err = run_cli(canvas, "--agent-command", agent[0])

    assert code == 0, err
    files = _file_nodes(canvas)
    assert len(files) == 2
    for name in files:
        assert name.startswith("Courses/Math/la answers/")
        assert "\\" not in name
        assert ".." not in name
        assert (vault / name).is_file()
    assert not (vault / "Courses" / "Math" / ".la.canvas.lock").exists()


def test_vault_option_and_docs_dir_inside_the_vault(
    run_cli: Run, vault: Path, agent: tuple[str, Path]
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"

    code, _, err = run_cli(
        canvas, "--agent-command", agent[0], "--vault", vault / "Courses", "--docs-dir", "../Notes"
    )

    assert code == 0, err
    for name in _file_nodes(canvas):
        assert name.startswith("Notes/")
        assert (vault / "Courses" / name).is_file()


def test_docs_dir_outside_the_vault_exits_2_before_any_call(
    run_cli: Run, vault: Path, agent: tuple[str, Path], tmp_path: Path
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"
    original = canvas.read_bytes()

    code, _, err = run_cli(canvas, "--agent-command", agent[0], "--docs-dir", tmp_path / "out")

    assert code == 2
    assert "outside the vault" in err
    assert _calls(agent[1]) == []
    assert canvas.read_bytes() == original
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
def test_a_symlinked_canvas_is_resolved_first(
    run_cli: Run, vault: Path, agent: tuple[str, Path], tmp_path: Path
) -> None:
    real = vault / "Courses" / "Math" / "la.canvas"
    links = tmp_path / "elsewhere"
    links.mkdir()
    (links / "la.canvas").symlink_to(real)

    code, _, err = run_cli(links / "la.canvas", "--agent-command", agent[0])

    assert code == 0, err
    assert (links / "la.canvas").is_symlink()  # the link stays a link
    for name in _file_nodes(real):
        assert name.startswith("Courses/Math/la answers/")
        assert (vault / name).is_file()
    assert find_vault(links / "la.canvas") == vault


def test_without_a_vault_paths_stay_relative_to_the_canvas(
    run_cli: Run, tmp_path: Path, agent: tuple[str, Path]
) -> None:
    canvas = tmp_path / "plain" / "notes.canvas"
    _write(canvas, _canvas(_note("n1", "A matrix is a table of numbers.", 0, 0)))

    code, _, err = run_cli(canvas, "--agent-command", agent[0])

    assert code == 0, err
    (name,) = _file_nodes(canvas)
    assert name.startswith("notes answers/")
    assert (canvas.parent / name).is_file()


# --- merge, never lose an edit -------------------------------------------------------------


def test_a_second_process_edits_while_the_agents_run(
    run_cli: Run, vault: Path, agent: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"
    data = _load(canvas)
    data["nodes"][1]["text"] = "EDIT: a matrix is a table of numbers."
    _write(canvas, data)
    monkeypatch.setenv("TEST_CANVAS", str(canvas))

    code, out, err = run_cli(canvas, "--agent-command", agent[0], "-m", "1")

    assert code == 0, out + err
    written = _load(canvas)
    nodes = {n["id"]: n for n in written["nodes"]}
    assert "added-by-user" in nodes  # the user's new node
    assert nodes["q1"]["x"] == -477  # and the node the user moved
    cards = [n for n in written["nodes"] if n.get("color") == "5"]
    assert len(cards) == 2  # every answer
    assert not list(canvas.parent.glob("la.canvas.answers-*.json"))


@pytest.mark.parametrize("how", ["in-place", "rename"])
@pytest.mark.parametrize("exchange", [True, False])
def test_an_edit_saved_just_before_the_replace_is_kept(
    tmp_path: Path, how: str, exchange: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor runs between the last look at the file and the replace."""
    import command_handlers.fileio as fileio

    if not exchange:
        monkeypatch.setattr(fileio, "_EXCHANGE", None)
    elif fileio._EXCHANGE is None:  # pragma: no cover - not Linux
        pytest.skip("no renameat2 here")
    if not exchange and how == "rename":
        pytest.skip("without an atomic swap only editors that save in place are caught")
    path = tmp_path / "vault" / "c.canvas"
    _write(path, _canvas(_note("n1", "A note", 0, 0)))
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR, encoding="utf-8")
    edits: list[Path] = []

    def edit(target: Path) -> None:
        if not edits:  # once: the merge that follows must settle
            subprocess.run([sys.executable, str(editor), str(target), how], check=True, timeout=30)
            edits.append(target)

    def add(canvas: Canvas) -> None:
        canvas.add_text_node("answer", 400, 0, 250, 150, color="5")

    merge_canvas(path, add, before_replace=edit)

    ids = {n["id"] for n in _load(path)["nodes"]}
    assert "late-edit" in ids
    assert sum(1 for n in _load(path)["nodes"] if n.get("color") == "5") == 1
    assert not list(path.parent.glob(".*.tmp"))


def test_a_note_deleted_mid_run_gets_no_answer(
    run_cli: Run, vault: Path, agent: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"
    data = _load(canvas)
    data["nodes"][2]["text"] = "DELETE me: a vector is an arrow."
    _write(canvas, data)
    monkeypatch.setenv("TEST_CANVAS", str(canvas))

    code, out, err = run_cli(canvas, "--agent-command", agent[0], "-m", "1")

    assert code == 0, out + err
    assert re.search(r'not written: note "DELETE me: a vector is an.*" \(n2\)', err)
    written = _load(canvas)
    ids = {n["id"] for n in written["nodes"]}
    assert "n2" not in ids
    assert all(e["fromNode"] in ids and e["toNode"] in ids for e in written["edges"])
    assert sum(1 for n in written["nodes"] if n.get("color") == "5") == 1


def test_an_unreadable_canvas_at_write_time_gives_a_side_file(tmp_path: Path) -> None:
    path = tmp_path / "c.canvas"
    _write(path, _canvas(_note("n1", "A note", 0, 0)))

    def spoil(target: Path) -> None:
        target.write_text("{not json", encoding="utf-8")

    with pytest.raises(Exception, match="unreadable"):
        merge_canvas(path, lambda c: c.add_text_node("a", 400, 0, 10, 10), before_replace=spoil)
    assert path.read_text(encoding="utf-8") == "{not json"  # the user's bytes, untouched


def test_a_canvas_removed_during_the_run_is_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "gone.canvas"

    with pytest.raises(CanvasMergeError, match="removed"):
        merge_canvas(path, lambda c: c.add_text_node("a", 0, 0, 10, 10))
    assert not path.exists()


# --- one run per canvas --------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_two_runs_on_one_canvas_and_a_stale_lock(
    run_cli: Run, vault: Path, agent: tuple[str, Path], console_argv: list[str]
) -> None:
    canvas = vault / "Courses" / "Math" / "la.canvas"
    data = _load(canvas)
    data["nodes"][2]["text"] = "PLEASE WAIT: a vector is an arrow."
    _write(canvas, data)
    first = subprocess.Popen(
        [*console_argv, str(canvas), "--agent-command", agent[0], "-m", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:  # the first answer is in: the run holds the lock
            if " ok " in line:
                break

        code, _, err = run_cli(canvas, "--agent-command", agent[0])

        assert code == 2
        assert f"process {first.pid}" in err
    finally:
        os.killpg(first.pid, 9)  # the first run and its waiting agent
        first.communicate(timeout=30)
    calls = _calls(agent[1])
    assert len(calls) == len(set(calls))  # the second run called nothing
    lock = canvas.with_name(".la.canvas.lock")
    assert lock.read_text(encoding="utf-8").split() == [str(first.pid)]  # left by a killed run

    data["nodes"][2]["text"] = "A vector is an arrow."
    _write(canvas, data)
    code, _, err = run_cli(canvas, "--agent-command", agent[0])

    assert code == 0, err  # the stale lock was taken over
    assert not lock.exists()


def test_the_lock_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "c.canvas"
    path.write_text("{}", encoding="utf-8")
    script = (
        "import sys\nfrom command_handlers.fileio import canvas_lock\n"
        "with canvas_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(CanvasBusyError) as caught, canvas_lock(path):
            pass  # pragma: no cover - never entered
        assert caught.value.pid == holder.pid
    finally:
        holder.communicate("", timeout=30)
    with canvas_lock(path):  # free again
        pass


# --- layout --------------------------------------------------------------------------------


def _groups_respected(data: dict[str, Any]) -> None:
    groups = [n for n in data["nodes"] if n["type"] == "group"]
    for node in data["nodes"]:
        if node["type"] == "group":
            continue
        for g in groups:
            inside = (
                g["x"] <= node["x"]
                and node["x"] + node["width"] <= g["x"] + g["width"]
                and g["y"] <= node["y"]
                and node["y"] + node["height"] <= g["y"] + g["height"]
            )
            outside = (
                node["x"] >= g["x"] + g["width"]
                or node["x"] + node["width"] <= g["x"]
                or node["y"] >= g["y"] + g["height"]
                or node["y"] + node["height"] <= g["y"]
            )
            assert inside or outside, (node["id"], g["id"])


def _centre_distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    return math.dist(
        (a["x"] + a["width"] / 2, a["y"] + a["height"] / 2),
        (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2),
    )


def test_cards_stay_inside_their_notes_group_and_out_of_others(
    run_cli: Run, tmp_path: Path, agent: tuple[str, Path]
) -> None:
    canvas = tmp_path / "vault" / "g.canvas"
    (tmp_path / "vault" / ".obsidian").mkdir(parents=True)
    groups = [
        {
            "id": "g1",
            "type": "group",
            "label": "One",
            "x": -50,
            "y": -50,
            "width": 420,
            "height": 260,
        },
        {
            "id": "g2",
            "type": "group",
            "label": "Two",
            "x": 400,
            "y": -50,
            "width": 500,
            "height": 600,
        },
    ]
    _write(
        canvas,
        _canvas(
            _note("n1", "A matrix is a table of numbers.", 0, 0),
            _note("n2", "A vector is an arrow.", 0, 400),
            extra=groups,
        ),
    )

    code, _, err = run_cli(canvas, "--agent-command", agent[0])
    assert code == 0, err
    code, _, err = run_cli(canvas, "--agent-command", agent[0], "--force")
    assert code == 0, err

    written = _load(canvas)
    _groups_respected(written)
    nodes = {n["id"]: n for n in written["nodes"]}
    for note_id in ("n1", "n2"):
        cards = [nodes[e["toNode"]] for e in written["edges"] if e["fromNode"] == note_id]
        assert len(cards) == 2
        for card in cards:  # the answer again stays beside its note
            assert _centre_distance(card, nodes[note_id]) <= 700
    g1 = nodes["g1"]
    for e in written["edges"]:  # n1's cards are inside n1's group, which grew to hold them
        if e["fromNode"] == "n1":
            card = nodes[e["toNode"]]
            assert card["x"] + card["width"] <= g1["x"] + g1["width"]


def test_cards_land_near_their_notes_on_a_dense_canvas(tmp_path: Path) -> None:
    nodes = [
        _note(f"c{r}-{c}", f"cell {r} {c}", c * 350, r * 200) for r in range(10) for c in range(10)
    ]
    canvas = Canvas({"nodes": nodes, "edges": []})
    chosen = ["c2-3", "c5-5", "c7-1", "c9-9"]
    results = [
        {"task_id": f"{n}:a", "node_id": n, "agent": "a", "status": "success", "answer": "x"}
        for n in chosen
    ]

    write_answers(canvas, results, {n: n for n in chosen}, Layout(tmp_path, tmp_path, inline=True))

    for result in results:  # the grid's free border is up to about 1,000 px from a note
        card = canvas.node(result["blue_node_id"])
        assert _centre_distance(card, canvas.node(result["node_id"])) <= 1300


def _placement_seconds(count: int, folder: Path) -> float:
    side = int(math.sqrt(count)) + 1
    nodes = [_note(f"n{i}", f"note {i}", (i % side) * 900, (i // side) * 400) for i in range(count)]
    canvas = Canvas({"nodes": nodes, "edges": []})
    results = [
        {"task_id": f"n{i}:a", "node_id": f"n{i}", "agent": "a", "status": "success", "answer": "x"}
        for i in range(count)
    ]
    started = time.perf_counter()
    write_answers(canvas, results, {}, Layout(folder, folder, inline=True))
    return time.perf_counter() - started


def test_placement_cost_per_card_does_not_grow_with_the_canvas(tmp_path: Path) -> None:
    small = min(_placement_seconds(1000, tmp_path) for _ in range(2)) / 1000
    large = _placement_seconds(8000, tmp_path) / 8000
    assert large < 3 * small, (small, large)


def test_find_vault(tmp_path: Path) -> None:
    (tmp_path / "v" / ".obsidian").mkdir(parents=True)
    (tmp_path / "v" / "a" / "b").mkdir(parents=True)
    assert find_vault(tmp_path / "v" / "a" / "b" / "x.canvas") == tmp_path / "v"
    assert find_vault(tmp_path / "x.canvas") != tmp_path / "v"
