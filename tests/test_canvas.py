"""Tests of command_handlers.canvas: the JSON Canvas 1.0 model."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from command_handlers.canvas import (
    MAX_DEPTH,
    Canvas,
    CanvasError,
    Rect,
    _model,
    _serialise,
    color_of,
    label_of,
    node_file,
    node_rect,
    node_text,
    node_type,
)

# --------------------------------------------------------------------------- helpers


def text_node(node_id: str, x: float = 0, y: float = 0, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": f"text of {node_id}",
        "x": x,
        "y": y,
        "width": 250,
        "height": 60,
    }
    node.update(extra)
    return node


def edge(edge_id: str, src: str, dst: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"id": edge_id, "fromNode": src, "toNode": dst}
    result.update(extra)
    return result


def dumps(data: Any) -> str:
    return json.dumps(data, indent="\t", ensure_ascii=False)


SAMPLE = {
    "nodes": [
        {
            "id": "q1",
            "type": "text",
            "text": "What is a monad?",
            "x": -400,
            "y": 0,
            "width": 250,
            "height": 60,
            "color": "1",
            "pluginData": {"pinned": True, "tags": ["a", "b"]},
        },
        {
            "type": "text",
            "id": "n1",
            "height": 80,
            "text": "A monad is a burrito 🌯",
            "x": 0,
            "y": 0,
            "width": 250,
            "color": "6",
        },
        {"id": "g1", "type": "group", "x": -500, "y": -100, "width": 1000, "height": 400},
        {
            "id": "f1",
            "type": "file",
            "file": "notes/monad.md",
            "subpath": "#Intro",
            "x": 0,
            "y": 200,
            "width": 400,
            "height": 400,
        },
        {
            "id": "l1",
            "type": "link",
            "url": "https://example.org",
            "x": 600,
            "y": 0,
            "width": 10,
            "height": 10,
        },
        {
            "id": "w1",
            "type": "widget",
            "x": 900,
            "y": 0,
            "width": 10,
            "height": 10,
            "custom": [1, 2.5, None],
        },
    ],
    "edges": [
        {
            "id": "e1",
            "fromNode": "q1",
            "fromSide": "right",
            "toNode": "n1",
            "toSide": "left",
            "zzz": 1,
        },
        {
            "id": "e2",
            "fromNode": "n1",
            "toNode": "f1",
            "label": "see",
            "color": "#a1B2c3",
            "toEnd": "arrow",
        },
    ],
    "metadata": {"version": "1.0", "frontmatter": {}},
}


@pytest.fixture
def sample() -> Canvas:
    return Canvas.from_json(dumps(SAMPLE))


# --------------------------------------------------------------------------- parsing, round trip


def test_round_trip_keeps_unknown_fields_and_key_order() -> None:
    text = dumps(SAMPLE)
    canvas = Canvas.from_json(text)
    assert canvas.to_json() == text
    assert list(canvas.nodes[1]) == ["type", "id", "height", "text", "x", "y", "width", "color"]
    assert canvas.nodes[0]["pluginData"] == {"pinned": True, "tags": ["a", "b"]}
    assert canvas.data["metadata"] == {"version": "1.0", "frontmatter": {}}
    assert canvas.edges[0]["zzz"] == 1


def test_round_trip_of_compact_input_and_bytes_with_bom() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(SAMPLE).encode()
    canvas = Canvas.from_json(raw)
    assert canvas.source_digest == hashlib.sha256(raw).hexdigest()
    assert json.loads(canvas.to_json()) == SAMPLE
    assert canvas.path is None


def test_absent_keys_stay_absent_until_something_is_added() -> None:
    assert Canvas.from_json("{}").to_json() == "{}"
    assert Canvas().to_json() == "{}"
    only_edges = Canvas.from_json('{"edges": []}')
    assert only_edges.to_json() == '{\n\t"edges": []\n}'
    only_edges.add_text_node("hi", 0, 0, 10, 10)
    assert list(json.loads(only_edges.to_json())) == ["edges", "nodes"]
    canvas = Canvas.from_json('{"nodes": [], "x": 1}')
    a = canvas.add_text_node("a", 0, 0, 10, 10)
    b = canvas.add_file_node("b.md", 50, 0, 10, 10)
    canvas.add_edge(a, b)
    assert list(json.loads(canvas.to_json())) == ["nodes", "x", "edges"]


def test_unknown_node_types_are_kept_but_are_not_text_nodes(sample: Canvas) -> None:
    assert [n["id"] for n in sample.text_nodes()] == ["q1", "n1"]
    assert [n["id"] for n in sample.text_nodes(color="6")] == ["n1"]
    assert sample.text_nodes(color="2") == []
    assert node_type(sample.node("w1")) == "widget"


def test_typed_read_helpers(sample: Canvas) -> None:
    note = sample.node("n1")
    assert node_rect(note) == Rect(0, 0, 250, 80)
    assert node_text(note) == "A monad is a burrito 🌯"
    assert node_text(sample.node("f1")) is None
    assert node_file(sample.node("f1")) == "notes/monad.md"
    assert node_file(note) is None
    assert color_of(note) == "6"
    assert color_of(sample.node("g1")) is None
    assert label_of(sample.edges[1]) == "see"
    assert label_of(sample.edges[0]) is None


def test_rect() -> None:
    a = Rect(0, 0, 10, 10)
    assert (a.right, a.bottom) == (10, 10)
    assert not a.overlaps(Rect(10, 0, 5, 5))  # touching is not overlapping
    assert a.overlaps(Rect(10, 0, 5, 5), gap=1)
    assert a.overlaps(Rect(5, 5, 10, 10))
    assert not a.overlaps(Rect(0, 20, 10, 10), gap=10)


def test_canvas_from_data_keeps_the_dict_itself() -> None:
    data = json.loads(dumps(SAMPLE))
    canvas = Canvas(data)
    assert canvas.data is data
    assert canvas.nodes[0] is data["nodes"][0]
    assert canvas.source_digest is None
    assert canvas.source_size is None
    assert canvas.path is None
    assert "nodes=6" in repr(canvas)


def test_where_a_canvas_is_stored_is_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "never-written.canvas"
    raw = dumps(SAMPLE).encode()
    canvas = Canvas.from_json(raw, path=path)
    assert canvas.path == path
    assert not path.exists()
    assert canvas.source_size == len(raw)
    assert canvas.source_digest == hashlib.sha256(raw).hexdigest()
    other = tmp_path / "other.canvas"
    canvas.record_source(b"{}", other)
    assert canvas.path == other
    assert canvas.source_size == 2
    assert canvas.source_digest == hashlib.sha256(b"{}").hexdigest()
    assert "other.canvas" in repr(canvas)
    assert not other.exists()


# --------------------------------------------------------------------------- invalid input


def _with_node(**fields: Any) -> str:
    node = text_node("abc")
    for key, value in fields.items():
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return json.dumps({"nodes": [text_node("n0"), node]})


def _with_edge(**fields: Any) -> str:
    item = edge("e1", "a", "b")
    for key, value in fields.items():
        if value is ...:
            del item[key]
        else:
            item[key] = value
    return json.dumps({"nodes": [text_node("a"), text_node("b")], "edges": [item]})


INVALID = [
    ("[]", "a canvas must be a JSON object, not array"),
    ('"x"', "a canvas must be a JSON object, not string"),
    ('{"nodes": {}}', '"nodes" must be an array, not object'),
    ('{"edges": null}', '"edges" must be an array, not null'),
    ("{", "invalid JSON at line 1, column 2"),
    ('{\n  "nodes": [,]\n}', "invalid JSON at line 2, column 13"),
    ('{"x": NaN}', "NaN is not a valid number"),
    ('{"x": -Infinity}', "-Infinity is not a valid number"),
    ('{"x": 1e999}', "number 1e999 is out of range"),
    ('{"nodes": [1]}', "node 0: must be an object, not number"),
    ('{"nodes": [[]]}', "node 0: must be an object, not array"),
    (_with_node(id=...), 'node 1: "id" must be a non-empty string, not missing'),
    (_with_node(id=7), 'node 1: "id" must be a non-empty string, not number'),
    (_with_node(id=""), 'node 1: "id" must be a non-empty string, not empty'),
    (_with_node(type=...), 'node 1 ("abc"): "type" must be a string, not missing'),
    (_with_node(type=None), 'node 1 ("abc"): "type" must be a string, not null'),
    (_with_node(x="1"), 'node 1 ("abc"): "x" must be a number, not string'),
    (_with_node(y=True), 'node 1 ("abc"): "y" must be a number, not boolean'),
    (_with_node(width=...), 'node 1 ("abc"): "width" must be a number, not missing'),
    (_with_node(height={}), 'node 1 ("abc"): "height" must be a number, not object'),
    (_with_node(x=10**16), 'node 1 ("abc"): "x" must be between -1e15 and 1e15'),
    (_with_node(y=-2e15), 'node 1 ("abc"): "y" must be between -1e15 and 1e15'),
    (_with_node(color="7"), 'node 1 ("abc"): "color" must be "1" to "6" or "#rrggbb", not "7"'),
    (_with_node(color="#12345"), '"color" must be "1" to "6" or "#rrggbb", not "#12345"'),
    (_with_node(color="red"), '"color" must be "1" to "6" or "#rrggbb", not "red"'),
    (_with_node(color=6), '"color" must be "1" to "6" or "#rrggbb", not number'),
    (_with_node(color=[]), '"color" must be "1" to "6" or "#rrggbb", not array'),
    (_with_node(text=...), 'node 1 ("abc"): "text" is missing'),
    (_with_node(text=["a"]), 'node 1 ("abc"): "text" must be a string, not array'),
    (_with_node(type="file"), 'node 1 ("abc"): "file" is missing'),
    (_with_node(type="file", file="a.md", subpath=1), '"subpath" must be a string, not number'),
    (_with_node(type="link"), 'node 1 ("abc"): "url" is missing'),
    (_with_node(type="group", label=False), '"label" must be a string, not boolean'),
    (
        _with_node(type="group", backgroundStyle="tile"),
        '"backgroundStyle" must be one of "cover", "ratio", "repeat", not "tile"',
    ),
    (
        json.dumps({"nodes": [text_node("abc"), text_node("x"), text_node("abc")]}),
        'duplicate node id "abc" (nodes 0 and 2)',
    ),
    ('{"nodes": [], "edges": ["e"]}', "edge 0: must be an object, not string"),
    (_with_edge(id=...), 'edge 0: "id" must be a non-empty string, not missing'),
    (_with_edge(toNode="zz"), 'edge 0 ("e1"): "toNode" "zz" is not a node'),
    (_with_edge(fromNode="zz"), 'edge 0 ("e1"): "fromNode" "zz" is not a node'),
    (_with_edge(fromNode=...), 'edge 0 ("e1"): "fromNode" must be a string, not missing'),
    (_with_edge(toNode=3), 'edge 0 ("e1"): "toNode" must be a string, not number'),
    (_with_edge(fromSide="middle"), '"fromSide" must be one of "bottom", "left", "right", "top"'),
    (_with_edge(toEnd="diamond"), '"toEnd" must be one of "arrow", "none", not "diamond"'),
    (_with_edge(label=1), 'edge 0 ("e1"): "label" must be a string, not number'),
    (_with_edge(color="#GGGGGG"), 'edge 0 ("e1"): "color" must be'),
    (
        json.dumps(
            {
                "nodes": [text_node("a")],
                "edges": [edge("e1", "a", "a"), edge("e2", "a", "a"), edge("e1", "a", "a")],
            }
        ),
        'duplicate edge id "e1" (edges 0 and 2)',
    ),
    ('{"deep": ' + "[" * 70 + "]" * 70 + "}", "nested too deeply (more than 64 levels)"),
    (
        '{"nodes": ['
        + json.dumps(text_node("a", deep=[[[[]]]]))[:-1]
        + ', "z": '
        + "[" * 62
        + "]" * 62
        + "}]}",
        "nested too deeply",
    ),
    ("[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_canvas_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(CanvasError) as info:
        Canvas.from_json(text)
    assert message in str(info.value)


def test_depth_limit_is_exact() -> None:
    ok = '{"deep": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    Canvas.from_json(ok)
    node = text_node("a")
    node["deep"] = json.loads("[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3))
    Canvas({"nodes": [node]})
    node["deep"] = [node["deep"]]
    with pytest.raises(CanvasError, match="nested too deeply"):
        Canvas({"nodes": [node]})


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(CanvasError, match=r"not valid UTF-8 \(byte 10"):
        Canvas.from_json(b'{"text": "\xff"}')


def test_non_json_python_values_are_named_by_type() -> None:
    with pytest.raises(CanvasError, match="node 0: must be an object, not tuple"):
        Canvas({"nodes": [("a",)]})


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="no integer digit limit")
def test_integer_with_too_many_digits_is_refused() -> None:
    with pytest.raises(CanvasError, match=r"invalid JSON: .*digits"):
        Canvas.from_json('{"n": ' + "1" * 5000 + "}")


def test_floats_in_range_are_parsed() -> None:
    canvas = Canvas.from_json(json.dumps({"nodes": [text_node("a", x=1.5, y=-2e3)]}))
    assert node_rect(canvas.node("a")) == Rect(1.5, -2000.0, 250, 60)


# --------------------------------------------------------------------------- lookups


def test_lookups(sample: Canvas) -> None:
    assert sample.get_node("n1") is sample.nodes[1]
    assert sample.get_node("zz") is None
    with pytest.raises(CanvasError, match='no node with id "zz"'):
        sample.node("zz")
    sample.nodes.clear()  # a copy: the canvas is unchanged
    sample.edges.clear()
    assert len(sample.nodes) == 6
    assert len(sample.edges) == 2


def test_incoming_and_outgoing_in_file_order(sample: Canvas) -> None:
    extra = sample.add_edge("q1", "n1", label="again")  # before the lookup table exists
    assert [e["id"] for e in sample.outgoing("q1")] == ["e1", extra["id"]]
    assert [e["id"] for e in sample.incoming(sample.node("n1"))] == ["e1", extra["id"]]
    later = sample.add_edge("n1", "q1")  # after it exists
    assert sample.outgoing("n1")[-1] is later
    assert sample.incoming("q1") == [later]
    assert sample.incoming("w1") == []
    assert sample.outgoing("w1") == []
    with pytest.raises(CanvasError):
        sample.outgoing("zz")
    with pytest.raises(CanvasError):
        sample.incoming({"no": "id"})


# --------------------------------------------------------------------------- ids


def test_new_ids_are_fresh_16_hex_and_unique(sample: Canvas) -> None:
    ids = {sample.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch("[0-9a-f]{16}", i) for i in ids)
    taken = {n["id"] for n in sample.nodes} | {e["id"] for e in sample.edges}
    assert not ids & taken


def test_new_id_skips_ids_in_use(sample: Canvas, monkeypatch: pytest.MonkeyPatch) -> None:
    sample.add_text_node("x", 0, 0, 1, 1)
    issued = sample.new_id()
    answers = iter(["n1", "e1", issued, "0123456789abcdef"])
    monkeypatch.setattr(_model.secrets, "token_hex", lambda _n: next(answers))
    assert sample.new_id() == "0123456789abcdef"


# --------------------------------------------------------------------------- adding


def test_add_nodes_and_edges(sample: Canvas) -> None:
    answer = sample.add_text_node("**agent**", 300, 0, 250, 150, color="5")
    assert list(answer) == ["id", "type", "text", "x", "y", "width", "height", "color"]
    doc = sample.add_file_node("answers/a.md", 600, 0, 400, 400)
    assert "color" not in doc
    assert doc["file"] == "answers/a.md"
    first = sample.add_edge("n1", answer, label="agent")
    assert first == {
        "id": first["id"],
        "fromNode": "n1",
        "fromSide": "right",
        "toNode": answer["id"],
        "toSide": "left",
        "label": "agent",
    }
    second = sample.add_edge(answer, doc, from_side=None, to_side=None, color="5")
    assert list(second) == ["id", "fromNode", "toNode", "color"]
    assert sample.nodes[-2:] == [answer, doc]
    assert sample.edges[-2:] == [first, second]
    assert sample.get_node(answer["id"]) is answer
    again = Canvas.from_json(sample.to_json())
    assert again.to_json() == sample.to_json()


def test_remove_nodes_takes_their_edges_and_keeps_lookups_right() -> None:
    data = {
        "nodes": [text_node("a"), text_node("b"), text_node("c"), text_node("d")],
        "edges": [edge("ab", "a", "b"), edge("bc", "b", "c"), edge("cd", "c", "d", x=1)],
        "x-top": True,
    }
    canvas = Canvas(data)
    assert [e["id"] for e in canvas.outgoing("c")] == ["cd"]  # lookups built before

    removed = canvas.remove_nodes(["b", canvas.node("a")])

    assert [e["id"] for e in removed] == ["ab", "bc"]
    assert [n["id"] for n in data["nodes"]] == ["c", "d"]  # the data itself, in order
    assert [e["id"] for e in data["edges"]] == ["cd"]
    assert canvas.get_node("a") is None
    assert canvas.get_node("b") is None
    assert canvas.incoming("c") == []
    assert [e["id"] for e in canvas.outgoing("c")] == ["cd"]
    assert canvas.remove_nodes([]) == []
    fresh = canvas.add_text_node("new", 0, 0, 1, 1)
    canvas.add_edge("c", fresh)
    assert [e["toNode"] for e in canvas.outgoing("c")] == ["d", fresh["id"]]
    assert Canvas.from_json(canvas.to_json()).data == data
    with pytest.raises(CanvasError, match='no node with id "zz"'):
        canvas.remove_nodes(["c", "zz"])
    assert canvas.get_node("c") is not None  # nothing removed


def test_removed_ids_are_never_issued_again(monkeypatch: pytest.MonkeyPatch) -> None:
    canvas = Canvas({"nodes": [text_node("0" * 16)], "edges": []})
    canvas.remove_nodes(["0" * 16])
    tokens = iter(["0" * 16, "1" * 16])
    monkeypatch.setattr(_model.secrets, "token_hex", lambda n: next(tokens))

    assert canvas.new_id() == "1" * 16


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.add_text_node(1, 0, 0, 1, 1),
            'text node: "text" must be a string, not number',
        ),
        (lambda c: c.add_file_node(None, 0, 0, 1, 1), 'file node: "file" must be a string'),
        (lambda c: c.add_text_node("t", "0", 0, 1, 1), 'text node: "x" must be a number'),
        (lambda c: c.add_text_node("t", 0, 0, math.inf, 1), '"width" must be between'),
        (lambda c: c.add_text_node("t", 0, 0, 1, 1, color="9"), 'text node: "color" must be'),
        (lambda c: c.add_edge("n1", "zz"), 'no node with id "zz"'),
        (lambda c: c.add_edge("n1", "q1", from_side="up"), 'edge: "fromSide" must be one of'),
        (lambda c: c.add_edge("n1", "q1", label=5), 'edge: "label" must be a string'),
        (lambda c: c.add_edge("n1", "q1", color="blue"), 'edge: "color" must be'),
    ],
)
def test_add_refuses_invalid_arguments(sample: Canvas, call: Any, message: str) -> None:
    before = sample.to_json()
    with pytest.raises(CanvasError) as info:
        call(sample)
    assert message in str(info.value)
    assert sample.to_json() == before


# --------------------------------------------------------------------------- placement


def test_find_free_spot_right_of_the_anchor_when_free(sample: Canvas) -> None:
    assert sample.find_free_spot("n1", 250, 150, gap=50) == (300, 0)


def test_find_free_spot_moves_below_obstacles() -> None:
    canvas = Canvas()
    anchor = canvas.add_text_node("a", 0, 0, 100, 100)
    canvas.add_text_node("above", 150, -500, 100, 100)  # in the column, but above
    canvas.add_text_node("b1", 150, 0, 100, 100)
    canvas.add_text_node("b2", 300, 180, 100, 100)  # overlaps the x-range with the gap
    canvas.add_text_node("far", 150, 10_000, 100, 100)  # below: stops the scan
    canvas.add_text_node("elsewhere", 5000, 0, 100, 100)
    assert canvas.find_free_spot(anchor, 200, 50, gap=50) == (150, 330)


def test_groups_are_not_obstacles() -> None:
    canvas = Canvas(
        {
            "nodes": [
                text_node("a", 0, 0),
                {"id": "g", "type": "group", "x": -100, "y": -100, "width": 2000, "height": 2000},
            ]
        }
    )
    assert canvas.find_free_spot("a", 100, 100) == (300, 0)


def test_find_free_spot_rounds_up_to_whole_pixels() -> None:
    canvas = Canvas({"nodes": [text_node("a", 0.5, 0.25), text_node("b", 270.5, 0.5)]})
    x, y = canvas.find_free_spot("a", 10, 10, gap=10)
    assert (x, y) == (261, 71)
    assert isinstance(x, int)
    assert isinstance(y, int)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": -1}, '"width" must not be negative'),
        ({"height": "1"}, '"height" must be a number, not string'),
        ({"gap": -5}, '"gap" must not be negative'),
        ({"gap": math.nan}, '"gap" must be between'),
    ],
)
def test_find_free_spot_refuses_bad_sizes(kwargs: dict[str, Any], message: str) -> None:
    canvas = Canvas({"nodes": [text_node("a")]})
    args: dict[str, Any] = {"width": 10, "height": 10, "gap": 5}
    args.update(kwargs)
    with pytest.raises(CanvasError, match=re.escape(message)):
        canvas.find_free_spot("a", args["width"], args["height"], gap=args["gap"])
    with pytest.raises(CanvasError, match="no node"):
        canvas.find_free_spot("zz", 1, 1)


coord = st.integers(min_value=-2000, max_value=2000) | st.floats(
    min_value=-2000, max_value=2000, allow_nan=False
)
size = st.integers(min_value=0, max_value=600) | st.floats(min_value=0, max_value=600)
rects = st.tuples(coord, coord, size, size, st.sampled_from(["text", "file", "group", "other"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    others=st.lists(rects, max_size=40),
    anchor=st.tuples(coord, coord, size, size),
    new=st.tuples(size, size),
    gap=st.integers(min_value=0, max_value=120) | st.floats(min_value=0, max_value=120),
)
def test_find_free_spot_never_overlaps(
    others: list[tuple[Any, ...]],
    anchor: tuple[Any, ...],
    new: tuple[Any, Any],
    gap: float,
) -> None:
    nodes = [
        {
            "id": "anchor",
            "type": "text",
            "text": "",
            **dict(zip(("x", "y", "width", "height"), anchor)),
        }
    ]
    for index, (x, y, w, h, kind) in enumerate(others):
        node = {"id": f"n{index}", "type": kind, "x": x, "y": y, "width": w, "height": h}
        node.update({"text": ""} if kind == "text" else {"file": "f.md"} if kind == "file" else {})
        nodes.append(node)
    canvas = Canvas({"nodes": nodes})
    width, height = new
    x, y = canvas.find_free_spot("anchor", width, height, gap=gap)
    spot = Rect(x, y, width, height)
    box = node_rect(canvas.node("anchor"))
    assert x == math.ceil(box.right + gap)
    assert x >= box.right + gap
    assert y >= box.y
    for node in canvas.nodes:
        if node["type"] != "group":
            assert not spot.overlaps(node_rect(node), gap), node


def test_find_free_spot_is_fast_on_a_big_stacked_column() -> None:
    nodes = [text_node("anchor", 0, 0)]
    nodes += [text_node(f"n{i}", 300, i * 100) for i in range(10_000)]
    canvas = Canvas({"nodes": nodes})
    assert canvas.find_free_spot("anchor", 250, 60, gap=50) == (300, 10_000 * 100 - 100 + 60 + 50)


# --------------------------------------------------------------------------- serialising


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_serialiser_matches_json_dumps(value: Any) -> None:
    assert _serialise.dumps(value) == dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        [{"a": 1}, {"b": [1, {}]}, {}],
        [{"a": 1}, {"b": 2}],
        [{"a": 1}, 2],
        [{"a": "}"}, {"b": "{"}, {"c": "},\n{"}],
        {"a": ({"b": 1},)},  # a tuple: json.dumps writes it as an array
        [{1: "int key"}],
        {"x": {2: 3}},
        [(1, 2)],
        {"n": {"deep": [1, [2, [3]]]}},
        [],
        {},
        "text",
        (1, 2),
    ],
)
def test_fast_serialiser_matches_json_dumps_on_edge_cases(value: Any) -> None:
    assert _serialise.dumps(value) == dumps(value)


def test_to_json_escapes_lone_surrogates() -> None:
    canvas = Canvas.from_json('{"nodes": [], "odd": "a\\ud800b"}')
    text = canvas.to_json()
    assert "\\ud800" in text
    text.encode("utf-8")
    assert Canvas.from_json(text).data["odd"] == "a\ud800b"


# --------------------------------------------------------------------------- no file I/O

CANVAS_PACKAGE = Path(_model.__file__).parent
#: Modules that read or write files; the model leaves them to command_handlers.fileio.
FILE_MODULES = frozenset({"command_handlers.fileio", "io", "os", "shutil", "stat", "tempfile"})


def test_importing_the_model_does_not_import_fileio() -> None:
    code = "import sys, command_handlers.canvas; print('command_handlers.fileio' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_model_package_does_no_file_io() -> None:
    sources = sorted(CANVAS_PACKAGE.glob("*.py"))
    assert {"__init__.py", "_model.py"} <= {source.name for source in sources}
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for needle in ("open(", "os.replace", "fsync"):
            assert needle not in text, f"{source.name} holds {needle!r}"
        imported = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        assert not imported & FILE_MODULES, f"{source.name} imports {imported & FILE_MODULES}"


def test_the_public_names_still_import() -> None:
    import command_handlers.canvas as package

    assert sorted(package.__all__) == sorted(
        [
            "DEFAULT_MAX_BYTES",
            "EDGE_ENDS",
            "MAX_DEPTH",
            "PRESET_COLORS",
            "SIDES",
            "Canvas",
            "CanvasError",
            "Edge",
            "Node",
            "NodeRef",
            "Placer",
            "Rect",
            "color_of",
            "label_of",
            "node_file",
            "node_rect",
            "node_text",
            "node_type",
        ]
    )
    for name in package.__all__:
        assert getattr(package, name) is not None


# --- Placer: many placements, each near its anchor -----------------------------------------


def _box(
    node_id: str, x: float, y: float, w: float = 300, h: float = 150, **extra: Any
) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": node_id,
        "x": x,
        "y": y,
        "width": w,
        "height": h,
        **extra,
    }


def test_placer_keeps_clear_of_edge_labels() -> None:
    a, b = _box("a", 0, 0), _box("b", 0, 600)
    edge = {"id": "e", "fromNode": "a", "toNode": "b", "label": "a long label here"}
    canvas = Canvas({"nodes": [a, b], "edges": [edge]})
    # The label sits halfway between the two nodes, at about (150, 375).
    spot = canvas.placer().place(Rect(-300, 300, 100, 150), 400, 150)
    label = Rect(150 - 90, 375 - 16, 180, 32)
    assert not spot.overlaps(label)


def test_placer_grows_the_anchors_group_and_avoids_others() -> None:
    own = {"id": "g1", "type": "group", "x": -50, "y": -50, "width": 400, "height": 250}
    other = {"id": "g2", "type": "group", "x": 400, "y": -50, "width": 400, "height": 400}
    note = _box("n", 0, 0)
    canvas = Canvas({"nodes": [own, other, note], "edges": []})
    spot = canvas.placer().place(node_rect(note), 250, 150)
    grown = node_rect(canvas.node("g1"))
    assert grown.x <= spot.x
    assert spot.right <= grown.right
    assert grown.y <= spot.y
    assert spot.bottom <= grown.bottom
    assert not spot.overlaps(node_rect(canvas.node("g2")))  # and outside the other
    assert not grown.overlaps(node_rect(canvas.node("g2")))


def test_placer_ends_when_the_anchors_group_cannot_grow_any_way() -> None:
    # The group fits its note tightly and nodes hug it on every side: growing
    # it to hold a new node would take one of them in, whichever way.
    own = {"id": "g", "type": "group", "x": -20, "y": -20, "width": 240, "height": 140}
    ring = [
        {
            "id": "above",
            "type": "text",
            "text": "",
            "x": -900,
            "y": -400,
            "width": 2000,
            "height": 370,
        },
        {
            "id": "below",
            "type": "text",
            "text": "",
            "x": -900,
            "y": 130,
            "width": 2000,
            "height": 900,
        },
        {
            "id": "left",
            "type": "text",
            "text": "",
            "x": -900,
            "y": -30,
            "width": 870,
            "height": 160,
        },
        {
            "id": "right",
            "type": "text",
            "text": "",
            "x": 230,
            "y": -30,
            "width": 870,
            "height": 160,
        },
    ]
    note = _box("n", 0, 0, 200, 100)
    canvas = Canvas({"nodes": [own, *ring, note], "edges": []})

    spot = canvas.placer().place(node_rect(note), 250, 150)

    assert node_rect(canvas.node("g")) == Rect(-20, -20, 240, 140)  # not grown
    for node in canvas.nodes:
        assert not spot.overlaps(node_rect(node), 50), node["id"]


def test_placer_puts_a_notes_answers_together() -> None:
    note = _box("n", 0, 0)
    placer = Canvas({"nodes": [note], "edges": []}).placer()
    first = placer.place(node_rect(note), 250, 150)
    second = placer.place(node_rect(note), 250, 150, near=first)
    assert first.x == 350
    assert first.y == 0
    assert math.dist((first.x, first.y), (second.x, second.y)) <= 400
    assert not first.overlaps(second, 50)
