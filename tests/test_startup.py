"""`headstart run` really prefetches the target's model: in-process targets from a daemon
thread, exec'd targets from a detached helper. Checked on the real page cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from _pagecache_util import MiB, damon_paged_out, drop, make_file, model_folder, resident

PY = sys.executable


@pytest.fixture
def model(tmp_path):
    _, shards = model_folder(tmp_path, "qwen2", [8 * MiB, 8 * MiB])
    d = tmp_path / "model"
    decoy = make_file(d / "decoy.bin", 4 * MiB)  # not read: safetensors win
    return d, shards, decoy


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, XDG_RUNTIME_DIR="", HEADSTART_CACHE=extra.pop("cache", ""))
    env.pop("HEADSTART_DISABLE", None)
    env.update(extra)
    return env


# The target waits until its model is resident (the prefetch takes milliseconds), then
# prints each file's resident bytes: "resident" or "cold" first.
WAIT_RESIDENT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from _pagecache_util import resident
    paths = {paths!r}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(resident(p) == os.path.getsize(p) for p in paths):
            break
        time.sleep(0.02)
    res = [resident(p) for p in paths]
    full = all(r == os.path.getsize(p) for r, p in zip(res, paths))
    print("resident" if full else "cold", *res)
""")


def assert_prefetched(stdout: str, paths: list[str], paged_out_before: int) -> None:
    """The target saw its files resident, but for pages the host's DAMON pageout scheme
    reclaimed meanwhile (this VM's reclaims single unmapped page-cache pages a moment after
    they were read): at most what the kernel says it took is missing, and never most of it."""
    word, *res = stdout.split()
    assert word in ("resident", "cold") and len(res) == len(paths), stdout
    size = sum(os.path.getsize(p) for p in paths)
    missing = size - sum(map(int, res))
    if word == "cold":
        allowed = damon_paged_out() - paged_out_before
        assert missing <= min(allowed, size // 2), (stdout, missing, allowed)


def test_in_process_target_gets_its_model_prefetched(model, tmp_path):
    d, shards, decoy = model
    code = WAIT_RESIDENT.format(tests=os.path.dirname(__file__), paths=shards)
    trace = tmp_path / "trace.json"
    paged_out = damon_paged_out()
    out = subprocess.run([PY, "-m", "headstart", "run", "--model", str(d), "--trace", str(trace),
                          "--", PY, "-c", code], env=_env(cache=str(tmp_path / "c")),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert_prefetched(out.stdout, shards, paged_out)
    assert resident(decoy) == 0  # only what the server loads is read
    # the helper that read the model outlives the target a little: it merges its events
    # into the same trace when it is done
    deadline = time.monotonic() + 30
    while True:
        names = {e["name"] for e in json.loads(trace.read_text())["traceEvents"]}
        if "resolve" in names or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "resolve" in names and "target start" in names


def test_no_prefetch_reads_nothing(model, tmp_path):
    d, shards, _ = model
    out = subprocess.run([PY, "-m", "headstart", "run", "--no-prefetch", "--model", str(d), "--",
                          PY, "-c", "import time; time.sleep(1)"],
                         env=_env(cache=str(tmp_path / "c")), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert sum(resident(p) for p in shards) == 0


def test_adapter_finds_the_model_in_the_command(model, tmp_path):
    """The generic adapter reads --model-path from the target's own argv."""
    d, shards, _ = model
    script = tmp_path / "server.py"
    script.write_text(WAIT_RESIDENT.format(tests=os.path.dirname(__file__), paths=shards))
    paged_out = damon_paged_out()
    out = subprocess.run([PY, "-m", "headstart", "run", "--", PY, str(script), "--model-path",
                          str(d)], env=_env(cache=str(tmp_path / "c")), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert_prefetched(out.stdout, shards, paged_out)


def test_exec_target_gets_a_detached_prefetch(model, tmp_path):
    d, shards, _ = model
    for p in shards:
        drop(p)
    # `sh` is not Python: headstart execs it and a double-forked helper prefetches.
    full = " ".join(f"[ \"$(fincore -nbo RES {p})\" = {os.path.getsize(p)} ] &&" for p in shards)
    res = " ".join(f"$(fincore -nbo RES {p})" for p in shards)
    script = (f"w=cold; for i in $(seq 100); do {full} w=resident && break; sleep 0.1; done; "
              f"echo $w {res}")
    paged_out = damon_paged_out()
    out = subprocess.run([PY, "-m", "headstart", "run", "--model", str(d), "--", "sh", "-c",
                          script], env=_env(cache=str(tmp_path / "c")), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert_prefetched(out.stdout, shards, paged_out)


def test_bad_model_does_not_harm_the_target(tmp_path):
    out = subprocess.run([PY, "-m", "headstart", "run", "-v", "--model", str(tmp_path / "nope"),
                          "--", PY, "-c", "import time; time.sleep(0.5); print('ok')"],
                         env=_env(cache=str(tmp_path / "c")), capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout) == (0, "ok\n")
