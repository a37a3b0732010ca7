"""Which Python a target command runs, and which files that Python's startup reads.

A cold start reads the libraries as well as the weights (benchmarks/design_measurements.md),
so a cold run must evict the target's interpreter, stdlib and site-packages too.
The interpreter is found from the command's argv[0]: a Python executable itself, or a
console script whose shebang names one (``#!/venv/bin/python`` or ``#!/usr/bin/env python3``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PythonEnv", "find_interpreter", "python_environment"]

# Asked of the target's own interpreter: where its files live and which versions it has.
# importlib.metadata reads dist-info only, so torch is never imported here.
_QUERY = r"""
import json, site, sys, sysconfig
from importlib import metadata
paths = sysconfig.get_paths()
def version(name):
    try:
        return metadata.version(name)
    except Exception:
        return None
sites = []
try:
    sites += site.getsitepackages()
except Exception:
    pass
try:
    sites.append(site.getusersitepackages())
except Exception:
    pass
libdir = sysconfig.get_config_var("LIBDIR") or ""
ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
print(json.dumps({
    "executable": sys.executable, "version": sys.version.split()[0],
    "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "stdlib": paths.get("stdlib"), "platstdlib": paths.get("platstdlib"),
    "purelib": paths.get("purelib"), "platlib": paths.get("platlib"),
    "site_packages": sites, "libpython": (libdir + "/" + ldlib) if libdir and ldlib else "",
    "packages": {n: version(n) for n in ("torch", "transformers", "headstart", "vllm",
                                          "sglang", "safetensors", "tokenizers")},
}))
"""


@dataclass
class PythonEnv:
    """A Python installation as its own interpreter reports it."""

    executable: str
    version: str = ""
    prefix: str = ""
    base_prefix: str = ""
    stdlib: str = ""
    platstdlib: str = ""
    site_packages: list[str] = field(default_factory=list)
    libpython: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)

    def evict_paths(self) -> list[str]:
        """Folders and files a cold start of this Python reads, without duplicates.

        A virtual environment's prefix is taken whole (its bin, site-packages, pyvenv.cfg).
        A system prefix (/usr) is not: only its stdlib and site-packages, so that a cold
        run does not evict the whole operating system.
        """
        paths: list[str] = [self.executable]
        if self.prefix and self.prefix != self.base_prefix:
            paths.append(self.prefix)
        paths += [self.stdlib, self.platstdlib, *self.site_packages, self.libpython]
        seen: list[str] = []
        for p in paths:
            if not p or not os.path.exists(p):
                continue
            real = os.path.realpath(p)
            if real not in seen:
                seen.append(real)
        # Drop entries already covered by a folder in the list.
        return [p for p in seen
                if not any(o != p and p.startswith(o.rstrip("/") + "/") for o in seen)]


def find_interpreter(argv: Sequence[str]) -> str | None:
    """The Python executable that ``argv`` runs, or None for a non-Python command.

    ``python3 x.py`` -> that python; ``vllm serve`` -> the python in vllm's shebang;
    ``env X=1 python ...`` and ``/usr/bin/env python3`` shebangs are followed.
    """
    args = list(argv)
    while args and os.path.basename(args[0]) == "env":
        args = args[1:]
        while args and ("=" in args[0] or args[0].startswith("-")):
            args = args[1:]
    if not args:
        return None
    exe = shutil.which(args[0]) or (args[0] if os.path.exists(args[0]) else None)
    if exe is None:
        return None
    if os.path.basename(exe).startswith("python"):
        return exe
    from headstart.procs.launch import read_shebang

    shebang = read_shebang(exe)
    if not shebang:
        return None
    if os.path.basename(shebang[0]) == "env":
        rest = [a for a in shebang[1:] if not a.startswith("-") and "=" not in a]
        return shutil.which(rest[0]) if rest else None
    if os.path.basename(shebang[0]).startswith("python"):
        return shebang[0] if os.path.exists(shebang[0]) else None
    return None


def python_environment(interpreter: str, timeout: float = 60.0) -> PythonEnv | None:
    """Ask ``interpreter`` where its files are; None when it cannot be run."""
    try:
        proc = subprocess.run([interpreter, "-I", "-c", _QUERY], capture_output=True,
                              text=True, timeout=timeout, check=False)
        data = json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return PythonEnv(
        executable=data["executable"] or interpreter,
        version=data["version"],
        prefix=data["prefix"],
        base_prefix=data["base_prefix"],
        stdlib=data["stdlib"] or "",
        platstdlib=data["platstdlib"] or "",
        site_packages=[p for p in [data["purelib"], data["platlib"], *data["site_packages"]]
                       if p],
        libpython=data["libpython"],
        packages=data["packages"],
    )
