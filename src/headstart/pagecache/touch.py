"""Touch page-cache pages once with a CPU, in the background, so that a hypervisor maps
them into the guest now and not on the target's first access.

Why: a virtual machine whose memory the host backs lazily (KVM, Firecracker, Cloud
Hypervisor, QEMU without preallocation) maps a guest-physical page into its second-level
page table (Intel EPT, AMD NPT) on the first access by a guest CPU. A page of a VM just
booted was never accessed; with a balloon's free page reporting (``virtio_balloon``'s
``VIRTIO_BALLOON_F_REPORTING``, Linux ``mm/page_reporting.c``) every page the guest frees, an
evicted page-cache page among them, goes back to the host and is unmapped again. A disk read
into such a page is a DMA the host does through its own mapping, so a page that readahead
made resident is still unmapped for the guest: the first guest access to it exits to the
hypervisor. The guest kernel sees nothing (no fault, no I/O): the cost shows as user CPU of
whichever thread touches the page first. Measured on this project's 2-vCPU Firecracker VM
(benchmarks/design_measurements.md): the first chat completion of a cold ``transformers
serve`` start took 2.5-3.0 s with 4.3-5.4 CPU s against 1.6-2.1 s and 2.9-3.5 CPU s warm,
all of the difference in MKL's first pass over the weights (``sgemm_scopy``, 2.36 against
0.82 CPU s); reading the replayed pages from another process first made it 2.0 s.

So the replay helper can read every weight chunk it made resident once more, into one
reused buffer, in a thread of its own, right behind the reads: the exits are then taken in
the helper, before the target needs the pages (``HEADSTART_REPLAY_TOUCH=1``). It is off by
default: how many pages the host had taken back varied from one start to the next on that
VM (the balloon reported 0 to 270 MB in the seconds after an eviction), and side by side,
5 cold starts each at 300 MB/s, the start took 10.09 s with it against 9.87 s without (the
same first request, 1.91 against 1.81 s): no gain to show where the host had kept the pages.

How: a ``pread`` copies in the kernel without the GIL (touching through a mapping holds it,
and the submitter of the reads waited for it: the replay fell behind the loader), and a
page that left the cache meanwhile is read alone (``POSIX_FADV_RANDOM``), never with a
read-around. The thread runs ``SCHED_IDLE``: only on CPU time that neither the target nor
the submitter wants. Where the host backs the guest fully, this is a copy at memory speed
(0.2 CPU s per GB here).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading

from headstart.pagecache.syscalls import open_for_read

__all__ = ["PageToucher"]

_BUFFER = 1 << 20  # bytes copied per call
_MAX_OPEN = 8  # files kept open at once (weights: a few large files, in order)


class PageToucher:
    """A daemon thread that reads ``(path, offset, length)`` ranges once, in the order they
    are :meth:`put`, discarding the bytes. Best-effort: a file that cannot be read is counted
    in ``errors``. :meth:`close` lets it finish what was put (or drops the rest)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._buffer = memoryview(bytearray(_BUFFER))
        self.bytes = 0
        self.errors = 0
        self._drop = False
        self._thread = threading.Thread(target=self._run, name="headstart-touch", daemon=True)
        self._thread.start()

    def put(self, path: str, offset: int, length: int) -> None:
        self._queue.put((path, offset, length))

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop after what was put (``wait``) or at once; waits up to ``timeout`` s."""
        self._drop = not wait
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        # 0 = this thread: the policy is per thread
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if not self._drop:
                    self._touch(*item)
        finally:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = open_for_read(path)
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            while len(self._fds) > _MAX_OPEN:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(path)
        return fd

    def _touch(self, path: str, offset: int, length: int) -> None:
        try:
            fd = self._fd(path)
            end = offset + length
            while offset < end and not self._drop:
                got = os.preadv(fd, [self._buffer[:min(_BUFFER, end - offset)]], offset)
                if got <= 0:
                    return
                offset += got
                self.bytes += got
        except OSError:
            self.errors += 1
