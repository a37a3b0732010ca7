"""TargetFacts: what an adapter reads off a target's argv and environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Hub", "TargetFacts", "Workers"]

Hub = Literal["hf", "modelscope"]
Workers = Literal["none", "spawn", "fork", "forkserver", "exec"]


@dataclass(frozen=True)
class TargetFacts:
    """Facts about one target command. Pure data: no I/O happened to produce most of it.

    ``model`` / ``tokenizer`` are references as the target will resolve them (a local path or a
    hub id). ``tokenizer`` is set only when it differs from ``model``. ``hub`` names the hub a
    non-local reference resolves in (``None``: auto). ``loads_weights`` answers "does this
    process tree read the model's weights", so a help screen, a client subcommand, an API-only
    front end or ``--load-format dummy`` is ``False``. ``preload`` lists top-level modules worth
    importing in the background; none of them initialises CUDA at import. ``workers`` is how
    the target starts worker processes, and ``forkserver_env`` the variable that selects it.
    ``python_entry`` is ``True`` when the target is Python code (console script, ``-m``,
    script) that ``headstart run`` can start in-process. ``notes`` explain the decisions.
    """

    adapter: str = "generic"
    model: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    hub: Hub | None = None
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    load_format: str | None = None
    loads_weights: bool = False
    preload: tuple[str, ...] = ()
    workers: Workers = "none"
    forkserver_env: str | None = None
    python_entry: bool = False
    notes: tuple[str, ...] = ()
