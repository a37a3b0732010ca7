"""What identifies a startup profile, computed cheaply on ``headstart run``'s hot path.

The file name key covers what can be known without touching the disk: the adapter, the
model reference and revision (or, for a command without a model, its whole argv) and the
target's interpreter. What can only be checked with I/O (the resolved snapshot, package
versions, every recorded file's size/mtime/inode) is stored *inside* the profile and
checked in the background thread before replay (:func:`headstart.profiles.store.validate`).
"""

from __future__ import annotations

import os
import sys

try:  # 0.3 ms instead of hashlib's ~4 ms (it loads OpenSSL): this runs on the hot path
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - every CPython has _blake2
    from hashlib import blake2b

__all__ = ["identity_for", "key_for", "profile_file", "profile_key", "profiles_dir"]

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def profiles_dir() -> str:
    from headstart.settings import headstart_cache

    return os.path.join(headstart_cache(), "profiles")


def profile_file(key: str) -> str:
    """Where the profile with this key is stored (it may not exist)."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"bad profile key {key!r}")
    return os.path.join(profiles_dir(), key + ".json")


def identity_for(adapter: str, model: str | None, revision: str | None,
                 argv: list[str] | tuple[str, ...], python: str | None) -> dict:
    """The fields a profile's key is made of. ``python``: the target's interpreter path."""
    python = python or ""
    ident = {
        "adapter": adapter,
        "model": model or None,
        "revision": revision or None,
        # Without a model the command itself is what determines the reads; with one, the
        # port, host or log level must not split profiles.
        "argv": None if model else list(argv),
        # The installation, not the name it was started by: python, python3 and
        # python3.11 of one venv (or prefix) are one interpreter and read the same files.
        "python": _installation(python) if python else "",
        "python_real": os.path.realpath(python) if python else "",
    }
    return ident


def _installation(python: str) -> str:
    """The folder above the interpreter's ``bin`` (a venv or a prefix), absolute."""
    folder = os.path.dirname(os.path.abspath(python))
    return os.path.dirname(folder) if os.path.basename(folder) == "bin" else folder


def key_for(identity: dict) -> str:
    """``ADAPTER-NAME-HASH``: readable, filesystem-safe, unique per identity."""
    text = repr(sorted(identity.items()))
    digest = blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    name = identity.get("model") or (identity.get("argv") or ["cmd"])[-1] or "cmd"
    name = "".join(c if c in _SAFE else "_"
                   for c in os.path.basename(str(name).rstrip("/")) or "cmd")[:40]
    return f"{identity.get('adapter') or 'generic'}-{name}-{digest}"


def profile_key(plan, python: str | None = None) -> tuple[str, dict]:
    """(key, identity) of a StartupPlan's target. ``python`` defaults to this interpreter
    for in-process targets; an exec'd target's interpreter must be given (or is unknown)."""
    if python is None:
        python = sys.executable if plan.launch.in_process else ""
    ident = identity_for(plan.adapter, plan.model, plan.revision, plan.argv, python)
    return key_for(ident), ident
