"""Adapters: pure functions from a target's argv and environment to :class:`TargetFacts`.

One module per server family (vLLM, SGLang, transformers, TGI, llama.cpp) and a generic
fallback; :func:`detect` dispatches on the program, ``-m`` module or script name. Adapters read
the *target's* variables from the ``env`` they are given (``VLLM_USE_MODELSCOPE``, TGI's
``MODEL_ID``...), never ``os.environ``; headstart's own variables live in
:mod:`headstart.settings`. Stdlib only and cheap to import: this runs before every target.
"""

from __future__ import annotations

from headstart.adapters.facts import TargetFacts
from headstart.adapters.registry import detect, parse_invocation

__all__ = ["TargetFacts", "detect", "parse_invocation", "vllm_accepts_forkserver"]


def vllm_accepts_forkserver(search_path: list[str] | None = None) -> bool | None:
    """See :func:`headstart.adapters.vllm.vllm_accepts_forkserver` (imported on first use)."""
    from headstart.adapters.vllm import vllm_accepts_forkserver as check

    return check(search_path)
