"""Tests of command_handlers.fileio: reading, saving and checking canvas files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from command_handlers import fileio
from command_handlers.canvas import DEFAULT_MAX_BYTES, Canvas, CanvasError
from command_handlers.fileio import (
    changed_on_disk,
    read_canvas,
    remove_stale_temporaries,
    save_atomic,
    save_canvas,
)

# --------------------------------------------------------------------------- helpers


def dumps(data: Any) -> str:
    return json.dumps(data, indent="\t", ensure_ascii=False)


SAMPLE = {
    "nodes": [
        {
            "id": "n1",
            "type": "text",
            "text": "A monad is a burrito 🌯",
            "x": 0,
            "y": 0,
            "width": 250,
            "height": 80,
            "color": "6",
        }
    ],
    "edges": [],
    "metadata": {"version": "1.0"},
}


def test_the_default_limit_is_the_models() -> None:
    assert fileio.DEFAULT_MAX_BYTES == DEFAULT_MAX_BYTES == 50 * 1024 * 1024


# --------------------------------------------------------------------------- read_canvas


def test_load_remembers_path_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "notes.canvas"
    raw = dumps(SAMPLE).encode()
    path.write_bytes(raw)
    canvas = read_canvas(path)
    assert canvas.path == path
    assert canvas.source_digest == hashlib.sha256(raw).hexdigest()
    assert read_canvas(str(path)).path == path


def test_load_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CanvasError, match=r"nope\.canvas: no such file"):
        read_canvas(tmp_path / "nope.canvas")


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CanvasError, match="is a directory"):
        read_canvas(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_refuses_a_special_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.canvas"
    os.mkfifo(fifo)
    with pytest.raises(CanvasError, match="not a regular file"):
        read_canvas(fifo)


def test_load_refuses_a_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.canvas"
    path.write_bytes(b"{}" + b" " * 2000)
    with pytest.raises(CanvasError, match="has 2,002 bytes, larger than the limit of 1,000 bytes"):
        read_canvas(path, max_bytes=1000)
    assert read_canvas(path, max_bytes=2002).to_json() == "{}"


def test_load_refuses_a_file_that_grew_after_the_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "grows.canvas"
    path.write_bytes(b"{}" + b" " * 2000)
    real_stat = os.stat

    def small_stat(target: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_stat(target, *args, **kwargs)
        fields = list(info)
        fields[stat.ST_SIZE] = 2
        return os.stat_result(fields)

    monkeypatch.setattr(fileio.os, "stat", small_stat)
    with pytest.raises(CanvasError, match="the file is larger than the limit of 100 bytes"):
        read_canvas(path, max_bytes=100)


def test_load_reports_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.canvas"
    path.write_text("{}")

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio, "open", refuse, raising=False)
    with pytest.raises(CanvasError, match=r"locked\.canvas: cannot read: Permission denied"):
        read_canvas(path)
    monkeypatch.undo()
    monkeypatch.setattr(fileio.os, "stat", refuse)
    with pytest.raises(CanvasError, match=r"locked\.canvas: cannot read: Permission denied"):
        read_canvas(path)


def test_load_prefixes_parse_errors_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.canvas"
    path.write_text('{"nodes": [1]}')
    with pytest.raises(CanvasError, match=r"bad\.canvas: node 0: must be an object"):
        read_canvas(path)


# --------------------------------------------------------------------------- saving


def test_save_atomic_makes_a_backup_of_the_old_bytes(tmp_path: Path) -> None:
    target = tmp_path / "notes.canvas"
    target.write_bytes(b"old bytes")
    os.chmod(target, 0o640)
    backup = save_atomic(target, "new text ✓")
    assert backup == tmp_path / "notes.canvas.bak"
    assert backup.read_bytes() == b"old bytes"
    assert target.read_text(encoding="utf-8") == "new text ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.canvas", "notes.canvas.bak"]
    assert save_atomic(target, b"third", backup=False) is None
    assert backup.read_bytes() == b"old bytes"
    assert target.read_bytes() == b"third"


def test_save_atomic_creates_a_new_file_without_backup(tmp_path: Path) -> None:
    target = tmp_path / "new.canvas"
    assert save_atomic(str(target), "{}") is None
    assert target.read_text() == "{}"
    assert not (tmp_path / "new.canvas.bak").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_save_atomic_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.canvas"
    real.write_text("old")
    link = tmp_path / "link.canvas"
    link.symlink_to(real)
    backup = save_atomic(link, "new")
    assert link.is_symlink()
    assert real.read_text() == "new"
    assert backup == tmp_path / "real.canvas.bak"


def test_save_atomic_leaves_the_original_untouched_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "notes.canvas"
    target.write_bytes(b"original")
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst) == target:
            raise OSError("disk on fire")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_atomic(target, "new")
    assert target.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.canvas", "notes.canvas.bak"]


def test_save_atomic_leaves_the_original_untouched_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "notes.canvas"
    target.write_bytes(b"original")

    def failing_fsync(_fd: int) -> None:
        raise OSError("no space left")

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="no space left"):
        save_atomic(target, "new", backup=False)
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.canvas"]


def test_save_atomic_retries_a_taken_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "notes.canvas"
    taken = tmp_path / f".notes.canvas.{os.getpid()}-aaaa.tmp"
    taken.write_text("someone else's")
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda _n: next(names))
    save_atomic(target, "new")
    assert target.read_text() == "new"
    assert taken.read_text() == "someone else's"


def test_directory_fsync_problems_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_directories(path: Any, flags: int, *args: Any) -> int:
        if Path(path).is_dir():
            raise PermissionError("cannot open a directory")
        return real_open(path, flags, *args)

    monkeypatch.setattr(fileio.os, "open", no_directories)
    save_atomic(tmp_path / "a.canvas", "one")
    monkeypatch.undo()

    real_fsync = os.fsync

    def no_directory_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError("fsync of a directory is not supported")
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", no_directory_fsync)
    save_atomic(tmp_path / "a.canvas", "two")
    assert (tmp_path / "a.canvas").read_text() == "two"


def test_save_and_changed_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "notes.canvas"
    path.write_text(dumps(SAMPLE), encoding="utf-8")
    canvas = read_canvas(path)
    assert not changed_on_disk(canvas)
    original = path.read_bytes()

    path.write_bytes(original.replace(b"monad", b"MONAD"))  # same size, other bytes
    assert changed_on_disk(canvas)
    path.write_bytes(original + b"\n")
    assert changed_on_disk(canvas)
    path.write_bytes(original)
    assert not changed_on_disk(canvas)
    path.unlink()
    assert changed_on_disk(canvas)
    path.mkdir()
    assert changed_on_disk(canvas)
    path.rmdir()
    path.write_bytes(original)

    canvas.add_text_node("answer", 300, 0, 250, 150, color="5")
    backup = save_canvas(canvas)
    assert backup == tmp_path / "notes.canvas.bak"
    assert backup.read_bytes() == original
    assert path.read_text(encoding="utf-8") == canvas.to_json()
    assert not changed_on_disk(canvas)
    assert canvas.source_digest == hashlib.sha256(path.read_bytes()).hexdigest()

    other = tmp_path / "copy.canvas"
    assert save_canvas(canvas, other, backup=False) is None
    assert canvas.path == other
    assert read_canvas(other).to_json() == canvas.to_json()


def test_canvas_without_a_file() -> None:
    canvas = Canvas.from_json("{}")
    with pytest.raises(CanvasError, match="not loaded from or saved to a file"):
        changed_on_disk(canvas)
    with pytest.raises(CanvasError, match="no path to save"):
        save_canvas(canvas)


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "notes.canvas"
    target.write_text("{}")
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a pid no process has now
    hour_ago = time.time() - 2 * fileio.STALE_TEMPORARY_SECONDS
    stale = [
        tmp_path / f".notes.canvas.{gone.pid}-0123abcd.tmp",  # its writer is gone
        tmp_path / f".notes.canvas.bak.{gone.pid}-0123abcd.tmp",  # the backup's
        tmp_path / ".notes.canvas.89abcdef.tmp",  # an earlier version's, long untouched
    ]
    kept = [
        tmp_path / f".notes.canvas.{os.getpid()}-0123abcd.tmp",  # being written by us
        tmp_path / ".notes.canvas.fedcba98.tmp",  # an earlier version's, fresh
        tmp_path / f".other.canvas.{gone.pid}-0123abcd.tmp",  # another file's
        tmp_path / ".notes.canvas.mine.tmp",  # not our pattern
    ]
    for path in stale + kept:
        path.write_text("partial")
    os.utime(stale[2], (hour_ago, hour_ago))

    removed = remove_stale_temporaries(target)

    assert sorted(removed) == sorted(stale)
    assert all(path.exists() for path in kept)
    assert target.read_text() == "{}"
    assert remove_stale_temporaries(tmp_path / "missing" / "x.canvas") == []
