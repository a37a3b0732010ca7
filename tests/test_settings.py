"""Environment settings read when used, with documented fallbacks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from headstart.plan import RunOptions, build_plan
from headstart.settings import (
    RUN_OPTION_ENV,
    RUN_PREFETCH_DEFAULTS,
    run_env_options,
    run_prefetch_options,
)


def test_run_prefetch_defaults_are_a_shallow_queue(monkeypatch):
    for name in ("WORKERS", "BLOCK", "METHOD"):
        monkeypatch.delenv(f"HEADSTART_PREFETCH_{name}", raising=False)
    assert run_prefetch_options() == RUN_PREFETCH_DEFAULTS
    assert RUN_PREFETCH_DEFAULTS["workers"] * RUN_PREFETCH_DEFAULTS["block_size"] <= 8 * 2**20


def test_run_prefetch_env_overrides_and_bad_values(monkeypatch):
    monkeypatch.setenv("HEADSTART_PREFETCH_WORKERS", "8")
    monkeypatch.setenv("HEADSTART_PREFETCH_BLOCK", "16MiB")
    monkeypatch.setenv("HEADSTART_PREFETCH_METHOD", "populate")
    assert run_prefetch_options() == {"workers": 8, "block_size": 16 * 2**20,
                                      "method": "populate"}
    monkeypatch.setenv("HEADSTART_PREFETCH_WORKERS", "zero")
    monkeypatch.setenv("HEADSTART_PREFETCH_BLOCK", "huge")
    monkeypatch.setenv("HEADSTART_PREFETCH_METHOD", "telepathy")
    assert run_prefetch_options() == RUN_PREFETCH_DEFAULTS


# Every HEADSTART_* variable is read through headstart.settings: no other module of src/
# spells one as a string literal (docstrings and help texts may name them).
_SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"
_LITERAL = re.compile(r"""[rRbBuUfF]{0,2}("|')HEADSTART_""")


def test_no_headstart_variable_literal_outside_settings():
    found = []
    for path in sorted(_SRC.rglob("*.py")):
        if path == _SRC / "settings.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _LITERAL.search(line):
                found.append(f"{path.relative_to(_SRC)}:{n}: {line.strip()}")
    assert found == []


def test_run_env_options_names_every_run_option():
    assert sorted(RUN_OPTION_ENV) == sorted(name for name, _ in RunOptions.FIELDS)
    assert run_env_options({}) == dict.fromkeys(RUN_OPTION_ENV)


# A vLLM command line: the adapter reads model, revision, download dir and hub off it.
_VLLM = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "adapter/m",
         "--revision", "r-adapter", "--download-dir", "/adapter"]
_ENV = {"HEADSTART_MODEL": "env/m", "HEADSTART_REVISION": "r-env",
        "HEADSTART_CACHE_DIR": "/env", "HEADSTART_HUB": "modelscope",
        "HEADSTART_PRELOAD": "json, csv", "HEADSTART_TRACE": "env.json",
        "HEADSTART_VERBOSE": "1"}


def _picked(plan) -> tuple:
    return (plan.model, plan.revision, plan.cache_dir, plan.hub, plan.preload, plan.trace,
            plan.verbose)


def test_build_plan_precedence_command_line_then_environment_then_adapter():
    assert _picked(build_plan(RunOptions(), _VLLM, env={})) == (
        "adapter/m", "r-adapter", "/adapter", "hf", ("torch", "transformers"), None, 0)
    assert _picked(build_plan(RunOptions(), _VLLM, env=_ENV)) == (
        "env/m", "r-env", "/env", "modelscope", ("json", "csv"), "env.json", 1)
    cli = RunOptions(model="cli/m", revision="r-cli", cache_dir="/cli", hub="hf",
                     preload=["math"], trace="cli.json", verbose=2)
    assert _picked(build_plan(cli, _VLLM, env=_ENV)) == (
        "cli/m", "r-cli", "/cli", "hf", ("math",), "cli.json", 2)
    # a model named by the environment does not take the adapter's revision with it
    assert build_plan(RunOptions(), _VLLM, env={"HEADSTART_MODEL": "env/m"}).revision is None


def test_build_plan_flags_from_environment_and_command_line():
    argv = [sys.executable, "-m", "my_server", "--model", "adapter/m"]
    assert build_plan(RunOptions(), argv, env={}).forkserver is False  # opt-in here
    assert build_plan(RunOptions(), argv, env={"HEADSTART_FORKSERVER": "1"}).forkserver
    off = build_plan(RunOptions(forkserver=False), argv, env={"HEADSTART_FORKSERVER": "1"})
    assert (off.forkserver, off.forkserver_reason) == (False, "disabled (--no-forkserver)")
    assert build_plan(RunOptions(forkserver=True), argv,
                      env={"HEADSTART_FORKSERVER": "0"}).forkserver
    plan = build_plan(RunOptions(), _VLLM, env={"HEADSTART_NO_PREFETCH": "yes",
                                                "HEADSTART_NO_PRELOAD": "1"})
    assert (plan.prefetch, plan.prefetch_reason, plan.preload) == (False, "disabled", ())
    assert plan.profile_key is None
    plan = build_plan(RunOptions(no_prefetch=True, no_preload=True), _VLLM, env={})
    assert (plan.prefetch, plan.preload) == (False, ())


def test_debug_only_for_a_true_value(monkeypatch):
    from headstart.settings import debug

    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)
    assert debug() is False
    for value, shown in (("1", True), ("true", True), ("yes", True), ("0", False),
                         ("false", False), ("", False), ("maybe", False)):
        monkeypatch.setenv("HEADSTART_DEBUG", value)
        assert debug() is shown, value


def test_prefetch_command_takes_the_engines_defaults():
    """``headstart prefetch`` with no option reads as ``headstart.prefetch()`` does."""
    import argparse
    import inspect

    from headstart.commands import prefetch as command
    from headstart.pagecache.engine import prefetch
    from headstart.settings import PREFETCH_DEFAULTS
    from headstart.sizes import parse_size

    sub = argparse.ArgumentParser().add_subparsers()
    args = command.add_parser(sub, "prefetch", "").parse_args(["x"])
    given = {"workers": args.workers, "block_size": parse_size(args.block_size),
             "budget": args.budget, "method": args.method}
    engine = {name: p.default for name, p in inspect.signature(prefetch).parameters.items()
              if name in given}
    assert given == engine == PREFETCH_DEFAULTS


def test_replay_yield_modes_and_when_each_stands_back(monkeypatch):
    from headstart.profiles.replay import yield_policy
    from headstart.settings import replay_options

    class Reads:  # the target's tree, reading from the disk right now
        def busy(self) -> bool:
            return True

    done = {"fired": False}

    def imports_done(timeout: float) -> bool:
        return done["fired"]

    for value, want in (("imports", "imports"), ("NEVER", "never"), ("0", "never"),
                        ("true", "always"), ("always", "always"), ("bogus", "always")):
        monkeypatch.setenv("HEADSTART_REPLAY_YIELD", value)
        assert replay_options()["yield"] == want, value
    monkeypatch.delenv("HEADSTART_REPLAY_YIELD")
    assert replay_options()["yield"] == "always"
    reads = Reads()
    assert yield_policy({"yield": "never"}, reads, imports_done) is None
    assert yield_policy({"yield": "always"}, None, imports_done) is None
    always = yield_policy({"yield": "always"}, reads, imports_done)
    imports = yield_policy({"yield": "imports"}, reads, imports_done)
    assert always() and imports()
    done["fired"] = True  # the target's imports are done: only "always" still stands back
    assert always() and not imports()
    # no imports signal: "imports" cannot tell, so it stands back throughout like "always"
    assert yield_policy({"yield": "imports"}, reads, None)()


def test_replays_are_uncapped_unless_asked(monkeypatch):
    from headstart.settings import (
        REPLAY_DEFAULTS,
        WHOLE_FILE_EARLY_RATE,
        WHOLE_FILE_EARLY_WINDOW,
        replay_options,
    )

    monkeypatch.delenv("HEADSTART_REPLAY_EARLY_RATE", raising=False)
    monkeypatch.delenv("HEADSTART_REPLAY_EARLY_WINDOW", raising=False)
    # neither pass caps the weights by default; they differ in what they keep in flight
    assert replay_options()["early_rate"] == REPLAY_DEFAULTS["early_rate"] == 0
    whole = replay_options(whole_files=True)
    assert whole["early_rate"] == WHOLE_FILE_EARLY_RATE == 0
    assert whole["early_window"] == WHOLE_FILE_EARLY_WINDOW < REPLAY_DEFAULTS["early_window"]
    monkeypatch.setenv("HEADSTART_REPLAY_EARLY_RATE", "50MB")
    monkeypatch.setenv("HEADSTART_REPLAY_EARLY_WINDOW", "2MiB")
    for opts in (replay_options(), replay_options(whole_files=True)):
        assert (opts["early_rate"], opts["early_window"]) == (50 * 10**6, 2 * 2**20)


def test_replay_lead_cpu_and_touch(monkeypatch):
    from headstart.settings import replay_options

    monkeypatch.delenv("HEADSTART_REPLAY_LEAD_CPU", raising=False)
    monkeypatch.delenv("HEADSTART_REPLAY_TOUCH", raising=False)
    opts = replay_options()
    assert opts["lead_cpu"] == "target" and opts["touch"] is False
    monkeypatch.setenv("HEADSTART_REPLAY_LEAD_CPU", "low")
    monkeypatch.setenv("HEADSTART_REPLAY_TOUCH", "1")
    opts = replay_options()
    assert opts["lead_cpu"] == "low" and opts["touch"] is True
    monkeypatch.setenv("HEADSTART_REPLAY_LEAD_CPU", "highest")  # unknown: the default
    monkeypatch.setenv("HEADSTART_REPLAY_TOUCH", "maybe")
    opts = replay_options()
    assert opts["lead_cpu"] == "target" and opts["touch"] is False
