"""SGLang: ``python -m sglang.launch_server --model-path M`` and ``sglang serve --model-path M``.

Sources: SGLang docs "Server Arguments" (``--model-path``/``--model``, ``--tokenizer-path``,
``--revision``, ``--download-dir``, ``--load-format``, ``--config`` YAML with ``model-path:``),
``python/sglang/cli/main.py`` (subcommands serve, generate, render, version) and
``python/sglang/srt/server_args.py`` (``SGLANG_USE_MODELSCOPE``). The launcher switches
multiprocessing to ``spawn`` for its scheduler and detokenizer processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, read_config, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["detect_sglang"]

_PRELOAD = ("torch", "transformers")
_VALUE_FLAGS = frozenset({
    "--model-path", "--model", "--tokenizer-path", "--revision", "--download-dir",
    "--load-format", "--config",
})


# Startup milestones in SGLang's log lines (srt/model_executor/model_runner.py, http_server.py;
# from its source, not yet run here), see watch.phases.
_LOG_PHASES = (
    ("load weights", r"Load weight begin"),
    ("load weights (reported)", r"Load weight end\..*?elapsed=(?P<s>[0-9.]+) s"),
    ("KV cache", r"KV Cache is allocated|Memory pool end"),
    ("CUDA graphs", r"Capture cuda graph begin"),
    ("CUDA graphs (reported)", r"Capture cuda graph end\. Time elapsed: (?P<s>[0-9.]+) s"),
    ("HTTP server", r"Uvicorn running on|Application startup complete"),
)


def _facts(env: Mapping[str, str], notes: Sequence[str], **fields: object) -> TargetFacts:
    modelscope = env.get("SGLANG_USE_MODELSCOPE", "").strip().lower() in ("1", "true")
    return TargetFacts(
        adapter="sglang",
        hub="modelscope" if modelscope else "hf",
        log_phases=_LOG_PHASES,
        notes=tuple(notes),
        **fields,  # type: ignore[arg-type]
    )


def _server_facts(args: Sequence[str], env: Mapping[str, str], what: str) -> TargetFacts:
    notes = [what]
    parsed = Args(args, value_flags=_VALUE_FLAGS)
    config = read_config(parsed.get("--config"), notes)

    def opt(*names: str) -> str | None:
        value = parsed.get(*names)
        if value is not None:
            return value
        return next((config[n[2:]] for n in names if n[2:] in config), None)

    model = opt("--model-path", "--model")
    tokenizer = opt("--tokenizer-path")
    load_format = opt("--load-format")
    loads = True
    if model is None:
        notes.append("no --model-path: SGLang refuses to start")
        loads = False
    if load_format == "dummy":
        loads = False
        notes.append("--load-format dummy: no weight file is read")
    return _facts(
        env,
        notes,
        model=model,
        revision=opt("--revision"),
        cache_dir=opt("--download-dir"),
        tokenizer=tokenizer if tokenizer and tokenizer != model else None,
        loads_weights=loads,
        preload=_PRELOAD,
    )


def detect_sglang(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """``name`` is ``sglang`` (the CLI) or ``sglang.launch_server``."""
    if wants_help(args):
        return _facts(env, ["help requested"])
    if name != "sglang":
        return _server_facts(args, env, f"python -m {name}")
    sub_at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if sub_at is None:
        return _facts(env, ["no subcommand: SGLang prints its usage"])
    sub, rest = args[sub_at], args[sub_at + 1 :]
    if sub in ("serve", "generate"):
        return _server_facts(rest, env, f"sglang {sub}")
    return _facts(env, [f"sglang {sub}: loads no weights"])
