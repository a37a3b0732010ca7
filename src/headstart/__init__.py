"""headstart: make Python ML servers start fast.

``import headstart`` is on every target's critical path, so this module imports nothing
but its version: each public name is loaded from its module on first attribute access.

Rules every public function keeps:

* **Never raises into the target.** Background work (prefetch, preload, prewarm) records
  failures in its handle, the debug log and the trace; the target runs as it would without
  headstart.
* **Never blocks interpreter exit.** Every thread is a daemon thread; nothing joins them.
* **Never writes into model or cache folders.** headstart writes only its own cache folder
  (``HEADSTART_CACHE``), trace files it is asked for, and lock files in its runtime folder.
"""

# No `from __future__ import annotations`: it imports the __future__ module at run time,
# and the annotations below need nothing newer than Python 3.10.
from headstart._version import __version__

# No `typing` or `logging` here: each costs milliseconds on every target's start. Modules
# that log create their loggers; Python's last-resort handler only prints warnings, and
# headstart logs below that unless the CLI's -v asks for more.
TYPE_CHECKING = False

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "resolve_model": "headstart.models.resolve",
    "Snapshot": "headstart.models.snapshot",
    "SnapshotFile": "headstart.models.snapshot",
    "prefetch": "headstart.pagecache.engine",
    "Prefetch": "headstart.pagecache.engine",
    "PrefetchStats": "headstart.pagecache.engine",
    "Range": "headstart.pagecache.ranges",
    "residency": "headstart.pagecache.residency",
    "Residency": "headstart.pagecache.residency",
    "evict": "headstart.pagecache.evict",
    "Eviction": "headstart.pagecache.evict",
    "memory_budget": "headstart.pagecache.budget",
    "preload": "headstart.imports.preload",
    "Preload": "headstart.imports.preload",
    "prewarm_forkserver": "headstart.procs.forkserver",
    "HeadstartError": "headstart.errors",
    "ModelNotFoundError": "headstart.errors",
    "RevisionNotFoundError": "headstart.errors",
    "InvalidSizeError": "headstart.errors",
}

__all__ = [
    "Eviction",
    "HeadstartError",
    "InvalidSizeError",
    "ModelNotFoundError",
    "Prefetch",
    "PrefetchStats",
    "Preload",
    "Range",
    "Residency",
    "RevisionNotFoundError",
    "Snapshot",
    "SnapshotFile",
    "__version__",
    "evict",
    "memory_budget",
    "prefetch",
    "preload",
    "prewarm_forkserver",
    "residency",
    "resolve_model",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from headstart.errors import (
        HeadstartError,
        InvalidSizeError,
        ModelNotFoundError,
        RevisionNotFoundError,
    )
    from headstart.imports.preload import Preload, preload
    from headstart.models.resolve import resolve_model
    from headstart.models.snapshot import Snapshot, SnapshotFile
    from headstart.pagecache.budget import memory_budget
    from headstart.pagecache.engine import Prefetch, PrefetchStats, prefetch
    from headstart.pagecache.evict import Eviction, evict
    from headstart.pagecache.ranges import Range
    from headstart.pagecache.residency import Residency, residency
    from headstart.procs.forkserver import prewarm_forkserver


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
