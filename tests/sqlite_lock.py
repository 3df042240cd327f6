"""A SQLite file held locked by another process, for as long as a test needs it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

#: A subprocess of a test is killed after this many seconds.
TIMEOUT = 60

#: Holds an exclusive lock on a SQLite file until its stdin closes; says "held" once it has it.
LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("held", flush=True)
    sys.stdin.read()
    conn.execute("ROLLBACK")
    """
)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process holds ``path`` locked (``BEGIN EXCLUSIVE``) inside the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT)
        holder.stdout.close()
