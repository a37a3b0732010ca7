"""Text Generation Inference: ``text-generation-launcher --model-id ... --revision ...``.

Source: TGI docs "Text-generation-launcher arguments" (``--model-id`` [env MODEL_ID, default
bigscience/bloom-560m], ``--revision`` [env REVISION], ``--huggingface-hub-cache`` [env
HUGGINGFACE_HUB_CACHE], ``--weights-cache-override`` [env WEIGHTS_CACHE_OVERRIDE], ``-h``,
``-V/--version``). The launcher is a Rust binary that starts Python shard processes
(``text-generation-server serve MODEL_ID``), so headstart execs it and prefetches from outside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["detect_tgi"]

_DEFAULT_MODEL = "bigscience/bloom-560m"
_SERVER_BOOL_FLAGS = frozenset({"--sharded", "--trust-remote-code", "--no-sharded"})


def _launcher(args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    notes = ["text-generation-launcher"]
    parsed = Args(args)
    if "-V" in args or parsed.has("--version"):
        return TargetFacts(adapter="tgi", hub="hf", notes=("version requested",))

    def opt(flag: str, var: str) -> str | None:
        value = parsed.get(flag)
        return value if value is not None else (env.get(var) or None)

    model = opt("--model-id", "MODEL_ID")
    if model is None:
        model = _DEFAULT_MODEL
        notes.append(f"no --model-id or MODEL_ID: TGI serves its default {model}")
    override = opt("--weights-cache-override", "WEIGHTS_CACHE_OVERRIDE")
    if override:
        notes.append(f"weights cache override {override}")
    return TargetFacts(
        adapter="tgi",
        model=model,
        revision=opt("--revision", "REVISION"),
        cache_dir=opt("--huggingface-hub-cache", "HUGGINGFACE_HUB_CACHE"),
        hub="hf",
        loads_weights=True,
        notes=tuple(notes),
    )


def _server(args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    # `text-generation-server serve MODEL_ID [--revision R]` (typer), started by the launcher.
    sub_at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    sub = args[sub_at] if sub_at is not None else ""
    parsed = Args(args[sub_at + 1 :] if sub_at is not None else (),
                  bool_flags=_SERVER_BOOL_FLAGS)
    model = parsed.positionals[0] if parsed.positionals else None
    loads = sub == "serve" and model is not None
    return TargetFacts(
        adapter="tgi",
        model=model,
        revision=parsed.get("--revision"),
        hub="hf",
        loads_weights=loads,
        preload=("torch", "transformers") if loads else (),
        notes=(f"text-generation-server {sub or '(no subcommand)'}",),
    )


def detect_tgi(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """``name`` is ``text-generation-launcher`` or ``text-generation-server``."""
    if wants_help(args):
        return TargetFacts(adapter="tgi", hub="hf", notes=("help requested",))
    if name == "text-generation-server":
        return _server(args, env)
    return _launcher(args, env)
