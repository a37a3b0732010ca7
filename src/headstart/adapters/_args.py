"""A small, forgiving argv scanner shared by the adapters.

The adapters cannot use the targets' own parsers (importing vLLM to parse its argv would cost
seconds), so this reads argv the way argparse, clap and typer mostly agree on: ``--opt value``,
``--opt=value``, short options with a separate value, the last occurrence wins, ``--`` ends
the options. Options are unknown in general, so an unknown ``--opt`` followed by a word takes
that word as its value; adapters pass the boolean flags that matter for finding positionals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["HELP_FLAGS", "Args", "read_config", "read_simple_yaml", "wants_help"]

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
    ``OSError`` for a missing, unreadable, oversized or non-regular file (callers note it).
    """
    from headstart.pagecache.pathcheck import read_small_regular_file

    # O_NONBLOCK + fstat: a --config naming a FIFO must not hang `headstart run`.
    text = read_small_regular_file(path, _MAX_CONFIG_BYTES).decode("utf-8", "replace")
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


def read_config(path: str | None, notes: list[str]) -> dict[str, str]:
    """A server's ``--config`` YAML file as flag names without dashes (``model_path`` and
    ``model-path`` both become ``model-path``), noting in ``notes`` whether it was read.
    ``{}`` when there is no such file or it cannot be read: never raises."""
    if not path:
        return {}
    try:
        raw = read_simple_yaml(path)
    except (OSError, ValueError) as exc:
        notes.append(f"--config {path} unreadable: {exc}")
        return {}
    notes.append(f"read --config {path}")
    return {k.replace("_", "-"): v for k, v in raw.items()}
