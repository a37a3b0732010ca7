"""Loader order inside the weight files, by sampling their page-cache residency.

fanotify says when a file was opened, not which part of it was read when; a loader that
maps a shard and reads tensors in its own order would otherwise be replayed in offset
order. :class:`WeightSampler` takes the resident page map of each weight file every
``interval`` seconds; each ``chunk`` gets the number of the sample that first saw it
resident (:class:`~headstart.profiles.layout.ChunkTimes`), and the replay follows that.

What it misses: the order inside a chunk, and reads faster than the sampling period (they
share one sample number and fall back to file order, then offset).
"""

from __future__ import annotations

import logging
import threading

from headstart.pagecache.residency import resident_runs
from headstart.profiles.layout import ChunkTimes, order_by_chunk

__all__ = ["WeightSampler"]

log = logging.getLogger(__name__)


class WeightSampler:
    """Samples the residency of ``paths`` from a daemon thread between ``start`` and
    ``stop`` (which takes one last sample); ``sample`` can also be called directly."""

    def __init__(self, paths: list[str], chunk: int = 4 * 2**20,
                 interval: float = 0.05) -> None:
        self.paths = paths
        self.chunk = chunk
        self.interval = interval
        self.first: dict[tuple[str, int], int] = {}  # (path, chunk index) -> sample number
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
            for off, length in runs:
                for c in range(off // self.chunk, (off + length - 1) // self.chunk + 1):
                    self.first.setdefault((path, c), n)
        self.samples += 1

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
        return ChunkTimes(self.chunk, dict(self.first), self.samples)

    def order(self, ranges: list[tuple[str, int, int]], file_rank: dict[str, int]
              ) -> list[tuple[str, int, int]]:
        """:func:`~headstart.profiles.layout.order_by_chunk` by these samples."""
        return order_by_chunk(ranges, self.times(), file_rank)
