"""The cost options on the command line, with the offline echo model (free) and an agent program."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

CliResult = tuple[int, str, str]
Run = Callable[..., CliResult]

pytestmark = pytest.mark.timeout(30)

#: The learner's notes of the fixture canvas that have text.
NOTE_IDS = ("note-recursion", "note-closure")


def test_a_dry_run_with_json_prints_the_plan_and_its_estimate(
    run_cli: Run, canvas_file: Path, tmp_path: Path
) -> None:
    original = canvas_file.read_bytes()

    report_file = tmp_path / "plan.json"

    code, out, err = run_cli(canvas_file, "--dry-run", "--json", "--report", report_file)

    assert code == 0, err
    report = json.loads(out)
    assert json.loads(report_file.read_text(encoding="utf-8")) == report
    assert report["tasks"] == []
    plan = report["plan"]
    assert plan["calls"] == len(NOTE_IDS)
    assert plan["estimate"]["input_tokens"] > 0
    assert plan["estimate"]["output_tokens"] > 0
    assert plan["estimate"]["usd"] == 0.0  # the echo model is free
    assert "Estimate:" in err
    assert canvas_file.read_bytes() == original
    assert sorted(p.name for p in canvas_file.parent.iterdir()) == ["notes.canvas"]


def test_an_agent_program_has_no_price_unless_given(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    command = ("--agent-command", agent_program.command)

    code, out, err = run_cli(canvas_file, "--dry-run", "--json", *command)
    assert code == 0, err
    assert json.loads(out)["plan"]["estimate"]["usd"] is None
    assert "no price" in err

    code, out, err = run_cli(canvas_file, "--dry-run", "--json", "--price", "2,4", *command)
    assert code == 0, err
    assert json.loads(out)["plan"]["estimate"]["usd"] > 0

    code, out, err = run_cli(canvas_file, "--budget-usd", "1", "--auto", *command)
    assert code == 2
    assert "--price" in err
    assert not agent_program.log.exists()


def test_a_budget_too_small_for_one_call_calls_nothing(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    original = canvas_file.read_bytes()

    code, out, err = run_cli(
        canvas_file,
        "--auto",
        "--json",
        "--budget-tokens",
        "10",
        "--agent-command",
        agent_program.command,
    )

    assert code == 1
    report = json.loads(out)
    assert {task["status"] for task in report["tasks"]} == {"cancelled"}
    assert {task["error"] for task in report["tasks"]} == {"budget of 10 tokens reached"}
    line = (
        f"budget of 10 tokens reached: {len(NOTE_IDS)} notes not answered;"
        " run again with a larger budget"
    )
    assert line in " ".join(err.split())
    # The calls never started share one line in the summary, not one each.
    assert f"cancelled {len(NOTE_IDS)} calls: budget of 10 tokens reached" in err
    assert f"({NOTE_IDS[0]})" not in err  # the summary names no cancelled note
    assert not agent_program.log.exists()  # no call
    assert canvas_file.read_bytes() == original


def test_a_budget_reached_says_so_even_when_quiet(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    code, _, err = run_cli(
        canvas_file,
        "--auto",
        "-q",
        "--budget-tokens",
        "1",
        "--agent-command",
        agent_program.command,
    )

    assert code == 1
    assert err.strip().splitlines()[-1].startswith("budget of 1 tokens reached")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--price", "3"),
        ("--price", "a,b"),
        ("--budget-usd", "-1"),
        ("--tpm", "0"),
        ("--tpm=-3", None),
        ("--tpm", "nan"),
    ],
)
def test_bad_cost_options_exit_2_with_one_line(
    run_cli: Run, canvas_file: Path, option: str, value: str | None
) -> None:
    original = canvas_file.read_bytes()

    code, out, err = run_cli(canvas_file, "--auto", option, *([] if value is None else [value]))

    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    if option.startswith("--tpm"):
        assert "tpm must be a number > 0, got " in err
    assert canvas_file.read_bytes() == original


def test_a_generous_budget_and_a_tpm_answer_every_note(run_cli: Run, canvas_file: Path) -> None:
    code, out, err = run_cli(
        canvas_file, "--auto", "--json", "--budget-tokens", "1000000", "--tpm", "10000000"
    )

    assert code == 0, err
    report = json.loads(out)
    assert {task["status"] for task in report["tasks"]} == {"success"}
    assert report["stats"]["usd"] == 0.0


def test_an_agent_file_can_declare_its_output_tokens(
    run_cli: Run, canvas_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "brief.md").write_text(
        "---\nname: brief\noutput_tokens: 120\n---\nAnswer in two sentences.\n", "utf-8"
    )
    (folder / "wordy.md").write_text(
        "---\nname: wordy\noutput_tokens: many\n---\nAnswer at length.\n", "utf-8"
    )

    code, out, err = run_cli(
        canvas_file, "-d", "--json", "--agents-dir", folder, "--agents", "brief"
    )
    assert code == 2  # the other file of the folder is refused: nothing runs
    assert "output_tokens of agent 'wordy'" in err

    (folder / "wordy.md").unlink()
    code, out, err = run_cli(
        canvas_file, "-d", "--json", "--agents-dir", folder, "--agents", "brief"
    )
    assert code == 0, err
    assert json.loads(out)["plan"]["estimate"]["output_tokens"] == 120 * len(NOTE_IDS)


def test_an_echo_dry_run_loads_no_price_data(canvas_file: Path) -> None:
    """The echo model is free: its plan needs no price data (nor pydantic under it)."""
    probe = (
        "import sys\n"
        "from command_handlers.cli import main\n"
        f"code = main([{str(canvas_file)!r}, '--dry-run', '-q'])\n"
        "print(code, 'genai_prices' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.stdout.split() == ["0", "False"], done.stderr
