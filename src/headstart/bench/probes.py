"""Readiness probes: how the bench knows a target has finished starting.

A probe is polled by :func:`headstart.bench.runner.run_once` until it says ready, the target
exits, or the run's deadline passes. Probes never block past the deadline they are given,
so a target that never gets ready is a failed run, never a hang. Stdlib only (urllib).
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from headstart.watch.phases import read_appended

__all__ = [
    "ExitProbe",
    "LogProbe",
    "Probe",
    "ProbeHit",
    "RequestProbe",
    "UrlProbe",
    "port_in_use",
    "url_port",
    "wait_port_free",
]


@dataclass
class ProbeHit:
    """A successful readiness check: what proved it (status line, log line) and a body."""

    detail: str
    body: bytes | None = None


class Probe:
    """Base class. ``check`` returns a :class:`ProbeHit` when ready, else ``None``."""

    kind = "probe"
    #: polled while the target runs; ExitProbe instead waits for the exit
    waits_for_exit = False

    def start(self, stdout_path: str, stderr_path: str) -> None:
        """Called once per run, after the target was launched."""

    def check(self, deadline: float) -> ProbeHit | None:
        raise NotImplementedError

    def port(self) -> tuple[str, int] | None:
        """(host, port) the target will listen on, when the probe knows it."""
        return None

    def describe(self) -> dict:
        return {"kind": self.kind}


def url_port(url: str) -> tuple[str, int] | None:
    """``http://127.0.0.1:8000/v1/models`` -> ``("127.0.0.1", 8000)``; default ports too."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.hostname, port) if port else None


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (host, port) or the port cannot be bound there.

    Connecting catches a listener on any address family; binding (with SO_REUSEADDR, the
    way servers bind) catches a listener on 0.0.0.0 when ``host`` is a specific address.
    Sockets in TIME_WAIT do not count: servers bind with SO_REUSEADDR too.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, socktype, proto, _, addr in infos:
        with socket.socket(family, socktype, proto) as s:
            s.settimeout(0.5)
            try:
                s.connect(addr)
                return True
            except OSError:
                pass
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def wait_port_free(host: str, port: int, timeout: float, interval: float = 0.1) -> bool:
    """Poll until nothing holds the port; False when it is still taken after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if not port_in_use(host, port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _http(url: str, body: bytes | None, deadline: float) -> ProbeHit | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers,
                                     method="POST" if body is not None else "GET")
    # No proxy: a benchmark talks to a local server, and an HTTP(S)_PROXY in the
    # environment would otherwise answer for it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        # The timeout is the rest of the run: the first chat completion of a server that
        # just became ready can take seconds, and cutting it short would retry forever.
        with opener.open(request, timeout=max(0.05, remaining)) as response:
            data = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:  # not 2xx: not ready yet (503 while loading)
        exc.close()
        return None
    except (OSError, ValueError):  # refused, reset, timed out, bad status line
        return None
    if 200 <= status < 300:
        return ProbeHit(detail=f"HTTP {status}", body=data)
    return None


@dataclass
class UrlProbe(Probe):
    """``--ready-url URL``: GET until a 2xx answer."""

    url: str
    kind = "url"

    def check(self, deadline: float) -> ProbeHit | None:
        return _http(self.url, None, deadline)

    def port(self) -> tuple[str, int] | None:
        return url_port(self.url)

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url}


@dataclass
class RequestProbe(Probe):
    """``--ready-request URL JSON``: POST the JSON body until a 2xx answer.

    ``payload`` is JSON text, or ``@FILE`` to read it from a file. The answer's body is
    kept by the runner so that correctness can be compared across variants.
    """

    url: str
    payload: str
    kind = "request"
    _body: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        text = self.payload
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        json.loads(text)  # ValueError for bad JSON, before any target starts
        self._body = text.encode("utf-8")

    def check(self, deadline: float) -> ProbeHit | None:
        return _http(self.url, self._body, deadline)

    def port(self) -> tuple[str, int] | None:
        return url_port(self.url)

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url, "json": self._body.decode("utf-8")}


@dataclass
class LogProbe(Probe):
    """``--ready-log REGEX``: ready when a line of the target's stdout or stderr matches.

    The runner sends output to files (never pipes, which a chatty target could fill and
    block on); this probe reads what was appended since the last check.
    """

    pattern: str
    kind = "log"
    _regex: re.Pattern = field(init=False, repr=False)
    _files: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)

    def start(self, stdout_path: str, stderr_path: str) -> None:
        # [path, offset, partial last line]
        self._files = [[stdout_path, 0, b""], [stderr_path, 0, b""]]

    def check(self, deadline: float) -> ProbeHit | None:
        for entry in self._files:
            # The unfinished last line is searched too: a prompt may never end in "\n".
            for raw in read_appended(entry):
                line = raw.decode("utf-8", "replace")
                if self._regex.search(line):
                    return ProbeHit(detail=f"{os.path.basename(entry[0])}: "
                                           f"{line.strip()[:200]}")
        return None

    def describe(self) -> dict:
        return {"kind": self.kind, "regex": self.pattern}


class ExitProbe(Probe):
    """``--until-exit``: the run is the target's whole life; exit status 0 is success."""

    kind = "exit"
    waits_for_exit = True

    def check(self, deadline: float) -> ProbeHit | None:
        return None
