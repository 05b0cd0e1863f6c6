"""Private by default: what the service, the broker and the embedded stack write is theirs alone.

Documents, the database and its WAL, logs and keys are readable by nobody but the account that
runs the process. Two layers, because either alone leaves gaps:

- ``private_umask()`` at every entry point (``cloudimaging service|up|broker``; the Manager sets
  its own, as it may not import this package): every file and directory the process or a
  library it uses creates (SQLite's -wal/-shm, log rotation, a driver's spool) starts private.
- Explicit modes where we create files (``private_dir``, ``create_private``), so code embedded in
  another process (tests, a host application with umask 022) is private too, and directories of
  an older install are tightened at start.

Certificates and CRLs stay 0644 (they are public); they live in 0700 directories all the same.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: Files 0600, directories 0700.
PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_umask() -> int:
    """Make the process umask at least as strict as 077; the previous umask is returned."""
    previous = os.umask(PRIVATE_UMASK)
    os.umask(previous | PRIVATE_UMASK)
    return previous


def private_dir(path: Path) -> Path:
    """``path`` as a directory of mode 0700: created if missing (parents too, each 0700 when we
    create it), tightened if it exists and is ours with group or other bits set."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        _tighten(directory, DIR_MODE)
    _tighten(path, DIR_MODE)
    return path


def create_private(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist; tighten it if it does (ours).

    Made before a library opens the file (SQLite, logging), which would create it with the
    umask's mode; SQLite gives the -wal and -shm files the mode of the database file.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    _tighten(path, FILE_MODE)
    return path


def open_private(path: Path | str, flags: int) -> int:
    """``os.open`` with mode 0600 for a file that may be created (an ``opener`` for ``open``)."""
    return os.open(path, flags, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    """chmod to ``mode`` when the owner is us and group or other have any bit; never loosen.

    A sticky directory (``/tmp``, ``/var/tmp``) is shared by design and left as it is: a
    database file put straight in ``/tmp`` by a process running as root must not make ``/tmp``
    root's alone (every other account's programs, CUPS's filters among them, would then fail)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_mode & stat.S_ISVTX and stat.S_ISDIR(st.st_mode):
            return
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, st.st_mode & 0o700 | mode)
