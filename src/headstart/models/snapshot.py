"""What a model reference resolves to: a folder and the ordered files a server reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Role", "Snapshot", "SnapshotFile"]

Role = Literal["weights", "sidecar"]


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a snapshot.

    ``path`` is the name inside the snapshot folder (a symlink in the HF cache);
    ``real_path`` the file it leads to (a blob), which is what gets read and checked.
    """

    name: str
    path: str
    real_path: str
    size: int
    role: Role


@dataclass(frozen=True)
class Snapshot:
    """A resolved model: ``files`` are in read order (sidecars first, then weight shards)."""

    ref: str
    root: str
    files: tuple[SnapshotFile, ...]
    source: Literal["local", "hf", "modelscope"] = "local"
    revision: str | None = None
    commit: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def weight_files(self) -> tuple[SnapshotFile, ...]:
        return tuple(f for f in self.files if f.role == "weights")

    @property
    def key(self) -> str:
        """Identifies the snapshot on this host (for the one-prefetcher-per-host lock)."""
        return f"{self.source}:{self.commit or ''}:{self.root}"
