"""Which adapter reads a command: a table keyed by program, module or script name.

``vllm serve M``, ``/venv/bin/vllm serve M``, ``python -m vllm.entrypoints.cli.main serve M``
and ``python3.11 -u -m vllm.entrypoints.openai.api_server --model M`` all reach the vLLM
adapter. Anything not in the table gets the generic fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module

from headstart.adapters.facts import TargetFacts

__all__ = ["ADAPTERS", "Invocation", "adapter_for", "detect", "parse_invocation"]

Adapter = Callable[[str, Sequence[str], Mapping[str, str]], TargetFacts]

# name (console script, `-m` module, or script stem) -> (adapter module, the name it is told).
# Modules are imported on first use: a command needs one adapter, not all of them.
ADAPTERS: dict[str, tuple[str, str]] = {
    "vllm": ("vllm", "vllm"),
    "vllm.entrypoints.cli.main": ("vllm", "vllm"),
    "vllm.entrypoints.openai.api_server": ("vllm", "vllm.entrypoints.openai.api_server"),
    "vllm.entrypoints.api_server": ("vllm", "vllm.entrypoints.api_server"),
    "sglang": ("sglang", "sglang"),
    "sglang.cli.main": ("sglang", "sglang"),
    "sglang.launch_server": ("sglang", "sglang.launch_server"),
    "transformers": ("transformers", "transformers"),
    "transformers.cli.transformers": ("transformers", "transformers"),
    "transformers-cli": ("transformers", "transformers-cli"),
    "transformers.commands.transformers_cli": ("transformers", "transformers-cli"),
    "text-generation-launcher": ("tgi", "text-generation-launcher"),
    "text-generation-server": ("tgi", "text-generation-server"),
    "text_generation_server.cli": ("tgi", "text-generation-server"),
    "llama-server": ("llamacpp", "llama-server"),
    "llama-cli": ("llamacpp", "llama-cli"),
}


def adapter_for(module: str) -> Adapter:
    """``detect_<module>`` from ``headstart.adapters.<module>`` (``generic`` for the fallback)."""
    mod = import_module(f"headstart.adapters.{module}")
    return getattr(mod, f"detect_{module}")  # type: ignore[no-any-return]


# Interpreter options that take a separate argument (python -W ignore, -X importtime).
_PY_OPTS_WITH_VALUE = frozenset("WX")
_PY_LONG_OPTS_WITH_VALUE = frozenset({"--check-hash-based-pycs"})


class Invocation:
    """What ``argv`` runs: ``via`` is program, module, script, code, stdin or interpreter."""

    __slots__ = ("args", "name", "via")

    def __init__(self, name: str, args: Sequence[str], via: str) -> None:
        self.name = name
        self.args = list(args)
        self.via = via

    def __repr__(self) -> str:
        return f"Invocation({self.name!r}, {self.args!r}, via={self.via!r})"


def _is_interpreter(base: str) -> bool:
    for prefix in ("python", "pypy"):
        if base.startswith(prefix):
            rest = base[len(prefix) :].rstrip("tdm")  # abiflags: python3.13t
            return all(c.isdigit() or c == "." for c in rest)
    return False


def parse_invocation(argv: Sequence[str]) -> Invocation:
    """Name the program ``argv`` runs, seeing through a Python interpreter and its options."""
    if not argv:
        return Invocation("", [], "none")
    base = os.path.basename(argv[0])
    if not _is_interpreter(base):
        return Invocation(base, argv[1:], "program")
    i, n = 1, len(argv)
    while i < n:
        token = argv[i]
        if token == "-":
            return Invocation("-", argv[i + 1 :], "stdin")
        if token == "--" or not token.startswith("-"):
            script = argv[i + 1] if token == "--" and i + 1 < n else token
            if token == "--" and i + 1 >= n:
                break
            stem = os.path.basename(script)
            stem = stem[:-3] if stem.endswith(".py") else stem
            return Invocation(stem, argv[i + (2 if token == "--" else 1) :], "script")
        if token.startswith("--"):
            i += 2 if token in _PY_LONG_OPTS_WITH_VALUE else 1
            continue
        # Short options may be combined: -um MODULE, -Wignore, -OO.
        letters = token[1:]
        i += 1
        for j, ch in enumerate(letters):
            attached = letters[j + 1 :]
            if ch in "mc":
                if attached:
                    value, rest_at = attached, i
                elif i < n:
                    value, rest_at = argv[i], i + 1
                else:
                    return Invocation("", [], "interpreter")
                if ch == "m":
                    return Invocation(value, argv[rest_at:], "module")
                return Invocation("-c", argv[rest_at:], "code")
            if ch in _PY_OPTS_WITH_VALUE:
                if not attached:
                    i += 1
                break
    return Invocation("", [], "interpreter")


def detect(argv: list[str], env: Mapping[str, str]) -> TargetFacts:
    """Facts about the command ``argv`` run with environment ``env``.

    Pure: reads no file except a ``--config`` YAML the command names. Never raises: an adapter
    failure gives the generic "nothing known" facts with a note (and a debug log).
    """
    inv = parse_invocation(argv)
    module, name = ADAPTERS.get(inv.name, ("generic", inv.name))
    try:
        facts = adapter_for(module)(name, inv.args, env)
    except Exception as exc:  # an adapter bug must not stop the target from starting
        import logging  # only on this path: `headstart run` need not pay for logging

        logging.getLogger(__name__).debug("adapter for %r failed", inv.name, exc_info=True)
        facts = TargetFacts(notes=(f"adapter for {inv.name!r} failed: {exc!r}",))
    if inv.via != "program" and not facts.python_entry:
        facts = facts.replace(python_entry=True)
    return facts
