"""Hugging Face transformers CLI: ``transformers serve [MODEL]``, ``transformers chat MODEL``.

Sources: transformers 5.x ``transformers/cli/serve.py`` (positional ``force_model``; GGUF
weights named ``<repo>:<file>.gguf``), ``transformers/cli/chat.py`` (``chat MODEL_ID
[BASE_URL]`` is a client of a running ``transformers serve``), docs "Serve CLI". transformers
4.x had ``transformers-cli`` with ``serve --force-model`` and ``chat --model_name_or_path``,
where chat loaded the model in-process. ``serve`` without a model loads one per request.
transformers 5.25's ``serve MODEL`` loads it in a process it spawns
(``cli/serving/model_manager.py``, ``EngineClient.start_process``) after its own imports:
the zygote forks that process warm, where :func:`spawns_model_process` finds it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["detect_transformers"]

_PRELOAD = ("torch", "transformers")
# What the model process of `transformers serve` (5.25: `EngineClient.start_process`, spawned)
# imports beyond _PRELOAD: spawn runs the console script's module as __mp_main__, and unpickles
# its target from the serving package.
_ZYGOTE_PRELOAD = ("transformers.cli.transformers", "transformers.cli.serving.model_manager")
_MODEL_MANAGER = os.path.join("transformers", "cli", "serving", "model_manager.py")
_MAX_SOURCE_BYTES = 1 << 20
_BOOL_FLAGS = frozenset({
    "--continuous-batching", "--compile", "--trust-remote-code", "--cb-use-cuda-graph",
    "--enable-cors", "--non-blocking", "--trust_remote_code", "--enable_cors",
})
# Startup milestones of `transformers serve` (transformers 5.19 prints "[transformers] Loading
# MODEL" when it loads a model given on the command line, then uvicorn's own lines; tqdm's
# "Loading weights: ..." is not a milestone), see watch.phases. A request's line: "[Request
# received]" up to 5.24; from 5.25 "Request ID: model M, ..." only at info verbosity (by
# default no line, and "listening" then runs to ready).
REQUEST_LINE = r"\[Request received\]|\] Request \S+: model "
_LOG_PHASES = (
    ("load model", r"\] Loading (?!weights)\S+"),
    ("uvicorn: server process", r"Started server process"),
    ("listening", r"Uvicorn running on"),
    ("first request", REQUEST_LINE),
)
_LEGACY_MODEL_FLAGS = ("--model-name-or-path", "--model_name_or_path")


def _facts(notes: Sequence[str], **fields: object) -> TargetFacts:
    return TargetFacts(
        adapter="transformers", hub="hf", log_phases=_LOG_PHASES,
        notes=tuple(notes), **fields,  # type: ignore[arg-type]
    )


def _split_gguf(ref: str, notes: list[str]) -> str:
    # `<repo>:<file>.gguf`: the repo's cache holds only the files that were downloaded.
    repo, sep, file = ref.rpartition(":")
    if sep and file.endswith(".gguf") and "/" in repo:
        notes.append(f"GGUF file {file} of {repo}")
        return repo
    return ref


def _serve(args: Sequence[str], what: str) -> TargetFacts:
    notes = [what]
    parsed = Args(args, bool_flags=_BOOL_FLAGS)
    model = parsed.get("--force-model", "--force_model")
    if model is None and parsed.positionals:
        model = parsed.positionals[0]
    if model is None:
        notes.append("no model: transformers serve loads models on the first request")
        return _facts(notes, preload=_PRELOAD)
    return _facts(notes, model=_split_gguf(model, notes), loads_weights=True, preload=_PRELOAD,
                  zygote=True, zygote_preload=_ZYGOTE_PRELOAD,
                  zygote_check="headstart.adapters.transformers:spawns_model_process")


def spawns_model_process(search_path: Sequence[str] | None = None) -> bool | None:
    """Whether the installed ``transformers serve`` loads its model in a spawned process
    (5.25: ``EngineClient.start_process`` uses ``multiprocessing.get_context("spawn")``;
    5.24 and before load it in the server's own process). Reads the source as text, never
    imports transformers. None when transformers is not on ``search_path`` (default
    ``sys.path``) or its file cannot be read; False for a transformers without that module.
    """
    from headstart.pagecache.pathcheck import read_small_regular_file

    for entry in sys.path if search_path is None else search_path:
        root = entry or "."  # sys.path's "" is the working directory
        if not os.path.isfile(os.path.join(root, "transformers", "__init__.py")):
            continue
        try:
            text = read_small_regular_file(os.path.join(root, _MODEL_MANAGER),
                                           _MAX_SOURCE_BYTES).decode("utf-8", "replace")
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return None
        return 'get_context("spawn")' in text and ".Process(" in text
    return None


def _chat(args: Sequence[str], legacy: bool) -> TargetFacts:
    notes = ["transformers chat"]
    parsed = Args(args, bool_flags=_BOOL_FLAGS)
    in_process_model = parsed.get(*_LEGACY_MODEL_FLAGS)
    model = in_process_model or (parsed.positionals[0] if parsed.positionals else None)
    if legacy or in_process_model:
        notes.append("transformers 4.x chat: loads the model in this process")
        return _facts(notes, model=model, loads_weights=model is not None, preload=_PRELOAD)
    notes.append("a client of a running `transformers serve`: loads no weights")
    return _facts(notes, model=model)


def detect_transformers(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """``name`` is ``transformers`` (5.x) or ``transformers-cli`` (4.x)."""
    if wants_help(args):
        return _facts(["help requested"])
    sub_at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if sub_at is None:
        return _facts(["no subcommand: transformers prints its usage"])
    sub, rest = args[sub_at], args[sub_at + 1 :]
    if sub == "serve":
        return _serve(rest, f"{name} serve")
    if sub == "chat":
        return _chat(rest, legacy=name == "transformers-cli")
    return _facts([f"{name} {sub}: loads no weights"])
