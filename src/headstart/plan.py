"""StartupPlan: what ``headstart run`` will do for one command, decided before doing any of it.

Sources, strongest first: command-line options, ``HEADSTART_*`` variables
(:func:`headstart.settings.run_env_options`), what the adapter reads off the target's own argv
and environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from headstart._struct import Struct
from headstart.procs.launch import Launch, classify
from headstart.settings import run_env_options

__all__ = ["RunOptions", "StartupPlan", "build_plan"]


class RunOptions(Struct):
    """``headstart run`` options; ``None`` means "not given" (env, then the adapter, decide)."""

    model: str | None
    revision: str | None
    cache_dir: str | None
    hub: str | None
    preload: list[str] | None
    no_preload: bool | None
    no_prefetch: bool | None
    forkserver: bool | None
    trace: str | None
    verbose: int
    no_profile: bool | None
    zygote: bool | None

    FIELDS = (("model", None), ("revision", None), ("cache_dir", None), ("hub", None),
              ("preload", None), ("no_preload", None), ("no_prefetch", None),
              ("forkserver", None), ("trace", None), ("verbose", 0), ("no_profile", None),
              ("zygote", None))


class StartupPlan(Struct):
    """Everything ``headstart run`` decided for one command (a Struct, not a dataclass:
    ``dataclasses`` costs milliseconds on the hot path)."""

    argv: list[str]
    launch: Launch
    adapter: str
    model: str | None
    revision: str | None
    cache_dir: str | None
    hub: str
    extra_refs: list[tuple[str, str | None]]
    prefetch: bool
    prefetch_reason: str
    preload: tuple[str, ...]
    # the preload is the adapter's default (not asked for): skipped on a warm start
    preload_default: bool
    forkserver: bool
    forkserver_reason: str
    forkserver_env: dict[str, str]
    start_method_env: str | None
    trace: str | None
    verbose: int
    # key of the startup profile to look for (headstart.profiles); None: none is used
    profile_key: str | None
    zygote: bool
    zygote_reason: str
    zygote_preload: tuple[str, ...]
    zygote_env: str | None
    # the adapter's notes on its decisions (TargetFacts.notes), printed by `run -v`
    notes: tuple[str, ...]

    FIELDS = (
        ("argv", []), ("launch", None), ("adapter", "generic"), ("model", None),
        ("revision", None), ("cache_dir", None), ("hub", "auto"), ("extra_refs", []),
        ("prefetch", False), ("prefetch_reason", ""), ("preload", ()),
        ("preload_default", False), ("forkserver", False),
        ("forkserver_reason", ""), ("forkserver_env", {}), ("start_method_env", None),
        ("trace", None), ("verbose", 0), ("profile_key", None), ("zygote", False),
        ("zygote_reason", ""), ("zygote_preload", ()), ("zygote_env", None), ("notes", ()),
    )

    def describe(self) -> str:
        bits = [f"adapter={self.adapter}", f"launch={self.launch.kind}"]
        bits.append(f"model={self.model}" if self.model else "model=none")
        bits.append("prefetch=on" if self.prefetch else f"prefetch=off ({self.prefetch_reason})")
        bits.append(f"profile={self.profile_key or 'off'}")
        bits.append(f"preload={','.join(self.preload) or 'none'}")
        bits.append("forkserver=on" if self.forkserver else f"forkserver=off "
                    f"({self.forkserver_reason})")
        bits.append("zygote=on" if self.zygote else f"zygote=off ({self.zygote_reason})")
        return " ".join(bits)


def build_plan(opts: RunOptions, argv: list[str], env: Mapping[str, str] | None = None
               ) -> StartupPlan:
    """Decide everything; touches no file but the target's launcher (shebang read)."""
    from headstart.adapters import detect

    env = os.environ if env is None else env
    facts = detect(list(argv), env)
    from_env = run_env_options(env)
    plan = StartupPlan(argv=list(argv), launch=classify(list(argv)), adapter=facts.adapter,
                       notes=tuple(facts.notes))
    plan.verbose = opts.verbose or (1 if from_env["verbose"] else 0)
    plan.trace = opts.trace or from_env["trace"]

    explicit_model = opts.model or from_env["model"]
    plan.model = explicit_model or facts.model
    plan.revision = opts.revision or from_env["revision"] or (
        None if explicit_model else facts.revision)
    plan.cache_dir = opts.cache_dir or from_env["cache_dir"] or facts.cache_dir
    plan.hub = opts.hub or from_env["hub"] or facts.hub or "auto"
    if facts.tokenizer and facts.tokenizer != plan.model:
        plan.extra_refs.append((facts.tokenizer, facts.tokenizer_revision))

    no_prefetch = opts.no_prefetch or from_env["no_prefetch"]
    if no_prefetch:
        plan.prefetch_reason = "disabled"
    elif not plan.model:
        plan.prefetch_reason = "no model in the command (use --model)"
    elif not facts.loads_weights and not explicit_model:
        plan.prefetch_reason = "this command loads no weights"
    else:
        plan.prefetch = True
    # A profile is keyed by the model, and one recorded by a full start holds its weights:
    # a command that names the model but loads none of it (an API-only front end, a help
    # screen) uses none.
    loads_none = bool(plan.model) and not plan.prefetch
    if not no_prefetch and not loads_none and not (opts.no_profile or from_env["no_profile"]):
        # Only the key here (no I/O): the background thread looks the profile up.
        from headstart.profiles.key import profile_key

        plan.profile_key = profile_key(plan)[0]

    if opts.no_preload or from_env["no_preload"]:
        plan.preload = ()
    elif opts.preload is not None:
        plan.preload = tuple(opts.preload)
    elif from_env["preload"] is not None:
        plan.preload = tuple(from_env["preload"])
    elif plan.launch.in_process and facts.loads_weights:
        plan.preload = tuple(facts.preload)
        plan.preload_default = True
    if not plan.launch.in_process:
        plan.preload = ()  # an exec'd process cannot use our imports

    requested = opts.forkserver
    if requested is None:
        requested = from_env["forkserver"]
    if not plan.launch.in_process:
        plan.forkserver_reason = "target is exec'd"
    elif not facts.loads_weights and not requested:
        plan.forkserver_reason = "this command starts no workers"
    else:
        from headstart.procs.forkserver import forkserver_environ, should_prewarm

        plan.forkserver, plan.forkserver_reason = should_prewarm(facts, env, requested)
        if plan.forkserver:
            plan.forkserver_env = dict(forkserver_environ(facts, env))
            plan.start_method_env = facts.forkserver_env
    _decide_zygote(plan, facts, opts.zygote if opts.zygote is not None
                   else from_env["zygote"])
    return plan


def _decide_zygote(plan: StartupPlan, facts, requested: bool | None) -> None:
    """Spawned children fork from a zygote: on where the adapter measured it faster, or when
    asked; never for an exec'd target, nor one that starts no spawn children."""
    from headstart.adapters.facts import answer_check  # imported already: it made ``facts``

    if not plan.launch.in_process:
        plan.zygote_reason = "target is exec'd"
    elif requested is False:
        plan.zygote_reason = "disabled (--no-zygote)"
    elif requested:
        plan.zygote = True
    elif not facts.zygote:
        plan.zygote_reason = "opt-in (--zygote) for this target: not measured"
    elif not facts.loads_weights:
        plan.zygote_reason = "this command starts no spawned workers"
    elif facts.zygote_check and (spawns := answer_check(facts.zygote_check)) is not True:
        plan.zygote_reason = (f"the installed {facts.adapter} starts no spawned workers"
                              if spawns is False else
                              f"cannot tell whether the installed {facts.adapter} spawns workers")
    else:
        plan.zygote = True
    if plan.zygote:
        base = plan.preload or tuple(facts.preload)
        plan.zygote_preload = tuple(dict.fromkeys((*base, *facts.zygote_preload)))
        plan.zygote_env = facts.zygote_env
