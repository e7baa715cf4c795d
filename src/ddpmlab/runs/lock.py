"""One training process per run directory, enforced by an operating-system lock.

Two ``ddpmlab train`` (or two ``--resume``) into the same run directory would both write its
checkpoint, metrics and config, and the run would be neither. :class:`RunLock` takes an exclusive,
non-blocking lock on ``RUN/.lock`` for as long as a process trains there, so a second process refuses
at once. The lock belongs to the open file, not to the file's existence: the operating system drops it
when the process ends, however it ends (``kill -9`` included), so it is never left stuck. The file
itself stays (removing it would let a third process lock a new file while the second still waits on
the old one); it holds the pid of the last process that locked it, for the error message.

POSIX systems use ``fcntl.flock``; Windows, which has no fcntl, ``msvcrt.locking`` (also dropped by
the system when the process ends). Under torchrun only rank 0 takes the lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from ddpmlab.runs.rundir import RunError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = ".lock"


def _try_lock(file: IO[str]) -> bool:
    """Take the exclusive lock on ``file`` without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # Windows: lock the file's first byte

    file.seek(0)
    try:
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class RunLock:
    """The lock of ``run_dir`` (``run_dir/.lock``); a context manager, or ``acquire`` / ``release``.

    Raises:
        RunError: (from ``acquire``) another live process holds it; the message names that process's
            pid when it can be read.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        if self._file is not None:
            return
        file = open(self.path, "a+")  # never truncates: the holder's pid stays readable
        if not _try_lock(file):
            holder = _holder(file)
            file.close()
            raise RunError(
                f"another process{holder} is training in {self.path.parent}: wait for it to finish, "
                "or choose another --run"
            )
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        """Drop the lock (closing the file does it); nothing happens if it is not held."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove_folder(self) -> None:
        """Release the lock and remove the run directory, which must hold nothing but the lock file
        (a start refused before anything was written: nothing is left behind); a folder that holds
        anything else stays."""
        self.release()
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:  # not empty
            pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _holder(file: IO[str]) -> str:
    """' (pid N)' from the lock file, or '' when it cannot be read (e.g. Windows' locked byte)."""
    try:
        file.seek(0)
        text = file.read().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
