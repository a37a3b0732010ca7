"""Startup phases named from a server's own log lines, timed as the lines appear.

An adapter lists its server's milestones as ``TargetFacts.log_phases``: ``(name, regex)``
pairs. A regex with a group named ``s`` is a *reported* span (``Loading weights took 2.36
seconds``: the span ends at the line and lasts ``s``); any other regex is a *mark*: a phase
named ``name`` starts at the first matching line and lasts until the next mark (or until
the target was ready). A line that says ``pid=N`` (vLLM's ``(EngineCore_DP0 pid=N)``
prefix) is attributed to that process.

:class:`LogTail` reads what was appended to the target's stdout/stderr files and stamps
each line with the monotonic time it was read: with a 20 ms tick, that is the time the
line was written, to within a tick plus the target's own buffering (``PYTHONUNBUFFERED``).

``python -X importtime`` lines (``PYTHONPROFILEIMPORTTIME=1``) of top-level packages give
the import time of the heavy packages: each ends when its line is written.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["HEAVY_PACKAGES", "LogLine", "LogTail", "Phase", "PhaseMatcher", "PhaseWatcher",
           "import_spans", "phases_from_lines", "read_appended", "strip_importtime"]

# top-level packages whose import is worth a row of its own
HEAVY_PACKAGES = ("torch", "transformers", "vllm", "sglang", "safetensors", "numpy",
                  "tokenizers", "accelerate", "triton", "fastapi", "uvicorn", "pydantic",
                  "huggingface_hub", "scipy", "sentencepiece", "xformers", "flashinfer")

_PID = re.compile(r"\bpid=(\d+)")
_IMPORT = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


@dataclass
class LogLine:
    t: float          # monotonic time the line was read
    stream: str       # "stdout" or "stderr"
    text: str


@dataclass
class Phase:
    """A named span; ``kind`` is ``mark`` (until the next mark), ``reported`` (the duration
    is the server's own figure) or ``import``."""

    name: str
    start: float
    end: float
    kind: str = "mark"
    pid: int | None = None
    line: str = ""
    args: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self, t0: float = 0.0) -> dict:
        return {"name": self.name, "kind": self.kind, "start_s": round(self.start - t0, 4),
                "seconds": round(self.seconds, 4), "pid": self.pid, "line": self.line[:300],
                **({"args": self.args} if self.args else {})}


def read_appended(entry: list, limit: int = -1) -> list[bytes]:
    """What was appended to a file since the last call, split into lines: ``entry`` is
    ``[path, offset, unfinished last line]`` and is updated; the last element returned is
    the unfinished line (``b""`` after a newline). At most ``limit`` new bytes (-1: all);
    [] when there is nothing new or the file cannot be read."""
    path, offset, partial = entry
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(limit)
    except OSError:
        return []
    if not data:
        return []
    entry[1] = offset + len(data)
    parts = (partial + data).split(b"\n")
    entry[2] = parts[-1]
    return parts


class LogTail:
    """Follows files that another process appends to; keeps every complete line."""

    def __init__(self, paths: dict[str, str], keep: int = 200_000) -> None:
        self._files = {stream: [path, 0, b""] for stream, path in paths.items()}
        self.lines: list[LogLine] = []
        self._keep = keep

    def poll(self, now: float) -> list[LogLine]:
        new: list[LogLine] = []
        for stream, entry in self._files.items():
            for raw in read_appended(entry, 16 << 20)[:-1]:
                new.append(LogLine(now, stream, raw.decode("utf-8", "replace").rstrip("\r")))
        if len(self.lines) < self._keep:
            self.lines.extend(new[: self._keep - len(self.lines)])
        return new

    def flush(self, now: float) -> list[LogLine]:
        """Also the unfinished last lines (the target is gone)."""
        new = self.poll(now)
        for stream, entry in self._files.items():
            if entry[2]:
                line = LogLine(now, stream, entry[2].decode("utf-8", "replace"))
                new.append(line)
                self.lines.append(line)
                entry[2] = b""
        return new


class PhaseMatcher:
    """Compiled ``(name, regex)`` phase patterns of one adapter."""

    def __init__(self, patterns: Sequence[tuple[str, str]]) -> None:
        self.patterns = [(name, re.compile(rx)) for name, rx in patterns]

    def match(self, line: LogLine) -> list[Phase]:
        out: list[Phase] = []
        for name, rx in self.patterns:
            m = rx.search(line.text)
            if m is None:
                continue
            pid_m = _PID.search(line.text)
            pid = int(pid_m.group(1)) if pid_m else None
            if "s" in rx.groupindex and m.group("s") is not None:
                seconds = float(m.group("s"))
                out.append(Phase(name, line.t - seconds, line.t, "reported", pid, line.text,
                                 {"reported_s": seconds}))
            else:
                out.append(Phase(name, line.t, line.t, "mark", pid, line.text))
        return out


class PhaseWatcher:
    """A :class:`LogTail` polled by a daemon thread, for runs without a process sampler
    (``headstart bench``): :meth:`phases` once the run is over."""

    def __init__(self, stdout: str, stderr: str, patterns: Sequence[tuple[str, str]],
                 interval: float = 0.02) -> None:
        self.tail = LogTail({"stdout": stdout, "stderr": stderr})
        self.patterns = patterns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True,
                                        name="headstart-phases")

    def start(self) -> PhaseWatcher:
        self._thread.start()
        return self

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tail.poll(time.monotonic())

    def phases(self, launch: float, ready: float | None) -> list[Phase]:
        self._stop.set()
        self._thread.join()
        end = time.monotonic()
        self.tail.flush(end)
        return phases_from_lines(self.tail.lines, self.patterns, launch, ready, end)


def phases_from_lines(lines: Iterable[LogLine], patterns: Sequence[tuple[str, str]],
                      launch: float, ready: float | None, end: float) -> list[Phase]:
    """Marks become consecutive phases (the first one from launch), reported spans stay."""
    matcher = PhaseMatcher(patterns)
    marks: list[Phase] = []
    reported: list[Phase] = []
    seen: set[str] = set()
    for line in lines:
        for ph in matcher.match(line):
            if ph.kind == "reported":
                reported.append(ph)
            elif ph.name not in seen:  # a mark counts once: its first line
                seen.add(ph.name)
                marks.append(ph)
    stop = ready if ready is not None else end
    out: list[Phase] = []
    if marks:
        out.append(Phase("launch", launch, marks[0].start, "mark"))
    for i, ph in enumerate(marks):
        nxt = marks[i + 1].start if i + 1 < len(marks) else max(stop, ph.start)
        out.append(Phase(ph.name, ph.start, nxt, "mark", ph.pid, ph.line))
    if marks and ready is not None and ready > marks[-1].start:
        out[-1].end = ready
    return out + reported


def import_spans(lines: Iterable[LogLine], packages: Sequence[str] = HEAVY_PACKAGES
                 ) -> list[Phase]:
    """``-X importtime`` lines of top-level heavy packages: the first import of each."""
    out: list[Phase] = []
    seen: set[str] = set()
    wanted = set(packages)
    for line in lines:
        if not line.text.startswith("import time:"):
            continue
        m = _IMPORT.match(line.text)
        if m is None:
            continue
        name = m.group(4)
        # the first import of a package, at any depth (transformers imports torch itself)
        if name in wanted and name not in seen:
            seen.add(name)
            seconds = int(m.group(2)) / 1e6
            out.append(Phase(f"import {name}", line.t - seconds, line.t, "import",
                             args={"cumulative_s": seconds, "depth": len(m.group(3)) // 2}))
    return out


def strip_importtime(path: str) -> None:
    """Rewrite a log file without its ``import time:`` lines (kept apart, for the user)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return
    if b"import time:" not in data:
        return
    keep, times = [], []
    for raw in data.split(b"\n"):
        (times if raw.startswith(b"import time:") else keep).append(raw)
    with open(path + ".importtime", "wb") as fh:
        fh.write(b"\n".join(times) + b"\n")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(b"\n".join(keep))
    os.replace(tmp, path)
