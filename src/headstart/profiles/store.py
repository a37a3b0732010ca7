"""Profiles on disk: one JSON file per key under ``headstart_cache()/profiles``.

Written atomically (a temp file in the same folder, ``fsync``, ``os.replace``), mode 0600:
a profile names the files a command reads, which is nobody else's business.

A profile is never used blindly. :func:`validate` stats every recorded file (size, mtime,
inode): a changed file's ranges are dropped (its pages may have moved), and when most of
the recorded bytes changed the whole profile is refused; a different resolved snapshot or a
different set of installed distributions (``*.dist-info`` folder names, one ``listdir``
per site folder) refuses it too. ``headstart record`` then writes a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from headstart.pagecache.ranges import Range
from headstart.profiles import key as _key

__all__ = [
    "FORMAT",
    "FileEntry",
    "Profile",
    "Validated",
    "dist_names",
    "list_profiles",
    "load_profile",
    "profile_path",
    "profiles_dir",
    "remove_profile",
    "save_profile",
    "validate",
]

FORMAT = 1
STALE_FRACTION = 0.5  # more than this share of recorded bytes changed: refuse the profile


@dataclass
class FileEntry:
    """A recorded file: what it was when recorded, and what kind of file it is."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    role: str = "library"  # "weights" (a model snapshot file) | "library" (anything else)
    t: float = 0.0  # seconds from the recording's start to the first open (diagnostics)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_size == self.size and st.st_mtime_ns == self.mtime_ns
                and st.st_ino == self.inode)


@dataclass
class Profile:
    """What one cold start read: ``ranges`` are ``(file index, offset, length)`` in
    first-touch order (the order the process tree first opened the files; offsets ascending
    within a file). ``tail``: ranges resident at readiness that the tree's page tables did
    not show touched (read-around of mapped libraries); where a replay reads them, if at
    all, is :func:`headstart.profiles.replay.stream`'s choice."""

    key: str
    identity: dict
    files: list[FileEntry] = field(default_factory=list)
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    tail: list[tuple[int, int, int]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    snapshot: dict | None = None  # {"root", "commit", "source"} of the resolved model
    dists: dict[str, list[str]] = field(default_factory=dict)  # site folder -> dist-infos
    mechanism: str = ""
    created: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(r[2] for r in self.ranges)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ranges"] = [list(r) for r in self.ranges]
        d["tail"] = [list(r) for r in self.tail]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown profile format {d.get('format')!r}")
        return cls(
            key=d["key"], identity=d["identity"],
            files=[FileEntry(**f) for f in d["files"]],
            ranges=[(int(i), int(o), int(n)) for i, o, n in d["ranges"]],
            tail=[(int(i), int(o), int(n)) for i, o, n in d.get("tail") or ()],
            command=list(d.get("command") or []), snapshot=d.get("snapshot"),
            dists={k: list(v) for k, v in (d.get("dists") or {}).items()},
            mechanism=d.get("mechanism", ""), created=float(d.get("created") or 0.0),
            stats=dict(d.get("stats") or {}),
        )


def profiles_dir() -> str:
    return _key.profiles_dir()


def profile_path(key: str) -> str:
    return _key.profile_file(key)


def save_profile(profile: Profile) -> str:
    """Write atomically with mode 0600; returns the path."""
    import tempfile

    path = profile_path(profile.key)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not profile.created:
        profile.created = time.time()
    fd, tmp = tempfile.mkstemp(prefix="." + profile.key + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; umask-proof anyway
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(profile.to_dict(), fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    from headstart.profiles.probe import write_probe

    write_probe(profile)
    return path


def load_profile(key: str) -> Profile | None:
    """The stored profile, or None when there is none (or it cannot be read or parsed)."""
    try:
        with open(profile_path(key), encoding="utf-8") as fh:
            return Profile.from_dict(json.load(fh))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_profiles() -> list[tuple[str, Profile | None]]:
    """(key, profile or None when unreadable), sorted by key."""
    folder = profiles_dir()
    try:
        names = sorted(n for n in os.listdir(folder)
                       if n.endswith(".json") and not n.startswith(".")
                       and not n.endswith(".coverage.json"))
    except OSError:
        return []
    return [(n[:-5], load_profile(n[:-5])) for n in names]


def remove_profile(key: str) -> bool:
    """Remove the profile and what its replays measured; False when there was none."""
    from headstart.profiles.coverage import coverage_path
    from headstart.profiles.probe import probe_path

    for sidecar in (coverage_path(key), probe_path(key)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sidecar)
    try:
        os.unlink(profile_path(key))
    except FileNotFoundError:
        return False
    return True


def dist_names(site_dirs: list[str]) -> dict[str, list[str]]:
    """``*.dist-info`` / ``*.egg-info`` names per folder: package versions without
    importlib.metadata (one listdir each)."""
    out: dict[str, list[str]] = {}
    for d in site_dirs:
        try:
            out[d] = sorted(n for n in os.listdir(d) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    return out


@dataclass
class Validated:
    """What of a profile can be replayed now."""

    usable: bool
    reason: str = ""
    libraries: list[Range] = field(default_factory=list)  # first-touch order
    weights: list[Range] = field(default_factory=list)  # loader order
    tail: list[Range] = field(default_factory=list)  # read-around of mapped libraries
    stale_files: list[str] = field(default_factory=list)
    stale_bytes: int = 0
    bytes: int = 0


def validate(profile: Profile, snapshot=None) -> Validated:
    """Check ``profile`` against the disk now (stat of every recorded file, dist-info
    names, the resolved ``snapshot`` when given) and split its ranges for replay."""
    if snapshot is not None and profile.snapshot is not None:
        want = (profile.snapshot.get("root"), profile.snapshot.get("commit"))
        if (snapshot.root, snapshot.commit) != want:
            return Validated(False, f"model resolved to {snapshot.root}@{snapshot.commit}, "
                                    f"recorded {want[0]}@{want[1]}")
    if profile.dists and dist_names(list(profile.dists)) != profile.dists:
        return Validated(False, "installed packages changed since the recording")
    ok: list[bool] = []
    for entry in profile.files:
        try:
            ok.append(entry.matches(os.stat(entry.path)))
        except OSError:
            ok.append(False)
    return _split(profile, ok)


def unchecked(profile: Profile) -> Validated:
    """The profile's ranges split for replay without looking at the disk (no stat): for a
    residency pre-check, where a changed file only makes a replay look needed."""
    return _split(profile, [True] * len(profile.files))


def _split(profile: Profile, ok: list[bool]) -> Validated:
    out = Validated(True)
    for index, offset, length in profile.ranges:
        entry = profile.files[index]
        if not ok[index]:
            out.stale_bytes += length
            continue
        out.bytes += length
        target = out.weights if entry.role == "weights" else out.libraries
        target.append(Range(entry.path, offset, length))
    for index, offset, length in profile.tail:
        if ok[index]:
            out.bytes += length
            out.tail.append(Range(profile.files[index].path, offset, length))
    out.stale_files = [f.path for f, good in zip(profile.files, ok, strict=True) if not good]
    total = out.bytes + out.stale_bytes
    if total and out.stale_bytes > STALE_FRACTION * total:
        return Validated(False, f"{len(out.stale_files)} of {len(profile.files)} recorded "
                                f"files changed ({out.stale_bytes} of {total} bytes)",
                         stale_files=out.stale_files, stale_bytes=out.stale_bytes)
    return out
