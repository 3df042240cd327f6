"""Real providers: the real ``llm`` OpenAI plugin against a real HTTP server on 127.0.0.1.

Nothing of ``llm`` or ``openai`` is mocked: the models are declared in
``extra-openai-models.yaml`` under a temporary ``LLM_USER_PATH``, their key in
its ``keys.json`` (or the environment), and every request reaches
:mod:`llm_server` over HTTP. The tests count what the server saw: requests
per note, the maximum in flight, when each request arrived.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import LlmServer, Script, answer_text, declare_models, running
from llm_server import notes_canvas as write_notes

from command_handlers.async_execution_engine import retry_after
from command_handlers.cli import main
from command_handlers.default_plugins import llm_agents
from command_handlers.default_plugins.journal import Journal
from command_handlers.default_plugins.llm_agents import OPENAI_ADAPTER_LLM, OpenAIClients
from command_handlers.plugins import AsyncTask, get_plugin_manager, run_tasks
from command_handlers.settings import Settings

pytestmark = [
    pytest.mark.timeout(30),
    # The llm releases that install on Python 3.9 (up to 0.27) have no async OpenAI
    # models nor usage: the real provider path is tested where llm 0.36 installs.
    pytest.mark.skipif(
        llm_agents._llm_release() < OPENAI_ADAPTER_LLM,
        reason="the installed llm predates the OpenAI path this module tests",
    ),
]

KEY = "sk-local"


@pytest.fixture
def server(llm_home: Path) -> Iterator[LlmServer]:
    """The server, and llm configured to reach it (models, key) under a temporary home."""
    with running(no_stream=("local-nostream",), api_key=KEY) as started:
        declare_models(llm_home, started, KEY)
        yield started


def notes_canvas(folder: Path, count: int) -> Path:
    """A canvas of ``count`` learner's notes, ``NOTE-0`` to ``NOTE-<count - 1>``."""
    return write_notes(folder / "notes.canvas", count)


def run(capsys: pytest.CaptureFixture[str], canvas: Path, *args: object) -> tuple[int, Any, str]:
    """Run the command in-process with ``--auto --json``: (exit code, report, stderr)."""
    capsys.readouterr()
    code = main([str(canvas), "--auto", "--json", *(str(arg) for arg in args)])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def by_note(report: Any) -> dict[str, Any]:
    """Report task rows by the note they answered (``NOTE-<i>``)."""
    return {f"NOTE-{row['node_id'][1:]}": row for row in report["tasks"]}


# -- every note answered once, with the server's text and usage ------------------------


@pytest.mark.parametrize("model", ["local-chat", "local-nostream"])
def test_every_note_is_answered_exactly_once_through_the_real_plugin(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    server.latency = 0.05
    canvas = notes_canvas(tmp_path, 12)

    code, report, err = run(capsys, canvas, "--model", model, "-m", 4)

    assert code == 0, err
    assert server.per_note() == {f"NOTE-{i}": 1 for i in range(12)}
    assert server.max_in_flight == 4  # -m 4, and the client adds no request of its own
    assert server.connections <= 4  # one client per run: its connections are reused
    # A model declared can_stream: false is never asked for a stream (it would answer 400).
    assert {request.stream for request in server.requests} == {model == "local-chat"}
    assert {request.authorization for request in server.requests} == {f"Bearer {KEY}"}
    rows = by_note(report)
    sent = {request.note: request.usage for request in server.requests}
    for note, row in rows.items():
        assert row["status"] == "success"
        assert row["attempts"] == 1
        assert row["answer"] == answer_text(note)
        assert row["model"] == model
        assert row["usage"] == sent[note]
    totals = report["stats"]
    assert totals["input_tokens"] == sum(usage["input_tokens"] for usage in sent.values() if usage)
    assert totals["output_tokens"] == sum(u["output_tokens"] for u in sent.values() if u)
    assert totals["output_tokens"] == 12 * len(answer_text("NOTE-0").split())
    with Journal(Journal.default_path(canvas)) as journal:
        assert journal.usage_totals() == {
            "input_tokens": totals["input_tokens"],
            "output_tokens": totals["output_tokens"],
        }
    # The run closed its client: the server sees every connection end.
    assert server.wait_closed(5)


def test_each_model_is_looked_up_once_per_command(
    server: LlmServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llm

    looked_up: list[str] = []
    real = llm.get_async_model

    def counting(name: str) -> Any:  # a spy: llm still does the look-up
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(llm, "get_async_model", counting)
    canvas = notes_canvas(tmp_path, 6)

    code, _, err = run(capsys, canvas, "--model", "local-chat", "-m", 3)

    assert code == 0, err
    # check_settings looks it up; the run takes that instance (not one per task).
    assert looked_up == ["local-chat"]
    assert server.per_note() == {f"NOTE-{i}": 1 for i in range(6)}


def test_answers_reused_from_the_journal_spend_no_tokens(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 3)
    output = tmp_path / "first.canvas"
    code, first, err = run(capsys, canvas, "--model", "local-chat", "--output", output)
    assert code == 0, err
    assert first["stats"]["input_tokens"] > 0

    # The unanswered canvas again, into the same output: its journal holds the answers.
    code, second, err = run(capsys, canvas, "--model", "local-chat", "--output", output)

    assert code == 0, err
    assert len(server.requests) == 3
    assert all(row["cached"] and row["usage"] is None for row in second["tasks"])
    assert (second["stats"]["input_tokens"], second["stats"]["output_tokens"]) == (0, 0)


# -- one retry layer: ours ------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("status", [429, 503])
def test_requests_per_note_are_our_attempts_and_no_more(
    server: LlmServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    retries: int,
    status: int,
) -> None:
    server.scripts["NOTE-1"] = Script(statuses=(status,) * 10)
    canvas = notes_canvas(tmp_path, 3)

    code, report, _ = run(
        capsys, canvas, "--model", "local-chat", "--retries", retries, "--retry-base", 0.01
    )

    assert code == 1
    assert server.per_note() == {"NOTE-0": 1, "NOTE-1": retries + 1, "NOTE-2": 1}
    failed = by_note(report)["NOTE-1"]
    assert failed["status"] == "failed"
    assert failed["attempts"] == retries + 1  # every request counted
    assert failed["usage"] is None
    assert by_note(report)["NOTE-0"]["status"] == "success"


@pytest.mark.parametrize(
    ("headers", "window"),
    [({"Retry-After": "1"}, 1.0), ({"retry-after-ms": "700"}, 0.7)],
    ids=["retry-after", "retry-after-ms"],
)
def test_a_retry_after_pauses_the_whole_agent(
    server: LlmServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    headers: dict[str, str],
    window: float,
) -> None:
    server.latency = 0.1
    server.scripts["NOTE-0"] = Script(statuses=(429,), headers=headers)
    canvas = notes_canvas(tmp_path, 8)

    code, report, err = run(capsys, canvas, "--model", "local-chat", "-m", 2, "--retries", 2)

    assert code == 0, err
    limited = server.requests_for("NOTE-0")
    assert [request.status for request in limited] == [429, 200]
    told = limited[0].answered
    # Requests already on their way when the 429 left may arrive just after it;
    # none starts inside the window, and the note is tried again after it.
    slack = 0.05
    inside = [r for r in server.requests if told + slack < r.arrived < told + window - slack]
    assert inside == []
    assert limited[1].arrived >= told + window - slack
    assert by_note(report)["NOTE-0"]["attempts"] == 2
    assert server.per_note() == {"NOTE-0": 2, **{f"NOTE-{i}": 1 for i in range(1, 8)}}


def test_the_rate_limit_holds_for_retries_too(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.scripts["NOTE-0"] = Script(statuses=(503,))
    server.scripts["NOTE-1"] = Script(statuses=(503,))
    canvas = notes_canvas(tmp_path, 5)

    code, _, err = run(
        capsys,
        canvas,
        "--model",
        "local-chat",
        "--rate",
        "5/s",
        "--retries",
        2,
        "--retry-base",
        0.01,
    )

    assert code == 0, err
    arrivals = sorted(request.arrived for request in server.requests)
    assert len(arrivals) == 7  # five notes, two retries
    # 5/s with a burst of 1: one start per 0.2 s, retries too. Checked over five
    # intervals (1 s), so that the jitter of two arrivals on a busy machine does
    # not decide it; the SDK's own retries used to put up to 11 in one second.
    spans = [later - earlier for earlier, later in zip(arrivals, arrivals[5:])]
    assert min(spans) > 1.0 - 0.1


def test_a_call_that_hangs_times_out_and_is_tried_again(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.scripts["NOTE-0"] = Script(hangs=1)
    canvas = notes_canvas(tmp_path, 3)

    code, report, err = run(
        capsys,
        canvas,
        "--model",
        "local-chat",
        "--timeout",
        0.5,
        "--retries",
        1,
        "--retry-base",
        0.01,
    )

    assert code == 0, err
    assert server.per_note() == {"NOTE-0": 2, "NOTE-1": 1, "NOTE-2": 1}
    row = by_note(report)["NOTE-0"]
    assert (row["status"], row["attempts"]) == ("success", 2)
    assert row["answer"] == answer_text("NOTE-0")
    # The timed-out request's connection was dropped, the others closed with the run.
    assert server.wait_closed(5)


# -- pre-flight -----------------------------------------------------------------------


def test_a_model_whose_key_is_missing_refuses_the_run(
    server: LlmServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canvas = notes_canvas(tmp_path, 2)
    before = canvas.read_bytes()

    code, report, err = run(capsys, canvas, "--model", "local-keyless")

    assert code == 2
    assert report is None
    (line,) = err.strip().splitlines()
    assert "model 'local-keyless' needs the key 'nokey'" in line
    assert "`llm keys set nokey`" in line
    assert "OPENAI_API_KEY environment variable" in line
    assert server.requests == []
    assert canvas.read_bytes() == before

    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the environment variable llm falls back to
    code, report, err = run(capsys, canvas, "--model", "local-keyless")
    assert code == 0, err
    assert server.per_note() == {"NOTE-0": 1, "NOTE-1": 1}


# -- one client per run ---------------------------------------------------------------


async def test_one_client_per_run_closed_when_the_run_ends(server: LlmServer) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    tasks = [
        AsyncTask(f"t{i}", "memory-anchor", {"prompt": f"NOTE-{i} explain"}) for i in range(10)
    ]

    summary = await run_tasks(
        tasks, pm=pm, settings=Settings(model="local-chat"), max_concurrency=5
    )

    assert summary["success"] == 10
    assert server.connections <= 5
    assert server.wait_closed(5)
    assert [result["usage"] for result in summary["results"]] == [
        server.requests_for(f"NOTE-{i}")[0].usage for i in range(10)
    ]

    # A second run builds a client of its own (the first one is closed).
    await run_tasks(tasks[:2], pm=pm, settings=Settings(model="local-chat"))
    assert server.wait_closed(5)
    assert len(server.requests) == 12


def test_the_model_router_calls_through_the_same_path(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.latency = 0.05  # long enough for the two calls of -m 2 to overlap
    server.scripts["NOTE-1"] = Script(statuses=(429,))
    canvas = notes_canvas(tmp_path, 4)

    code, report, err = run(capsys, canvas, "--model", "local-chat", "--route", "model", "-m", 2)

    assert code == 0, err
    # One routing question and one answer per note: exactly one request each (the
    # routing run does not retry; NOTE-1, refused, falls back to the colour map).
    assert server.per_note() == {"NOTE-0": 2, "NOTE-1": 2, "NOTE-2": 2, "NOTE-3": 2}
    assert [request.status for request in server.requests_for("NOTE-1")] == [429, 200]
    assert server.max_in_flight == 2
    assert all(row["status"] == "success" for row in report["tasks"])
    assert server.wait_closed(5)  # both runs' clients are closed


def test_open_files_stay_bounded_by_the_concurrency_limit(
    server: LlmServer, tmp_path: Path
) -> None:
    canvas = notes_canvas(tmp_path, 300)

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    completed = subprocess.run(
        [
            *(sys.executable, "-m", "command_handlers.cli", str(canvas), "--auto", "-q"),
            *("--model", "local-chat", "-m", "20"),
        ],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
        env=dict(os.environ),
        preexec_fn=limit_files,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert server.per_note() == {f"NOTE-{i}": 1 for i in range(300)}
    assert server.max_in_flight <= 20
    assert server.connections <= 20


# -- the adapter is checked against the llm it was written for --------------------------


def test_the_client_adapter_was_written_for_the_installed_llm(server: LlmServer) -> None:
    """Fails when llm changes how its OpenAI models build clients: re-check the adapter."""
    import llm
    from llm.default_plugins import openai_models

    model = llm.get_async_model("local-chat")
    installed = llm_agents._llm_release()  # pylint: disable=protected-access
    assert installed == OPENAI_ADAPTER_LLM, (
        f"llm {installed} is installed; OpenAIClients was written for llm"
        f" {OPENAI_ADAPTER_LLM}: check that its OpenAI models still build a client per"
        " request through get_client(key, async_=True), then update OPENAI_ADAPTER_LLM"
    )
    assert OpenAIClients.fits(model)
    for cls in (openai_models.AsyncChat, openai_models.AsyncResponses):
        assert "self.get_client(key, async_=True)" in inspect.getsource(cls.execute)
    clients = OpenAIClients.adapt(model)
    assert clients is not None
    client = model.get_client(KEY, async_=True)
    assert client.max_retries == 0
    assert model.get_client(KEY, async_=True) is client


def test_a_model_the_adapter_does_not_know_is_left_as_llm_builds_it() -> None:
    import llm

    echo = llm.get_async_model("echo")
    assert OpenAIClients.adapt(echo) is None


# -- retry_after reads both headers -----------------------------------------------------


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class _Limited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429")
        self.response = _Response(headers)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "soon"}, None),
        ({"retry-after": "3"}, 3.0),
        ({}, None),
    ],
)
def test_retry_after_reads_retry_after_ms_first(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after(_Limited(headers)) == seconds
