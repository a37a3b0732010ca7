"""Loader order inside the weight files, by sampling their page-cache residency.

fanotify says when a file was opened, not which part of it was read when; a loader that
maps a shard and reads tensors in its own order would otherwise be replayed in offset
order. :class:`WeightSampler` takes the resident page map of each weight file every
``interval`` seconds; each ``chunk`` gets the number of the sample that first saw more than
half of it resident (:class:`~headstart.profiles.layout.ChunkTimes`), and the replay
follows that. More than half, not any page: a loader that touches the first page of every
tensor before it copies them (or a read-around that spills into the next chunk) would
otherwise rank every chunk holding a tensor's start first, in offset order, whatever order
it then reads them in; and one touch of a mapping maps a whole large folio (2 MiB of a
4 MiB chunk on Linux 6.18 ext4). A chunk never more than half resident keeps the sample
that first saw any of it.

What it misses: the order inside a chunk, and reads faster than the sampling period (they
share one sample number and fall back to file order, then offset in the direction the
loader walked the file).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

from headstart.pagecache.residency import resident_runs
from headstart.profiles.layout import ChunkTimes, chunk_pieces, order_by_chunk

__all__ = ["WeightSampler", "chunk_bytes"]

log = logging.getLogger(__name__)


def chunk_bytes(runs: Iterable[tuple[int, int]], chunk: int) -> dict[int, int]:
    """Bytes of ``runs`` (offset, length; disjoint) in each ``chunk``-byte chunk they meet."""
    out: dict[int, int] = {}
    for off, length in runs:
        for c, lo, hi in chunk_pieces(off, length, chunk):
            out[c] = out.get(c, 0) + hi - lo
    return out


class WeightSampler:
    """Samples the residency of ``paths`` from a daemon thread between ``start`` and
    ``stop`` (which takes one last sample); ``sample`` can also be called directly."""

    def __init__(self, paths: list[str], chunk: int = 4 * 2**20,
                 interval: float = 0.05) -> None:
        self.paths = paths
        self.chunk = chunk
        self.interval = interval
        self.first: dict[tuple[str, int], int] = {}  # (path, chunk index) -> sample number
        self.seen: dict[tuple[str, int], int] = {}  # the same, for any page of the chunk
        self._sizes: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="headstart-weights",
                                        daemon=True)

    def start(self) -> None:
        if self.paths:
            self._thread.start()

    def sample(self) -> None:
        n = self.samples
        for path in self.paths:
            try:
                runs = resident_runs(path)
            except OSError:
                continue
            size = self._sizes.get(path)
            if size is None:
                try:
                    size = self._sizes[path] = os.stat(path).st_size
                except OSError:
                    continue
            for c, nbytes in chunk_bytes(runs, self.chunk).items():
                self.note((path, c), n, 2 * nbytes > min(self.chunk, size - c * self.chunk))
        self.samples += 1

    def note(self, key: tuple[str, int], sample: int, half: bool) -> None:
        """Chunk ``key`` seen in ``sample``, more than half of it (``half``) or not."""
        self.seen.setdefault(key, sample)
        if half:
            self.first.setdefault(key, sample)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:
                log.debug("weight sampling: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def times(self) -> ChunkTimes:
        """What the samples so far say (a copy)."""
        return ChunkTimes(self.chunk, {**self.seen, **self.first}, self.samples)

    def order(self, ranges: list[tuple[str, int, int]], file_rank: dict[str, int]
              ) -> list[tuple[str, int, int]]:
        """:func:`~headstart.profiles.layout.order_by_chunk` by these samples."""
        return order_by_chunk(ranges, self.times(), file_rank)
