"""A small, forgiving argv scanner shared by the adapters.

The adapters cannot use the targets' own parsers (importing vLLM to parse its argv would cost
seconds), so this reads argv the way argparse, clap and typer mostly agree on: ``--opt value``,
``--opt=value``, short options with a separate value, the last occurrence wins, ``--`` ends
the options. Options are unknown in general, so an unknown ``--opt`` followed by a word takes
that word as its value; adapters pass the boolean flags that matter for finding positionals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

__all__ = ["HELP_FLAGS", "Args", "read_simple_yaml", "wants_help"]

HELP_FLAGS = frozenset({"-h", "--help"})

# Prefixes that, by convention in these CLIs, name boolean switches.
_BOOL_PREFIXES = ("--no-", "--enable-", "--disable-")

_MAX_CONFIG_BYTES = 1 << 20  # a serve config is a few hundred bytes; refuse anything odd


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_option(token: str) -> bool:
    return len(token) > 1 and token.startswith("-") and not _is_number(token)


def wants_help(args: Sequence[str]) -> bool:
    """``-h``, ``--help`` or vLLM's ``--help=GROUP`` anywhere before ``--``."""
    for token in args:
        if token == "--":
            return False
        if token in HELP_FLAGS or token.startswith("--help="):
            return True
    return False


class Args:
    """argv after the program (and subcommand): options and positionals.

    ``bool_flags`` never take a value; ``value_flags`` always take the next token.
    ``normalize`` maps ``--a_b`` to ``--a-b`` (vLLM's parser does the same).
    """

    __slots__ = ("options", "positionals")

    def __init__(
        self,
        args: Sequence[str],
        *,
        bool_flags: Iterable[str] = (),
        value_flags: Iterable[str] = (),
        normalize: bool = False,
    ) -> None:
        bools = frozenset(bool_flags)
        values = frozenset(value_flags)
        self.options: list[tuple[str, str | None]] = []
        self.positionals: list[str] = []
        i, n = 0, len(args)
        while i < n:
            token = args[i]
            i += 1
            if token == "--":
                self.positionals.extend(args[i:])
                break
            if not _is_option(token):
                self.positionals.append(token)
                continue
            name, value = token, None
            if token.startswith("--") and "=" in token:
                name, value = token.split("=", 1)
            if normalize and name.startswith("--"):
                name = "--" + name[2:].replace("_", "-")
            if value is None and name not in bools and i < n:
                takes_next = name in values or (
                    not name.startswith(_BOOL_PREFIXES) and not _is_option(args[i]))
                if takes_next:
                    value = args[i]
                    i += 1
            self.options.append((name, value))

    def get(self, *names: str) -> str | None:
        """The value of the last occurrence of any of ``names`` (``None`` if absent/valueless)."""
        wanted = set(names)
        for name, value in reversed(self.options):
            if name in wanted:
                return value
        return None

    def has(self, *names: str) -> bool:
        wanted = set(names)
        return any(name in wanted for name, _ in self.options)


def read_simple_yaml(path: str) -> dict[str, str]:
    """Top-level ``key: value`` lines of a small YAML file; nested blocks and lists are skipped.

    Enough for the model/revision keys of a vLLM or SGLang ``--config`` file without a YAML
    library. Keys are returned as written; quotes around values are removed. Raises
    ``OSError`` / ``ValueError`` for an unreadable or oversized file (callers note it).
    """
    if os.path.getsize(path) > _MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_CONFIG_BYTES} bytes")
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in " \t#-" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            value = value[1:end] if end > 0 else value[1:]
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
            if value.startswith("#"):
                value = ""
        if value and value not in ("|", ">", "{}", "[]", "~", "null"):
            out[key.strip()] = value
    return out
