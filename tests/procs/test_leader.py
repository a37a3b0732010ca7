"""headstart.procs.leader: real processes, real flock, real page cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from headstart.procs.leader import lead, lock_path

# A process that waits for a "go" file, tries to lead, reports, optionally prefetches a file
# and reports its own read_bytes, then holds whatever it got until stdin closes.
_CONTENDER = textwrap.dedent("""
    import os, sys, time
    from headstart.procs.leader import lead

    key, directory, go, target = sys.argv[1:5]

    def read_bytes():
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])

    def prefetch(path):
        try:
            from headstart.pagecache.engine import prefetch as engine_prefetch
        except ImportError:
            engine_prefetch = None
        if engine_prefetch is not None:
            engine_prefetch(path, workers=2, budget=None, skip_resident=False).wait()
            return "engine"
        buf = bytearray(16 << 20)
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
        return "loop"

    while not os.path.exists(go):
        time.sleep(0.001)
    before = read_bytes()
    lock = lead(key, directory=directory)
    how = prefetch(target) if (lock is not None and target != "-") else "-"
    print("LEAD" if lock is not None else "FOLLOW", read_bytes() - before, how, flush=True)
    sys.stdin.read()
""")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _contend(tmp_path: Path, n: int, key: str, target: str = "-") -> list[list[str]]:
    """Start n processes, release them at once, return each one's report line."""
    script = tmp_path / "contender.py"
    script.write_text(_CONTENDER)
    go = tmp_path / f"go-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    procs = [subprocess.Popen([sys.executable, str(script), key, str(tmp_path / "locks"),
                               str(go), target], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
             for _ in range(n)]
    try:
        time.sleep(0.3)  # let all of them reach the wait loop (correctness does not depend on it)
        go.write_text("go")
        lines = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=30)
            p.stdout.close()  # type: ignore[union-attr]
    return lines


def test_four_processes_started_together_exactly_one_leads(tmp_path: Path) -> None:
    lines = _contend(tmp_path, 4, "model-a")
    assert sorted(line[0] for line in lines) == ["FOLLOW", "FOLLOW", "FOLLOW", "LEAD"]


def test_lock_files_are_private_and_named_by_hash(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "headstart"
    lock = lead("some/model@abc", directory=str(directory))
    assert lock is not None and lock.held
    try:
        assert Path(lock.path).name == f"{hashlib.sha256(b'some/model@abc').hexdigest()}.lock"
        assert lock.path == lock_path("some/model@abc", str(directory))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
        assert Path(lock.path).read_text().strip() == str(os.getpid())
    finally:
        lock.release()


def test_runtime_dir_is_the_default_folder(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with lead("default-folder") as lock:  # type: ignore[union-attr]
        assert Path(lock.path).parent == tmp_path / "headstart"


def test_same_process_second_lead_follows_until_release(tmp_path: Path) -> None:
    d = str(tmp_path)
    first = lead("k", directory=d)
    assert first is not None
    assert lead("k", directory=d) is None
    other = lead("other-key", directory=d)  # different keys do not conflict
    assert other is not None
    first.release()
    first.release()  # idempotent
    again = lead("k", directory=d)
    assert again is not None
    again.release()
    other.release()


def test_different_keys_do_not_conflict_across_processes(tmp_path: Path) -> None:
    a = _contend(tmp_path, 2, "key-one")
    b = _contend(tmp_path, 2, "key-two")
    assert sorted(x[0] for x in a) == ["FOLLOW", "LEAD"]
    assert sorted(x[0] for x in b) == ["FOLLOW", "LEAD"]
    # and while one process holds key-one, key-two is free
    holder = _start_holder(tmp_path, "key-one")
    try:
        assert lead("key-one", directory=str(tmp_path / "locks")) is None
        lock = lead("key-two", directory=str(tmp_path / "locks"))
        assert lock is not None
        lock.release()
    finally:
        holder.kill()
        holder.wait()


_HOLDER = textwrap.dedent("""
    import os, subprocess, sys, time
    from headstart.procs.leader import lead
    key, directory, children = sys.argv[1:4]
    lock = lead(key, directory=directory)
    assert lock is not None
    if "fork" in children:      # a plain fork() child, like a fork-started worker
        r, w = os.pipe()
        if os.fork() == 0:
            # at-fork hooks have run once fork() returns here; say so, so the test kills
            # the holder only after the child has dropped its copy (not in that window)
            os.write(w, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(r, 1)
    if "exec" in children:      # an exec'd child that keeps every inheritable descriptor
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         close_fds=False)
    print("HOLDING", flush=True)
    time.sleep(60)
""")


def _start_holder(tmp_path: Path, key: str, children: str = "") -> subprocess.Popen[str]:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    # own session: the test kills the whole group (the holder's children) at the end
    proc = subprocess.Popen([sys.executable, str(script), key, str(tmp_path / "locks"),
                             children or "none"], stdout=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)
    assert proc.stdout.readline().strip() == "HOLDING"  # type: ignore[union-attr]
    return proc


@pytest.mark.parametrize("children", ["none", "fork", "exec"])
def test_sigkilled_holder_releases(tmp_path: Path, children: str) -> None:
    holder = _start_holder(tmp_path, "crash-key", children)
    directory = str(tmp_path / "locks")
    try:
        assert lead("crash-key", directory=directory) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        # the holder's children are still alive here; they must not keep the lock
        lock = lead("crash-key", directory=directory)
        assert lock is not None, f"lock still held after SIGKILL (children: {children})"
        lock.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.stdout.close()  # type: ignore[union-attr]


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _tmpfs(path: Path) -> bool:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() in ("tmpfs", "ramfs")


def test_four_processes_read_the_model_about_once(tmp_path: Path) -> None:
    if _tmpfs(tmp_path):
        pytest.skip("tmp_path is on tmpfs: nothing is read from a disk")
    size = 64 << 20
    model = tmp_path / "model.safetensors"
    with open(model, "wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            fh.write(block)
    _evict(model)
    try:
        lines = _contend(tmp_path, 4, str(model), str(model))
    finally:
        model.unlink()
    roles = sorted(line[0] for line in lines)
    assert roles == ["FOLLOW", "FOLLOW", "FOLLOW", "LEAD"]
    per_process = {i: int(line[1]) for i, line in enumerate(lines)}
    leader_read = next(int(line[1]) for line in lines if line[0] == "LEAD")
    total = sum(per_process.values())
    # the leader read the cold file from disk; the others read (almost) nothing
    assert leader_read >= 0.9 * size, (lines, size)
    assert total <= 1.5 * size, (lines, size)
    assert all(int(line[1]) < 0.1 * size for line in lines if line[0] == "FOLLOW"), lines
