"""Run many two-thread import races in one process; print one JSON summary line.

Usage: python race_harness.py SCENARIO MODE RUNS WORKDIR [INIT_S]

MODE: ``sequential`` (main thread imports alone: the reference result), ``naive`` (a plain
``threading.Thread(target=importlib.import_module)`` starts first) or ``headstart``
(``headstart.preload`` starts first). Each run uses fresh module names, so every run is a
first import. The main thread imports after a delay that sweeps the whole import window.
Stdlib only (plus headstart): it runs on every Python under test.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import threading
import time
import traceback

LAZY_INIT = '''
import sys, time, types
time.sleep({init_s})
from . import sub
class _LazyModule(types.ModuleType):
    # like transformers: the real names live on a new object swapped in at the end
    def __getattr__(self, name):
        if name == "Name":
            return sub.NAME
        raise AttributeError(name)
_new = _LazyModule(__name__)
_new.__file__, _new.__path__, _new.__spec__ = __file__, __path__, __spec__
sys.modules[__name__] = _new
'''

INVERSION_INIT = '''
from . import a
VALUE = a.VALUE
'''

# pkg.a imports pkg.b and pkg.b imports pkg.a: fine in one thread (partial module), but a
# second thread importing pkg.b while the first is inside pkg.a inverts the two module locks
INVERSION_A = '''
import time
time.sleep({half})
from . import b
VALUE = 1
'''

INVERSION_B = '''
import importlib, time
time.sleep({half})
a = importlib.import_module(__package__ + ".a")  # as transformers' _LazyModule does
'''

CIRCULAR_APP = '''
import time
time.sleep({half})
import {pkg}
def f():
    return {pkg}.VALUE
'''

CIRCULAR_PKG = '''
import time
time.sleep({half})
import {app}
VALUE = 2
def g():
    return {app}.f()
'''

THREAD_INIT = '''
import threading, time
def _load():
    # import_module: an import statement here would wait for the package lock that the
    # joining thread holds, a deadlock of plain CPython
    import importlib
    importlib.import_module("{pkg}.sub")
time.sleep({half})
_t = threading.Thread(target=_load)
_t.start()
_t.join()
time.sleep({half})
from . import sub
VALUE = sub.VALUE
'''

STALL_INIT = '''
import threading, time
import {helper}
time.sleep({half})
_t = threading.Thread(target={helper}.load)
_t.start()
_t.join()
VALUE = 3
'''

STALL_HELPER = '''
def load():
    import importlib
    importlib.import_module("{pkg}.sub")
'''

FAIL_INIT = '''
import time
time.sleep({init_s})
raise ImportError("boom from {pkg} init")
'''


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def make(scenario: str, i: int, root: str, init_s: float) -> tuple[str, str, str]:
    """Write run ``i``'s fixture; return (module to preload, statement main runs, check)."""
    half = init_s / 2
    tag = f"{scenario}_{os.getpid()}_{i}"
    pkg = f"hs_{tag}"
    if scenario == "lazy":
        write(f"{root}/{pkg}/__init__.py", LAZY_INIT.format(init_s=init_s))
        write(f"{root}/{pkg}/sub.py", "NAME = 'lazy-name'\n")
        return pkg, f"from {pkg} import Name", "Name == 'lazy-name'"
    if scenario == "lazy_import_module":
        write(f"{root}/{pkg}/__init__.py", LAZY_INIT.format(init_s=init_s))
        write(f"{root}/{pkg}/sub.py", "NAME = 'lazy-name'\n")
        return (pkg, f"import importlib; Name = importlib.import_module({pkg!r}).Name",
                "Name == 'lazy-name'")
    if scenario == "inversion":
        write(f"{root}/{pkg}/__init__.py", INVERSION_INIT)
        write(f"{root}/{pkg}/a.py", INVERSION_A.format(half=half))
        write(f"{root}/{pkg}/b.py", INVERSION_B.format(half=half))
        return pkg, f"import {pkg}.b", f"{pkg}.VALUE == 1 and {pkg}.b.a is {pkg}.a"
    if scenario == "circular":
        app = f"hs_app_{tag}"
        write(f"{root}/{app}.py", CIRCULAR_APP.format(half=half, pkg=pkg))
        write(f"{root}/{pkg}/__init__.py", CIRCULAR_PKG.format(half=half, app=app))
        return (pkg, f"import {app}, {pkg}",
                f"{app}.f() == 2 and {pkg}.g() == 2")
    if scenario == "thread_in_init":
        write(f"{root}/{pkg}/__init__.py", THREAD_INIT.format(half=half, pkg=pkg))
        write(f"{root}/{pkg}/sub.py", "VALUE = 4\n")
        return pkg, f"from {pkg} import VALUE", "VALUE == 4"
    if scenario == "stall":
        helper = f"hs_helper_{tag}"
        write(f"{root}/{helper}.py", STALL_HELPER.format(pkg=pkg))
        write(f"{root}/{pkg}/__init__.py", STALL_INIT.format(half=half, helper=helper))
        write(f"{root}/{pkg}/sub.py", "VALUE = 3\n")
        return pkg, f"from {pkg} import VALUE", "VALUE == 3"
    if scenario == "fail":
        write(f"{root}/{pkg}/__init__.py", FAIL_INIT.format(init_s=init_s, pkg=pkg))
        return pkg, f"from {pkg} import Name", "False"
    if scenario == "missing":
        return pkg, f"import {pkg}", "False"
    raise SystemExit(f"unknown scenario {scenario}")


def outcome(statement: str, check: str, tag: str) -> str:
    """'ok', or the exception type and message with this run's names made generic."""
    ns: dict = {}
    try:
        exec(statement, ns)
        exec("import sys", ns)
        ok = eval(check, ns)
        return "ok" if ok else "wrong-value"
    except BaseException as exc:  # the result under test
        text = f"{type(exc).__name__}: {exc}".replace(tag, "<tag>")
        text = re.sub(r" at (0x[0-9a-f]+|\d+)", "", text)  # lock addresses differ per run
        if os.environ.get("HARNESS_TRACEBACKS"):
            traceback.print_exc()
        return text


def main() -> None:
    scenario, mode, runs, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    init_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.02
    sys.path.insert(0, root)
    fixtures = [make(scenario, i, root, init_s) for i in range(runs)]
    importlib.invalidate_caches()
    steps = 30  # delays sweep 0 .. 1.5 x the init time, before, inside and after the window
    results: dict[str, int] = {}
    gate_outcomes: dict[str, int] = {}
    failures: list[tuple[float, str]] = []
    preload = None
    if mode == "headstart":
        from headstart.imports.preload import preload
    for i, (module, statement, check) in enumerate(fixtures):
        delay = (i % steps) / steps * 1.5 * init_s
        tag = f"{scenario}_{os.getpid()}_{i}"
        handle = owner = None
        if mode == "naive":
            owner = threading.Thread(target=_quiet_import, args=(module,), daemon=True)
            owner.start()
        elif mode == "headstart":
            handle = preload([module], stall_timeout=float(os.environ.get("STALL_S", "10")))
        time.sleep(delay)
        result = outcome(statement, check, tag)
        results[result] = results.get(result, 0) + 1
        if result != "ok":
            failures.append((round(delay, 4), result))
        if owner is not None:
            owner.join(30)
        if handle is not None:
            if not handle.wait(30):
                raise SystemExit("preload never finished")
            for event in handle.gate_events:
                gate_outcomes[event["outcome"]] = gate_outcomes.get(event["outcome"], 0) + 1
    gate_clean = None
    if mode == "headstart":
        import builtins

        from headstart.imports import gate

        gate_clean = (builtins.__import__ is gate._import_patch.original
                      or not gate._import_patch.in_chain) and not gate.pending()
    print(json.dumps({"python": sys.version.split()[0], "scenario": scenario, "mode": mode,
                      "runs": runs, "results": results, "gate_outcomes": gate_outcomes,
                      "first_failures": failures[:5], "gate_clean": gate_clean}))


def _quiet_import(name: str) -> None:
    # the naive thread's own failure is not what we measure
    with contextlib.suppress(BaseException):
        importlib.import_module(name)


if __name__ == "__main__":
    main()
