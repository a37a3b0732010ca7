"""headstart's exceptions, all of them.

Each inherits the builtin a caller would naturally catch, so ``except FileNotFoundError``
keeps working::

    HeadstartError(Exception)
    ├── ModelNotFoundError(HeadstartError, FileNotFoundError)
    │   └── RevisionNotFoundError
    ├── InvalidSizeError(HeadstartError, ValueError)
    ├── UnreadablePathError(HeadstartError, PermissionError)
    ├── ThrottleError(HeadstartError, PermissionError)
    ├── MissingExtraError(HeadstartError, ImportError)
    ├── DemoModelExistsError(HeadstartError, FileExistsError)
    ├── NoLoadableFilesError      internal: resolve_model turns it into ModelNotFoundError
    └── ReadaheadUnsupported      internal: the caller reads with the engine instead

The CLI turns any ``HeadstartError`` into one line on stderr and exit status 2. The two
internal ones never leave headstart: the module that raises them documents who catches them.
"""

from __future__ import annotations

__all__ = [
    "DemoModelExistsError",
    "HeadstartError",
    "InvalidSizeError",
    "MissingExtraError",
    "ModelNotFoundError",
    "NoLoadableFilesError",
    "ReadaheadUnsupported",
    "RevisionNotFoundError",
    "ThrottleError",
    "UnreadablePathError",
]


class HeadstartError(Exception):
    """Base class of every error headstart raises (on bad input, unless internal)."""


class ModelNotFoundError(HeadstartError, FileNotFoundError):
    """A model reference resolved to nothing; the message names every place looked at."""

    def __init__(self, ref: str, looked_at: list[str] | tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.looked_at = list(looked_at)
        where = "; ".join(self.looked_at) if self.looked_at else "nowhere"
        super().__init__(f"model {ref!r} not found (looked at: {where})")

    def __str__(self) -> str:  # FileNotFoundError would print errno-style otherwise
        return self.args[0]


class RevisionNotFoundError(ModelNotFoundError):
    """The model exists in a cache but not at the requested revision."""

    def __init__(self, ref: str, revision: str, looked_at: list[str] | tuple[str, ...] = ()):
        self.revision = revision
        super().__init__(ref, looked_at)
        where = "; ".join(self.looked_at) if self.looked_at else "nowhere"
        self.args = (f"revision {revision!r} of model {ref!r} not found (looked at: {where})",)


class InvalidSizeError(HeadstartError, ValueError):
    """A size string such as ``16MiB``, ``2G`` or ``25%`` could not be parsed."""


class UnreadablePathError(HeadstartError, PermissionError):
    """A path given on the command line exists but cannot be read."""


class ThrottleError(HeadstartError, PermissionError):
    """Disk throttling was asked for but cannot be set up (not root, no cgroup, ...)."""


class MissingExtraError(HeadstartError, ImportError):
    """A library of an optional extra (here ``demo``) is not installed."""


class DemoModelExistsError(HeadstartError, FileExistsError):
    """The destination exists and is not empty (pass ``force=True`` to replace it)."""

    def __str__(self) -> str:  # FileExistsError would print errno-style otherwise
        return self.args[0]


class NoLoadableFilesError(HeadstartError):
    """Internal: the folder has nothing a server would load (resolve turns it into an error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadaheadUnsupported(HeadstartError):
    """Internal: the device's readahead window is 0 or advice is not honoured: use the engine."""
