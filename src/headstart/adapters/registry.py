"""Which adapter reads a command: a table keyed by program, module or script name.

``vllm serve M``, ``/venv/bin/vllm serve M``, ``python -m vllm.entrypoints.cli.main serve M``
and ``python3.11 -u -m vllm.entrypoints.openai.api_server --model M`` all reach the vLLM
adapter. Anything not in the table gets the generic fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module

from headstart.adapters.facts import TargetFacts
from headstart.procs.launch import Invocation, parse_invocation

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
    return facts
