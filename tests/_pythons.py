"""The CPython interpreters the tests run on: this one plus every other supported one that
pyenv has installed (the import and spawn internals differ by version)."""

from __future__ import annotations

import glob
import os
import sys

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def supported_pythons() -> list[str]:
    """Absolute interpreter paths, this interpreter first; pyenv's real binaries, not its
    shims (a shim may refuse to run, and is not the interpreter it starts)."""
    found = [sys.executable]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for minor in SUPPORTED:
        candidates = sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"))
        if minor != mine and candidates:
            found.append(candidates[-1])
    return found


def python_id(path: str) -> str:
    """``py3.12``: a test id naming the interpreter's version."""
    if path == sys.executable:
        return f"py{sys.version_info[0]}.{sys.version_info[1]}"
    return "py" + os.path.basename(path).removeprefix("python")
