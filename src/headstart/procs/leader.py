"""One prefetcher per host and model: a non-blocking ``flock`` keyed by the snapshot.

When several servers start on one host with the same model (a replica per GPU, a restart
loop), the first prefetches and the others skip: the page cache is shared, so one read of the
model serves them all, and the others keep their disk bandwidth and CPU for their own start.

Lock file: ``settings.runtime_dir()/<sha256(key)>.lock`` (folder mode 0700, file 0600). The
file holds the holder's pid, for people; the kernel lock is what counts.

Why ``flock`` and how it is kept from leaking to children:

* ``flock`` locks belong to the open file description, so a second :func:`lead` in the same
  process (another thread, another component) conflicts like another process would -- POSIX
  ``lockf`` locks would not (they are per process), and closing *any* descriptor of the file
  would silently drop them.
* The kernel drops the lock when the last descriptor of that description closes, so a
  crashed holder (SIGKILL included) releases it; nothing is left to clean up. The file itself
  stays (a few bytes; unlinking would race with the next locker).
* The descriptor is opened ``O_CLOEXEC``, so exec'd children (``subprocess``, ``spawn``, the
  forkserver) never get it. A plain ``fork()`` child (``multiprocessing`` with ``fork``, a
  worker pool) would share the description and keep the lock alive after the holder died;
  an ``os.register_at_fork`` hook closes the copy in every fork child, without unlocking.
* :meth:`LeaderLock.release` unlocks explicitly (``LOCK_UN``) before closing, so a release is
  a release even if some descriptor copy survived elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from types import TracebackType

from headstart import settings
from headstart.trace import tracer

__all__ = ["LeaderLock", "lead", "lock_path"]

log = logging.getLogger(__name__)

# id -> lock held by this process; read without a lock by the at-fork hook (single thread
# in the child; dict reads are atomic under the GIL).
_held: dict[int, LeaderLock] = {}
_hook_installed = False


def _close_in_fork_child() -> None:
    for lock in list(_held.values()):
        lock._forget()
    _held.clear()


class LeaderLock:
    """A held lock: ``release()`` it or use it as a context manager (idempotent).

    Dropping the object does not release it (the module keeps a reference): it stays held
    until ``release()`` or process exit, so ``if lead(key): ...`` cannot lose the lock
    half-way. In a ``fork()`` child the copy is already closed there (and not unlocked).
    ``held`` is False for a lock that is not backed by a file (see :func:`lead`).
    """

    def __init__(self, key: str, path: str, fd: int) -> None:
        self.key = key
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        _held.pop(id(self), None)
        if fd < 0:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            log.debug("unlock %s: %r", self.path, exc)
        finally:
            os.close(fd)
        tracer.instant("leader.release", cat="leader", key=self.key)

    def _forget(self) -> None:
        # In a fork child: drop our copy of the descriptor; the parent keeps the lock.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> LeaderLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"LeaderLock(key={self.key!r}, path={self.path!r}, held={self.held})"


def lock_path(key: str, directory: str | None = None) -> str:
    """The lock file for ``key`` (``directory`` defaults to ``settings.runtime_dir()``)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return os.path.join(directory or settings.runtime_dir(), f"{digest}.lock")


def lead(key: str, *, directory: str | None = None) -> LeaderLock | None:
    """Become the one process on this host that works on ``key``, without waiting.

    ``key`` should name the resolved snapshot (e.g. its real folder and commit), so that two
    spellings of one model share a lock. Returns a :class:`LeaderLock` when this caller is
    first, None when another live holder (any process, or this one) has it. Never raises:
    when the lock cannot be taken for another reason (read-only folder, no ``flock``) it
    returns a lock that is not backed by a file, as if this process were alone -- the cost
    of a duplicate prefetch is small, skipping one wrongly is not.
    """
    global _hook_installed
    path = lock_path(key, directory)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        log.debug("leader lock %s unavailable (%r); acting alone", path, exc)
        tracer.instant("leader.unavailable", cat="leader", key=key, error=repr(exc))
        return LeaderLock(key, path, -1)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        tracer.instant("leader.follow", cat="leader", key=key)
        return None
    except OSError as exc:  # e.g. ENOLCK on some network file systems
        os.close(fd)
        log.debug("flock %s failed (%r); acting alone", path, exc)
        return LeaderLock(key, path, -1)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    lock = LeaderLock(key, path, fd)
    if not _hook_installed:
        os.register_at_fork(after_in_child=_close_in_fork_child)
        _hook_installed = True
    _held[id(lock)] = lock
    tracer.instant("leader.lead", cat="leader", key=key)
    return lock
