"""A folder nobody can write in, root included, for as long as a test needs it.

For a normal user, taking away the write permission is enough. Root writes
through permissions, so for root the folder is made immutable (``chattr +i``,
which binds root too, on the file systems that have the flag); where that is
not possible the test is skipped, saying why. The folder is always made
writable again afterwards, so that pytest can remove it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _chattr(flag: str, folder: Path) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    done = subprocess.run([chattr, flag, str(folder)], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """Make ``folder`` read-only for this process, whoever runs it.

    Yields:
        The folder, with a new file there refused.
    """
    if os.geteuid() != 0:
        mode = stat.S_IMODE(folder.stat().st_mode)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    if not _chattr("+i", folder):
        pytest.skip(
            "running as root, and chattr +i (the only read-only folder root"
            " respects) is not available here"
        )
    try:
        try:
            (folder / ".probe").touch()
        except OSError:
            pass
        else:  # pragma: no cover - a file system that ignores the flag
            (folder / ".probe").unlink()
            pytest.skip("running as root, and this file system ignores chattr +i")
        yield folder
    finally:
        _chattr("-i", folder)
