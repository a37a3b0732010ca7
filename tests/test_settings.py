"""Environment settings read when used, with documented fallbacks."""

from __future__ import annotations

from headstart.settings import RUN_PREFETCH_DEFAULTS, run_prefetch_options


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
