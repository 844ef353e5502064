"""Guards for long jobs on a shared machine: one writer per output, a clean stop on SIGINT/SIGTERM, and disk
faults (full, read-only, over quota) reported in one line instead of a traceback."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from pipeline.errors import PipelineError

# errors that say the disk, not the program, is at fault: full, over quota, file too large, read-only, no access
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


class Busy(PipelineError):
    """Another live process holds the output or model directory this job would write."""

    exit_code = 75  # EX_TEMPFAIL: try again once the other job is done


class DiskError(PipelineError):
    """A write failed because of the disk; what was written before it is intact."""

    exit_code = 74  # EX_IOERR

    def __init__(self, message: str, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


class Interrupted(PipelineError):
    """SIGINT or SIGTERM stopped the job at a safe point; `--resume` continues it."""

    resumable = True

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def is_disk_fault(exc: BaseException) -> bool:
    """Whether an exception is an OSError the disk caused (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, EPERM)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def disk_error(exc: OSError, doing: str, state: str, resumable: bool = False) -> DiskError:
    """One line: what failed and where, why, and what is safe on disk."""
    where = f" ({exc.filename})" if exc.filename else ""
    return DiskError(f"{doing}{where}: {exc.strerror or exc}; {state}", resumable)


@contextlib.contextmanager
def on_disk_fault(doing: str, state: str | Callable[[], tuple[str, bool]], resumable: bool = False) -> Iterator[None]:
    """A disk fault inside the block becomes one DiskError line: what failed, why, and what is safe on disk (`state`,
    or a function giving the state and whether a rerun can resume, looked at only when the fault happens). Other
    errors pass through."""
    try:
        yield
    except OSError as exc:
        if not is_disk_fault(exc):
            raise
        said, can_resume = state() if callable(state) else (state, resumable)
        raise disk_error(exc, doing, said, can_resume) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def exclusive(target: str | Path, what: str) -> Iterator[Path]:
    """Hold `<target>.lock` for the block; a second process on the same target stops at once, naming the holder.

    The lock is `flock`, so the kernel releases it when its holder dies, however it dies: a lock file left by a
    killed job is stale and is taken over, never waited for.
    """
    lock = Path(f"{target}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, target, what)
    except OSError as exc:
        if is_disk_fault(exc):
            raise disk_error(exc, f"cannot take the lock for {target}", "nothing was written") from None
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # before unlocking: a process that opened the old file sees it is gone and retries
        os.close(fd)


def _acquire(lock: Path, target: str | Path, what: str) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise Busy(f"{target}: another process (pid {holder}) is writing this {what}; wait for it to finish "
                       f"or stop it (lock: {lock})") from None
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one


class StopSignals:
    """Turns SIGINT and SIGTERM into a request the job honours at its next safe point; a second signal stops at
    once. Outside the main thread (where Python cannot set handlers) it does nothing."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            raise Interrupted(signum, f"{name} again: stopped at once; completed work is kept, --resume continues")
        self.signum = signum
        print(f"\n{name}: {self.doing} (send it again to stop at once)", file=sys.stderr, flush=True)

    def check(self, message: str) -> None:
        """Raise Interrupted with `message` if a stop was requested."""
        if self.signum is not None:
            raise Interrupted(self.signum, f"{signal.Signals(self.signum).name}: {message}")
