"""The fallback for any other command: the usual model options, nothing else assumed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["MODEL_FLAGS", "detect_generic"]

MODEL_FLAGS = (
    "--model", "--model-path", "--model-id", "--model-name-or-path",
    "--model_path", "--model_id", "--model_name_or_path",  # HF example scripts spell these
)
_VALUE_FLAGS = frozenset({*MODEL_FLAGS, "--revision", "--cache-dir", "--cache_dir"})


def detect_generic(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """A model option makes the command one that loads weights; help/version never do."""
    if wants_help(args) or "--version" in args:
        return TargetFacts(notes=(f"{name or 'command'}: help or version requested",))
    parsed = Args(args, value_flags=_VALUE_FLAGS)
    model = parsed.get(*MODEL_FLAGS)
    if model is None:
        return TargetFacts(notes=(f"{name or 'command'}: no model option recognised",))
    return TargetFacts(
        model=model,
        revision=parsed.get("--revision"),
        cache_dir=parsed.get("--cache-dir", "--cache_dir"),
        loads_weights=True,
        notes=(f"{name or 'command'}: model from a generic option",),
    )
