"""The public surface of ``headstart`` and what the hot path imports.

``headstart.__all__`` is pinned here so nothing leaks or vanishes by accident, and the
import cost of ``import headstart`` and ``headstart run`` is checked in fresh interpreters
(the only place where ``sys.modules`` tells the truth).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import headstart

SRC = Path(__file__).resolve().parent.parent / "src"

# The documented public API (README "From Python", the package docstring's rules).
PUBLIC = [
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

# Third-party libraries no `headstart run` without a model may load for the target.
HEAVY = ["torch", "numpy", "transformers", "huggingface_hub", "safetensors", "tokenizers",
         "tqdm", "matplotlib", "modelscope"]
# Stdlib packages nothing on that path needs (process, network, archive, metadata machinery).
STDLIB_NEVER = ["subprocess", "multiprocessing", "concurrent.futures", "asyncio", "socket",
                "ssl", "http", "urllib.request", "email", "importlib.metadata", "pickle",
                "sqlite3", "uuid", "zipfile", "tarfile"]
# Loaded only to look up a recorded startup profile (engine, resolver, store): with
# --no-profile and no model, none of them is needed.
PROFILE_ONLY = ["json", "ctypes", "hashlib", "tempfile", "random", "platform",
                "headstart.pagecache.engine", "headstart.pagecache.syscalls",
                "headstart.models.resolve", "headstart.procs.leader",
                "headstart.profiles.store", "headstart.profiles.replay"]


# What `headstart run` keeps off the hot path (each costs milliseconds): options are parsed
# by hand, records are not dataclasses, logging loads only when something is said.
HOT_PATH_NEVER = ["argparse", "dataclasses", "typing", "logging", "re", "shutil", "inspect"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADSTART_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HEADSTART_CACHE"] = str(tmp_path / "cache")  # no recorded profile can match
    return env


def test_all_is_the_documented_surface():
    assert headstart.__all__ == PUBLIC
    assert sorted(dir(headstart)) == sorted(PUBLIC)
    # Every lazily exported name is public and every public name but the version is lazy.
    assert sorted(headstart._EXPORTS) == sorted(set(PUBLIC) - {"__version__"})


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves_to_its_module(name):
    value = getattr(headstart, name)
    assert value is not None
    if name == "__version__":
        assert isinstance(value, str) and value
        return
    module = importlib.import_module(headstart._EXPORTS[name])
    assert getattr(module, name) is value
    assert name in module.__all__, f"{module.__name__}.__all__ lacks {name}"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        headstart.no_such_name  # noqa: B018


def test_every_module_declares_all():
    missing = []
    for path in sorted((SRC / "headstart").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        has_all = any(isinstance(node, ast.Assign | ast.AnnAssign)
                      and any(getattr(t, "id", None) == "__all__"
                              for t in (node.targets if isinstance(node, ast.Assign)
                                        else [node.target]))
                      for node in tree.body)
        empty = not tree.body or (len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr))
        if not has_all and not empty and path.name != "__main__.py":
            missing.append(str(path.relative_to(SRC)))
    assert missing == []


def _fresh(code: str, tmp_path: Path) -> object:
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_import_headstart_imports_only_its_version(tmp_path):
    new = _fresh("import sys\nbefore = set(sys.modules)\nimport headstart\n"
                 "new = sorted(set(sys.modules) - before)\n"
                 "import json\nprint(json.dumps(new))", tmp_path)
    assert new == ["headstart", "headstart._version"]


def _run_modules(tmp_path: Path, *options: str) -> set[str]:
    probe = "import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-m", "headstart", "run", *options, "--",
                          sys.executable, "-c", probe], env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_run_without_a_model_loads_nothing_heavy(tmp_path):
    modules = _run_modules(tmp_path)
    assert "headstart.commands.run" in modules  # the probe really ran in-process
    forbidden = HEAVY + STDLIB_NEVER + PROFILE_ONLY + HOT_PATH_NEVER
    assert sorted(m for m in forbidden if m in modules) == []


def test_run_without_model_or_profile_loads_no_prefetch_machinery(tmp_path):
    modules = _run_modules(tmp_path, "--no-profile")
    assert "headstart.commands.run" in modules
    assert sorted(m for m in HEAVY + STDLIB_NEVER + PROFILE_ONLY if m in modules) == []
