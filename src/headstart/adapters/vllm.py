"""vLLM: ``vllm serve MODEL``, ``python -m vllm.entrypoints.openai.api_server --model ...``.

Sources: vLLM docs "Engine Arguments" / ``vllm serve --help`` (``--model``, ``--revision``,
``--download-dir``, ``--tokenizer``, ``--tokenizer-revision``, ``--load-format``, ``--config``,
``--headless``, ``--api-server-count/-asc``, ``--data-parallel-size-local/-dpl``), docs
"Data Parallel Deployment" (``--data-parallel-size-local 0`` runs only the API server;
``--headless`` runs only engine cores, which load weights) and ``vllm/envs.py``
(``VLLM_USE_MODELSCOPE`` is true only for the text "true"; ``VLLM_WORKER_MULTIPROC_METHOD``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, read_config, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["accepts_forkserver_text", "detect_vllm", "vllm_accepts_forkserver"]

_PRELOAD = ("torch", "transformers")
# What the spawned EngineCore and its worker import before they load a model; the zygote
# imports them (a failure, e.g. a platform's worker missing, is only a module less).
_ZYGOTE_PRELOAD = ("vllm", "vllm.v1.engine.core", "vllm.v1.executor.multiproc_executor",
                   "vllm.v1.worker.cpu_worker", "vllm.v1.worker.gpu_worker")
_MP_ENV = "VLLM_WORKER_MULTIPROC_METHOD"

# Boolean switches that may stand between `serve` and the positional model. Names starting
# with --no-/--enable-/--disable- are treated as switches by the scanner already.
_BOOL_FLAGS = frozenset({
    "--headless", "--trust-remote-code", "--enforce-eager", "--skip-tokenizer-init",
    "--data-parallel-external-lb", "--data-parallel-hybrid-lb", "--async-scheduling",
    "--allow-credentials", "--return-tokens-as-token-ids", "--use-tqdm-on-load",
    "--worker-use-ray", "--ray-workers-use-nsight", "--fully-sharded-loras",
    "--kv-sharing-fast-prefill", "--calculate-kv-scales", "--scheduling-policy-priority",
})
_VALUE_FLAGS = frozenset({
    "--model", "--revision", "--download-dir", "--tokenizer", "--tokenizer-revision",
    "--load-format", "--config", "--api-server-count", "-asc", "--data-parallel-size-local",
    "-dpl", "-tp", "-pp", "-dp", "-q", "--port", "--host",
})

# Subcommands that load the model in this process tree: serve (engine cores), offline
# benchmarks and batch runs build an LLM in-process.
_LOADING_BENCH = frozenset({"latency", "throughput"})
_CLIENT_SUBCOMMANDS = frozenset({"chat", "complete"})

_API_SERVER_MODULES = frozenset({
    "vllm.entrypoints.openai.api_server",
    "vllm.entrypoints.api_server",
})

# Startup milestones in vLLM's own log lines (vLLM 0.32: entrypoints/serve/utils/api_utils.py,
# v1/engine/core.py, v1/worker/*model_runner.py, model_executor/model_loader/default_loader.py,
# entrypoints/launchers/api_server/entry.py). Marks: a phase starts at the line; a group `s`:
# the line reports its own duration. Lines of spawned processes say `pid=N`.
_LOG_PHASES = (
    ("API server up (args parsed)", r"non-default args:"),
    ("EngineCore initialising", r"Initializing a V1 LLM engine"),
    ("worker: load model", r"Starting to load model"),
    ("Loading weights", r"Loading weights took (?P<s>[0-9.]+) seconds"),
    ("Model loading", r"Model loading took .* and (?P<s>[0-9.]+) seconds"),
    ("init engine (profile, KV cache, warmup)",
     r"init engine \(profile, create kv cache, warmup model\) took (?P<s>[0-9.]+) s"),
    ("API server starting", r"Starting vLLM server on"),
)

_REMOTE_PREFIXES = ("s3://", "gs://", "az://", "http://", "https://")

_MAX_ENVS_BYTES = 16 << 20  # vllm/envs.py is ~100 KB; refuse anything that is not it


def _facts(env: Mapping[str, str], notes: Sequence[str], **fields: object) -> TargetFacts:
    return TargetFacts(
        adapter="vllm",
        hub="modelscope" if env.get("VLLM_USE_MODELSCOPE", "False").lower() == "true" else "hf",
        forkserver_env=_MP_ENV,
        forkserver_check="headstart.adapters.vllm:vllm_accepts_forkserver",
        log_phases=_LOG_PHASES,
        notes=tuple(notes),
        **fields,  # type: ignore[arg-type]
    )


def _no_weights(env: Mapping[str, str], note: str) -> TargetFacts:
    return _facts(env, [note])


def _serve_facts(args: Sequence[str], env: Mapping[str, str], *, positional: bool,
                 what: str) -> TargetFacts:
    """Facts for an engine-building command: ``serve``, the api_server module, bench, run-batch."""
    notes: list[str] = [what]
    parsed = Args(args, bool_flags=_BOOL_FLAGS, value_flags=_VALUE_FLAGS, normalize=True)

    config = read_config(parsed.get("--config"), notes)

    def opt(name: str, *aliases: str) -> str | None:
        value = parsed.get(name, *aliases)
        return value if value is not None else config.get(name[2:])

    # `vllm serve MODEL`: the positional model_tag takes precedence over --model.
    model = parsed.positionals[0] if positional and parsed.positionals else None
    model = model or opt("--model")
    if model is None:
        notes.append("no model given: vLLM falls back to its built-in default model")
    tokenizer = opt("--tokenizer")
    load_format = opt("--load-format")
    dp_local = opt("--data-parallel-size-local", "-dpl")
    headless = parsed.has("--headless") or config.get("headless", "").lower() == "true"
    api_servers = opt("--api-server-count", "-asc")

    loads = True
    if load_format == "dummy":
        loads = False
        notes.append("--load-format dummy: weights are random, no weight file is read")
    if dp_local is not None and dp_local.strip() == "0" and not headless:
        loads = False
        notes.append("--data-parallel-size-local 0: API server only, engines run elsewhere")
    if headless:
        notes.append("--headless: engine cores only (they load weights), no API server")
    if api_servers and api_servers.strip() not in ("0", "1"):
        notes.append(f"--api-server-count {api_servers}: API servers in separate processes")
    if model and model.startswith(_REMOTE_PREFIXES):
        notes.append("model is a remote URI: nothing local to prefetch")
    if env.get(_MP_ENV):
        notes.append(f"{_MP_ENV}={env[_MP_ENV]} set by the user")
    if opt("--safetensors-load-strategy") == "prefetch":
        notes.append("--safetensors-load-strategy prefetch: vLLM reads the weights into the "
                     "page cache when the worker loads them; the replay has them resident "
                     "by then, so its pass reads nothing from disk again")
    cache_dir = opt("--download-dir")
    if cache_dir and _hf_offline(env):
        # EngineArgs.__post_init__ turns a repo id into its snapshot in the default cache
        # (get_model_path) when offline, before --download-dir is ever looked at
        notes.append("HF_HUB_OFFLINE: vLLM resolves the model in the default HF cache, "
                     "not --download-dir")
        cache_dir = None

    return _facts(
        env,
        notes,
        model=model,
        revision=opt("--revision"),
        cache_dir=cache_dir,
        tokenizer=tokenizer if tokenizer and tokenizer != model else None,
        tokenizer_revision=opt("--tokenizer-revision"),
        loads_weights=loads,
        preload=_PRELOAD,
        # EngineCore is always a spawned child (its worker too, unless the user picked fork)
        zygote=True,
        zygote_preload=_ZYGOTE_PRELOAD,
        zygote_env="headstart.adapters.vllm:zygote_env",
    )


def detect_vllm(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """``name`` is ``vllm`` (the CLI, ``-m vllm.entrypoints.cli.main``) or an api_server module."""
    if wants_help(args):
        return _no_weights(env, "help requested")
    if name in _API_SERVER_MODULES:
        return _serve_facts(args, env, positional=False, what=f"python -m {name}")

    # Top-level options come before the subcommand: `vllm --version`, `vllm -v`.
    sub_at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    head = args[: sub_at if sub_at is not None else len(args)]
    if "--version" in head or "-v" in head:
        return _no_weights(env, "version requested")
    if sub_at is None:
        return _no_weights(env, "no subcommand: vLLM prints its usage")
    sub, rest = args[sub_at], args[sub_at + 1 :]

    if sub == "serve":
        return _serve_facts(rest, env, positional=True, what="vllm serve")
    if sub == "run-batch":
        return _serve_facts(rest, env, positional=False, what="vllm run-batch (offline engine)")
    if sub == "bench":
        kind = next((a for a in rest if not a.startswith("-")), "")
        if kind in _LOADING_BENCH:
            return _serve_facts(rest[rest.index(kind) + 1 :], env, positional=False,
                                what=f"vllm bench {kind} (offline engine)")
        return _no_weights(env, f"vllm bench {kind or '(none)'}: a client, loads no weights")
    if sub in _CLIENT_SUBCOMMANDS:
        return _no_weights(env, f"vllm {sub}: a client of a running server")
    return _no_weights(env, f"vllm {sub}: loads no weights")


# --- does the installed vLLM accept VLLM_WORKER_MULTIPROC_METHOD=forkserver? ---------------


def _strip_comment(line: str) -> str:
    # Good enough for envs.py: no '#' inside the string literals of this entry.
    at = line.find("#")
    return line if at < 0 else line[:at]


def _is_dict_key_line(stripped: str) -> bool:
    if stripped[:1] not in ("'", '"'):
        return False
    end = stripped.find(stripped[0], 1)
    return end > 1 and stripped[end + 1 :].lstrip().startswith(":")


def _entry_text(text: str) -> str | None:
    """The source of the ``"VLLM_WORKER_MULTIPROC_METHOD": ...`` dict entry, comments removed."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not _is_dict_key_line(stripped) or _MP_ENV not in stripped.split(":", 1)[0]:
            continue
        parts = [_strip_comment(stripped.split(":", 1)[1])]
        for following in lines[i + 1 :]:
            s = following.strip()
            if _is_dict_key_line(s) or s.startswith("}"):
                break
            parts.append(_strip_comment(s))
        return " ".join(parts)
    return None


def _names_in(entry: str) -> list[str]:
    names, word = [], []
    for ch in entry + " ":
        if ch.isalnum() or ch == "_":
            word.append(ch)
            continue
        if word and word[0].isupper():
            names.append("".join(word))
        word = []
    return names


def accepts_forkserver_text(text: str) -> bool | None:
    """Decide from the text of ``vllm/envs.py``; ``None`` when its shape is not recognised.

    Two shapes exist across releases: a plain ``lambda: os.getenv(NAME, "fork")`` (no check:
    the value reaches ``multiprocessing.get_context``, so forkserver works) and
    ``env_with_choices(NAME, "fork", ["spawn", "fork"])`` (any other value is rejected).
    """
    entry = _entry_text(text)
    if entry is None:
        return None
    if "forkserver" in entry:
        return True
    if "choices" in entry:
        # The choices may be a named constant defined elsewhere in the module.
        for name in _names_in(entry):
            if name == _MP_ENV:
                continue
            for line in text.splitlines():
                s = line.strip()
                if s.startswith(name) and s[len(name) :].lstrip()[:1] in ("=", ":"):
                    return "forkserver" in _strip_comment(s)
        return False
    if "getenv" in entry or "environ" in entry:
        return True
    return None


def _envs_file(search_path: Sequence[str] | None) -> str | None:
    import importlib.machinery
    import importlib.util

    if search_path is None:
        spec = importlib.util.find_spec("vllm")
    else:
        spec = importlib.machinery.PathFinder.find_spec("vllm", list(search_path))
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if spec.origin and spec.origin not in ("namespace", "built-in"):
        roots.insert(0, os.path.dirname(spec.origin))
    for root in roots:
        for candidate in ("envs.py", os.path.join("envs", "__init__.py")):
            path = os.path.join(root, candidate)
            if os.path.isfile(path):
                return path
    return None


def vllm_accepts_forkserver(search_path: Sequence[str] | None = None) -> bool | None:
    """Whether the installed vLLM accepts ``VLLM_WORKER_MULTIPROC_METHOD=forkserver``.

    Reads ``vllm/envs.py`` as text; never imports vLLM (seconds, and it would initialise
    plugins). ``None`` when vLLM is not installed, the file cannot be read, or its shape is
    unknown: callers must then leave the variable alone. ``search_path`` replaces ``sys.path``
    for the lookup (tests, or a target venv's site-packages).
    """
    try:
        path = _envs_file(search_path)
        if path is None:
            return None
        from headstart.pagecache.pathcheck import read_small_regular_file

        text = read_small_regular_file(path, _MAX_ENVS_BYTES).decode("utf-8", "replace")
        return accepts_forkserver_text(text)
    except (OSError, ImportError, ValueError):
        return None


def _hf_offline(env: Mapping[str, str]) -> bool:
    """huggingface_hub's HF_HUB_OFFLINE (TRANSFORMERS_OFFLINE also counts), as it reads it."""
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def zygote_env() -> dict[str, str]:
    """What vLLM's CPU platform sets in the API server before it spawns EngineCore
    (``CpuPlatform.check_and_update_config``), so that the zygote imports as EngineCore
    will; runs in the zygote. ``{}`` on other platforms. A variable guessed wrong only
    makes that child spawn for real (``headstart run -v`` names it)."""
    import os

    if not _cpu_platform():
        return {}
    env = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn",
           "NUMEXPR_MAX_THREADS": str(len(os.sched_getaffinity(0))),
           "TORCHINDUCTOR_COMPILE_THREADS": "1", "VLLM_DISABLE_SHARED_EXPERTS_STREAM": "1",
           "TORCHINDUCTOR_CPP_DYNAMIC_THREADS": "1"}
    return {k: v for k, v in env.items() if k not in os.environ}


def _cpu_platform() -> bool:
    import os

    if os.environ.get("VLLM_TARGET_DEVICE", "").lower() == "cpu":
        return True
    try:
        from importlib.metadata import version

        return "cpu" in version("vllm")
    except Exception:
        return False
