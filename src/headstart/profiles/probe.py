"""Are the libraries a profile's start reads already in the page cache? Asked on the hot
path, before anything is started, in a few milliseconds.

A background import only wins time when the imports wait for the disk: with the library
files resident, importing ``torch`` is CPU work under the GIL, the target's main thread
blocks on the import gate until the preload thread is done, and the second thread and the
gate's wrapper of ``__import__`` only cost (about 3 % of ``import transformers``' CLI on
2 cores: README, Design, Imports). So a start whose profile's library pages are resident
skips the adapter's default preload.

The question is answered from a few pages the recorded start really read (a large
library's untouched parts are never resident, however warm the start): the first page of
the first, middle and last range of the libraries it read most and of ranges spread over
the first-touch order, kept beside the profile in ``KEY.probe`` (one line per file: the offsets,
a space, the path); the first page that is not resident ends the check.

Each page is asked of ``cachestat(2)`` (mincore where the kernel lacks it and tells us the
truth), which read nothing. ``preadv(..., RWF_NOWAIT)``, stdlib only and 0.2-0.5 ms for all,
was the check before, and is still the last resort: it returns ``EAGAIN`` instead of
waiting for the disk, but a miss starts the kernel's readahead there, and on this project's
VM (virtio) that read landed before the kernel looked again for 16-60 % of the misses,
which then read as resident: a cold start skipped its preload. The price of the exact
check: the first answer takes about 7 ms instead of 1.5 ms (30 files, warm, bytecode
cached), the import of ``ctypes`` and :mod:`headstart.pagecache.syscalls`; ``torch`` imports
``ctypes`` anyway, so a start reaches that point 2-3 ms later than before.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["libraries_resident", "probe_path", "probe_points", "write_probe"]

LARGEST = 6  # the libraries read most: their first, middle and last range
SPREAD = 24  # more ranges, evenly spaced in first-touch order: the first page of each
PAGE = 4096


def probe_path(key: str) -> str:
    from headstart.profiles.key import profile_file

    return profile_file(key)[:-len(".json")] + ".probe"


def probe_points(profile) -> dict[str, list[int]]:
    """Page offsets to check per file: pages the recorded start read from its libraries."""
    lib = [(profile.files[i].path, off, n) for i, off, n in profile.ranges
           if profile.files[i].role != "weights" and n > 0]
    per_file: dict[str, list[int]] = {}
    size: dict[str, int] = {}
    for path, off, n in lib:
        per_file.setdefault(path, []).append(off)
        size[path] = size.get(path, 0) + n
    points: dict[str, set[int]] = {}

    def add(path: str, offset: int) -> None:
        points.setdefault(path, set()).add(offset // PAGE * PAGE)

    for path in sorted(size, key=lambda p: -size[p])[:LARGEST]:
        offs = sorted(per_file[path])
        for at in (offs[0], offs[len(offs) // 2], offs[-1]):
            add(path, at)
    if lib:
        step = max(1, len(lib) // SPREAD)
        for path, off, _n in lib[::step][:SPREAD]:
            add(path, off)
    return {path: sorted(offs) for path, offs in points.items()}


def write_probe(profile) -> None:
    """Write ``KEY.probe`` beside the profile (best effort, atomically, mode 0600)."""
    path = probe_path(profile.key)
    lines = "".join(f"{','.join(map(str, offs))} {p}\n"
                    for p, offs in probe_points(profile).items() if "\n" not in p)
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, lines.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def libraries_resident(key: str) -> bool | None:
    """True when every probed page of the profile ``key`` is in the page cache, False at the
    first one that is not (or a file that cannot be opened), None without a probe file."""
    try:
        with open(probe_path(key), "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    for line in raw.splitlines():
        offsets, _, name = line.partition(b" ")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            resident = _page_check(fd)
            if not all(resident(int(off)) for off in offsets.split(b",")):
                return False
        except (OSError, ValueError):  # BlockingIOError: not resident
            return False
        finally:
            os.close(fd)
    return bool(raw)


def _page_check(fd: int):
    """``resident(offset)`` for the pages of the file open as ``fd``: cachestat, mincore
    where it is trusted for the file, else a one-byte ``RWF_NOWAIT`` read (see the module
    docstring)."""
    try:
        from headstart.pagecache import syscalls

        if syscalls.cachestat_available():
            return lambda off: syscalls.cachestat(fd, off, PAGE).nr_cache > 0
        if syscalls.mincore_trusted(os.fstat(fd)):
            return lambda off: syscalls.mincore_resident(fd, off, PAGE) > 0
    except (ImportError, AttributeError, OSError):  # no ctypes here
        pass
    buf = [bytearray(1)]
    return lambda off: os.preadv(fd, buf, off, os.RWF_NOWAIT) == 1
