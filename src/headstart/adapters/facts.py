"""TargetFacts: what an adapter reads off a target's argv and environment."""

from __future__ import annotations

from headstart._struct import Struct
from headstart.settings import HUBS

__all__ = ["HUBS", "Hub", "TargetFacts", "answer_check"]

# Plain names, not typing.Literal: `typing` costs milliseconds on the hot path.
Hub = str  # one of HUBS


class TargetFacts(Struct):
    """Facts about one target command. Pure data: no I/O happened to produce most of it.

    ``model`` / ``tokenizer`` are references as the target will resolve them (a local path or a
    hub id). ``tokenizer`` is set only when it differs from ``model``. ``hub`` names the hub a
    non-local reference resolves in (``None``: auto). ``loads_weights`` answers "does this
    process tree read the model's weights", so a help screen, a client subcommand, an API-only
    front end or ``--load-format dummy`` is ``False``. ``preload`` lists top-level modules worth
    importing in the background; none of them initialises CUDA at import.
    ``forkserver_env`` is the variable through which the target picks its worker start method
    (the plan sets it to ``forkserver`` when it prewarms one), ``forkserver_check`` names a
    function (``module:function``, no arguments) answering whether the installed target
    accepts ``forkserver`` there (True/False/None: unknown). ``log_phases`` names the server's
    startup milestones in its own log lines (``(name, regex)``, see ``watch.phases``), for
    ``headstart explain`` and ``bench``. ``zygote``: spawned children forking from a zygote
    is measured faster for this server (on by default); ``zygote_preload`` the modules its
    spawned children import beyond ``preload``; ``zygote_env`` names a function
    (``module:function``, run in the zygote before its imports) returning the variables the
    server sets before it spawns, so that the zygote imports as its children would.
    ``zygote_check`` names a function (``module:function``, no arguments) answering whether
    the installed target spawns such children at all (True/False/None: unknown); with it the
    zygote is on only on a True: a zygote that nobody asks for a child only takes a core.
    ``notes`` explain the decisions (``headstart run -v`` prints them). Whether the target runs
    in-process is not a fact: :func:`headstart.procs.launch.classify` decides it.
    """

    adapter: str
    model: str | None
    revision: str | None
    cache_dir: str | None
    hub: Hub | None
    tokenizer: str | None
    tokenizer_revision: str | None
    loads_weights: bool
    preload: tuple[str, ...]
    forkserver_env: str | None
    forkserver_check: str | None
    log_phases: tuple[tuple[str, str], ...]
    zygote: bool
    zygote_preload: tuple[str, ...]
    zygote_env: str | None
    zygote_check: str | None
    notes: tuple[str, ...]

    FROZEN = True
    FIELDS = (
        ("adapter", "generic"),
        ("model", None),
        ("revision", None),
        ("cache_dir", None),
        ("hub", None),
        ("tokenizer", None),
        ("tokenizer_revision", None),
        ("loads_weights", False),
        ("preload", ()),
        ("forkserver_env", None),
        ("forkserver_check", None),
        ("log_phases", ()),
        ("zygote", False),
        ("zygote_preload", ()),
        ("zygote_env", None),
        ("zygote_check", None),
        ("notes", ()),
    )


def answer_check(check: str | None) -> bool | None:
    """What a fact's check (``module:function``, no arguments: ``forkserver_check``,
    ``zygote_check``) answers about the installed target; None when there is none, it
    cannot be imported, fails or answers something else than a bool."""
    if not check:
        return None
    module, _, name = check.partition(":")
    try:
        from importlib import import_module

        answer = getattr(import_module(module), name)()
    except Exception as exc:
        import logging

        logging.getLogger(__name__).debug("%s failed: %r", check, exc)
        return None
    return answer if isinstance(answer, bool) else None
