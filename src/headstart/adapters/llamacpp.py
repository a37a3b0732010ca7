"""llama.cpp: ``llama-server -m FILE.gguf`` or ``llama-server -hf USER/REPO[:QUANT]``.

Source: llama.cpp ``tools/server/README.md`` (``-m, --model FNAME`` [env LLAMA_ARG_MODEL],
``-hf, -hfr, --hf-repo <user>/<model>[:quant]`` [env LLAMA_ARG_HF_REPO], ``-hff, --hf-file``
[env LLAMA_ARG_HF_FILE], ``-mu, --model-url``, ``-h, --help, --usage``, ``--version``). A
native binary: headstart execs it, and the shared page cache is what it gains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from headstart.adapters._args import Args, wants_help
from headstart.adapters.facts import TargetFacts

__all__ = ["detect_llamacpp"]

_VALUE_FLAGS = frozenset({
    "-m", "--model", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-mu", "--model-url",
    "-md", "--model-draft", "--mmproj",
})


def detect_llamacpp(name: str, args: Sequence[str], env: Mapping[str, str]) -> TargetFacts:
    """``name`` is ``llama-server`` or ``llama-cli``."""
    if wants_help(args) or "--usage" in args or "--version" in args:
        return TargetFacts(adapter="llama.cpp", notes=("help or version requested",))
    notes = [name]
    parsed = Args(args, value_flags=_VALUE_FLAGS)

    def opt(var: str, *flags: str) -> str | None:
        value = parsed.get(*flags)
        return value if value is not None else (env.get(var) or None)

    model = opt("LLAMA_ARG_MODEL", "-m", "--model")
    hub = None
    if model is None:
        repo = opt("LLAMA_ARG_HF_REPO", "-hf", "-hfr", "--hf-repo")
        if repo:
            repo, _, quant = repo.partition(":")
            model, hub = repo, "hf"
            hf_file = opt("LLAMA_ARG_HF_FILE", "-hff", "--hf-file")
            notes.append(f"Hugging Face repo; file {hf_file}" if hf_file
                         else f"Hugging Face repo; quant {quant or 'default (Q4_K_M)'}")
        elif opt("LLAMA_ARG_MODEL_URL", "-mu", "--model-url"):
            notes.append("--model-url: downloaded by llama.cpp, nothing to resolve")
    draft = parsed.get("-md", "--model-draft")
    if draft:
        notes.append(f"draft model {draft} not prefetched")
    return TargetFacts(
        adapter="llama.cpp",
        model=model,
        hub=hub,
        loads_weights=True,
        notes=tuple(notes),
    )
