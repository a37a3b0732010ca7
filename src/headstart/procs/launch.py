"""Start the target: in this process when it is Python code of this interpreter, else ``exec``.

In-process launch keeps what the target would see if run directly: ``sys.argv``, a fresh
``__main__`` module, ``sys.path[0]``, exit status, exceptions and signals (nothing here
catches them). Anything we cannot reproduce exactly (another interpreter, interpreter
options such as ``-u`` or ``-X``, a binary, a shell script) is ``exec``-ed instead.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence

from headstart._struct import Struct

__all__ = [
    "Invocation",
    "Launch",
    "classify",
    "exec_target",
    "fork_deferring_signals",
    "is_python_name",
    "is_this_interpreter",
    "parse_invocation",
    "read_shebang",
    "run_in_process",
    "sys_path0",
]

KINDS = ("console_script", "module", "code", "script", "exec")


def is_python_name(name: str) -> bool:
    """``python``, ``python3``, ``python3.11``, ``python3.13t``, ``pypy3``: a file name that
    is a Python interpreter (no ``re``: it is on the hot path)."""
    for prefix in ("python", "pypy"):
        if name.startswith(prefix):
            rest = name[len(prefix) :].rstrip("tdm")  # abiflags: python3.13t
            return all(c.isdigit() or c == "." for c in rest)
    return False


# Interpreter options that take a separate argument (python -W ignore, -X importtime).
_PY_OPTS_WITH_VALUE = frozenset("WX")
_PY_LONG_OPTS_WITH_VALUE = frozenset({"--check-hash-based-pycs"})


class Invocation:
    """What ``argv`` runs: ``via`` is program, module, script, code, stdin, interpreter (no
    target: a REPL, ``--version``, a ``-m`` without its module) or none (empty argv).

    ``name`` is the program's file name, the ``-m`` module, the script's stem (``-c`` and
    ``-`` for code and stdin); ``args`` what follows the target. ``options`` are the
    interpreter's own tokens before the target (``-u``, ``-X importtime``, a combined
    ``-um``, ``--``); ``code`` the ``-c`` text and ``path`` the script as given.
    """

    __slots__ = ("args", "code", "name", "options", "path", "via")

    def __init__(self, name: str, args: Sequence[str], via: str, options: Sequence[str] = (),
                 code: str | None = None, path: str | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.via = via
        self.options = list(options)
        self.code = code
        self.path = path

    def __repr__(self) -> str:
        return f"Invocation({self.name!r}, {self.args!r}, via={self.via!r})"


def parse_invocation(argv: Sequence[str]) -> Invocation:
    """Name the program ``argv`` runs, seeing through a Python interpreter and its options:
    the one reading of a Python command line (the adapters dispatch on it, :func:`classify`
    decides the launch from it)."""
    if not argv:
        return Invocation("", [], "none")
    base = os.path.basename(argv[0])
    if not is_python_name(base):
        return Invocation(base, argv[1:], "program")
    i, n = 1, len(argv)
    while i < n:
        token = argv[i]
        if token == "-":
            return Invocation("-", argv[i + 1 :], "stdin", argv[1:i])
        if token == "--" or not token.startswith("-"):
            if token == "--" and i + 1 >= n:
                break
            script = argv[i + 1] if token == "--" else token
            stem = os.path.basename(script)
            stem = stem[:-3] if stem.endswith(".py") else stem
            skip = 2 if token == "--" else 1
            return Invocation(stem, argv[i + skip :], "script", argv[1 : i + skip - 1],
                              path=script)
        if token.startswith("--"):
            i += 2 if token in _PY_LONG_OPTS_WITH_VALUE else 1
            continue
        # Short options may be combined: -um MODULE, -Wignore, -OO.
        letters = token[1:]
        i += 1
        for j, ch in enumerate(letters):
            attached = letters[j + 1 :]
            if ch in "mc":
                options = [*argv[1 : i - 1], *([token] if j else [])]
                if attached:
                    value, rest_at = attached, i
                elif i < n:
                    value, rest_at = argv[i], i + 1
                else:
                    return Invocation("", [], "interpreter", argv[1:])
                if ch == "m":
                    return Invocation(value, argv[rest_at:], "module", options)
                return Invocation("-c", argv[rest_at:], "code", options, code=value)
            if ch in _PY_OPTS_WITH_VALUE:
                if not attached:
                    i += 1
                break
    return Invocation("", [], "interpreter", argv[1:])


class Launch(Struct):
    """How to start ``argv``: ``kind`` plus what that kind needs.

    ``path`` is the console script or script file; ``module`` / ``code`` for ``-m`` / ``-c``;
    ``argv`` is what ``sys.argv`` will be for an in-process kind, or the exec argv.
    """

    kind: str  # one of KINDS
    argv: tuple[str, ...]
    path: str | None
    module: str | None
    code: str | None
    reason: str

    FROZEN = True
    FIELDS = (("kind", "exec"), ("argv", ()), ("path", None), ("module", None), ("code", None),
              ("reason", ""))

    @property
    def in_process(self) -> bool:
        return self.kind != "exec"


def _venv_or_install_prefix(python: str) -> str:
    """The prefix a Python executable runs in: its venv if it has one, else its install."""
    bindir = os.path.dirname(os.path.abspath(python))
    candidate = os.path.dirname(bindir)
    if os.path.isfile(os.path.join(candidate, "pyvenv.cfg")):
        return os.path.realpath(candidate)
    return os.path.realpath(os.path.dirname(os.path.dirname(os.path.realpath(python))))


def is_this_interpreter(python: str) -> bool:
    """True when ``python`` is the binary running us, in the same venv (same packages)."""
    try:
        same_binary = os.path.samefile(os.path.realpath(python), os.path.realpath(sys.executable))
    except OSError:
        return False
    return same_binary and _venv_or_install_prefix(python) == os.path.realpath(sys.prefix)


def read_shebang(path: str) -> list[str] | None:
    """The words of ``path``'s ``#!`` line (``["/usr/bin/env", "python3"]``), or None for a
    file without one or that cannot be read. Never blocks: opened ``O_NONBLOCK`` and read
    only when it is a regular file (a FIFO on PATH would otherwise hang us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 512)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    return head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()


def _shebang_python(path: str) -> str | None:
    """The interpreter in a ``#!/abs/python`` first line, or None (binaries, sh wrappers)."""
    parts = read_shebang(path)
    if not parts or len(parts) != 1:  # "/usr/bin/env python3", options: not exact, exec it
        return None
    return parts[0] if is_python_name(os.path.basename(parts[0])) else None


def _which(name: str) -> str | None:
    if os.sep in name:
        return name if os.path.isfile(name) else None
    # shutil.which without importing shutil (hot path): first executable file on PATH.
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or os.curdir, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def classify(argv: list[str]) -> Launch:
    """Decide how to launch ``argv``: whatever it cannot run in-process exactly (not found,
    another interpreter, interpreter options, a binary) becomes ``exec``. Raises
    ``ValueError`` only for an empty ``argv`` (callers check for a command first)."""
    if not argv:
        raise ValueError("no command given")
    exe = _which(argv[0])
    if exe is None:
        return Launch("exec", tuple(argv), reason=f"{argv[0]!r} not found on PATH")
    if is_python_name(os.path.basename(exe)):
        if not is_this_interpreter(exe):
            return Launch("exec", tuple(argv), reason="another Python interpreter")
        return _classify_python_args(argv)
    interp = _shebang_python(exe)
    if interp is not None and is_this_interpreter(interp):
        # As the kernel runs a shebang script: argv[0] is the path it was found at.
        return Launch("console_script", (exe, *argv[1:]), path=exe)
    return Launch("exec", tuple(argv), reason="not a Python entry point of this interpreter")


def _classify_python_args(argv: list[str]) -> Launch:
    if len(argv) < 2:
        return Launch("exec", tuple(argv), reason="interactive interpreter")
    inv = parse_invocation(argv)
    if inv.options or inv.via in ("stdin", "interpreter"):
        first = inv.options[0] if inv.options else argv[1]
        return Launch("exec", tuple(argv), reason=f"interpreter option {first!r}")
    if inv.via == "module":
        return Launch("module", (inv.name, *inv.args), module=inv.name)
    if inv.via == "code":
        return Launch("code", ("-c", *inv.args), code=inv.code)
    path = inv.path or ""
    if os.path.isdir(path):  # a folder or zip with __main__.py: rare, let Python do it
        return Launch("exec", tuple(argv), reason="directory as script")
    return Launch("script", (path, *inv.args), path=path)


def _fresh_main() -> dict:
    """A new ``__main__`` module, as the interpreter makes for a script."""
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    return main.__dict__


# Signals a terminal or a supervisor sends: deferred across headstart's own forks at entry.
_DEFERRED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def fork_deferring_signals() -> tuple[int, object]:
    """``os.fork()`` with the signals above held until it is done; ``(pid, mask before)``.

    ``os.fork`` runs the parent's at-fork hooks (``logging`` has one) and drops what they
    raise ("Exception ignored in ..."), so a Ctrl-C landing there would be lost and the
    target would go on starting; held, it is delivered when the fork is over, where the
    target's own code sees it. The parent's mask is restored here; the child inherits the
    held one and restores the returned mask when it wants them again.
    """
    import signal

    held = [getattr(signal, name) for name in _DEFERRED]
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return pid, before


def sys_path0(launch: Launch) -> str:
    """What ``sys.path[0]`` is for the target, as the interpreter would set it."""
    if launch.kind == "module":
        return os.getcwd()
    if launch.kind == "code":
        return ""
    return os.path.dirname(os.path.realpath(launch.path or ""))


def run_in_process(launch: Launch) -> None:
    """Run the target here. Returns when it returns; its exceptions propagate unchanged."""
    sys.argv[:] = list(launch.argv)
    if launch.kind == "module":
        from headstart import _cpython

        sys.path[0:1] = [sys_path0(launch)]
        sys.argv[0] = "-m"  # runpy replaces it with the module's file, as `python -m` does
        # what `python -m` itself calls: code runs in __main__'s dict.
        _fresh_main()
        _cpython.run_module_as_main(launch.module)  # type: ignore[arg-type]
        return
    if launch.kind == "code":
        sys.path[0:1] = [sys_path0(launch)]
        globs = _fresh_main()
        exec(compile(launch.code or "", "<string>", "exec", dont_inherit=True), globs)
        return
    # console script or script file: python puts the script's folder first on sys.path.
    path = launch.path or ""
    sys.path[0:1] = [sys_path0(launch)]
    with open(path, "rb") as fh:
        source = fh.read()
    globs = _fresh_main()
    globs.update(__file__=os.path.abspath(path), __cached__=None, __package__=None, __spec__=None,
                 __loader__=None)
    exec(compile(source, path, "exec", dont_inherit=True), globs)


def exec_target(argv: list[str] | tuple[str, ...]) -> None:
    """Replace this process with ``argv``. Raises FileNotFoundError/PermissionError as exec."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], list(argv))
