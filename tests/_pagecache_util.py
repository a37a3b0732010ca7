"""Helpers for the page-cache tests: real files on a real disk, really evicted."""

from __future__ import annotations

import os
import subprocess

import pytest

from headstart.pagecache import syscalls

MiB = 2**20


def require_disk(path) -> None:
    """Skip when ``path`` is on an in-memory file system (DONTNEED is a no-op there)."""
    if syscalls.fs_type(path) in syscalls.TMPFS_LIKE:
        pytest.skip(f"{path} is on tmpfs: page-cache tests need a real disk")


def make_file(path, size: int, chunk: bytes | None = None) -> str:
    """Write ``size`` bytes of random data, fsync (so DONTNEED can drop it), evict."""
    chunk = chunk or os.urandom(MiB)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())
    drop(path)
    return os.fspath(path)


def model_folder(tmp_path, model_type: str, shard_sizes: list[int]) -> tuple[str, list[str]]:
    """``tmp_path/model`` as a server sees it, on a real disk: ``config.json`` naming
    ``model_type`` and safetensors shards of ``shard_sizes`` (one: ``model.safetensors``;
    more: ``model-0000I-of-0000N.safetensors``), written and evicted."""
    require_disk(tmp_path)
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    n = len(shard_sizes)
    names = ["model.safetensors"] if n == 1 else [
        f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    pairs = zip(names, shard_sizes, strict=True)
    return str(root), [make_file(root / name, size) for name, size in pairs]


def drop(*paths) -> None:
    """Evict and check: fails the test if the kernel kept pages."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            left = resident(p)
            assert left == 0, f"{p}: {left} bytes still resident after DONTNEED"
        finally:
            os.close(fd)


def resident(path) -> int:
    """Resident bytes by cachestat (mincore if cachestat is missing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        cs = syscalls.cachestat(fd)
        if cs is not None:
            return min(os.fstat(fd).st_size, cs.nr_cache * syscalls.PAGE_SIZE)
        return syscalls.mincore_resident(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def fincore_bytes(*paths) -> int:
    """Resident bytes summed over ``paths`` according to util-linux ``fincore``."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          *map(str, paths)], capture_output=True, text=True, check=True)
    return sum(int(line.split()[0]) for line in out.stdout.splitlines() if line.strip())


_DAMON = "/sys/kernel/mm/damon/admin/kdamonds"


def damon_paged_out() -> int:
    """Bytes a DAMON "pageout" scheme of this host has reclaimed so far (0 where none runs
    or its stats cannot be refreshed: not root). This VM runs one that reclaims page-cache
    pages no process maps, so a page read a second ago can be gone; a residency check can
    allow for what the kernel says it took meanwhile instead of guessing a margin."""
    total = 0
    for k in _numbered(_DAMON):
        base = f"{_DAMON}/{k}"
        try:
            with open(f"{base}/state", "w") as f:
                f.write("update_schemes_stats")
        except OSError:
            continue
        schemes = [f"{base}/contexts/{ctx}/schemes/{s}"
                   for ctx in _numbered(f"{base}/contexts")
                   for s in _numbered(f"{base}/contexts/{ctx}/schemes")]
        for scheme in schemes:
            try:
                with open(f"{scheme}/action") as f:
                    if f.read().strip() != "pageout":
                        continue
                with open(f"{scheme}/stats/sz_applied") as f:
                    total += int(f.read())
            except (OSError, ValueError):
                continue
    return total


def _numbered(folder: str) -> list[str]:
    """The numbered entries of a DAMON sysfs folder (none when it cannot be read)."""
    try:
        return [name for name in os.listdir(folder) if name.isdigit()]
    except OSError:
        return []


def assert_resident_runs(path, expected: list[tuple[int, int]], paged_out_before: int) -> None:
    """``path``'s resident runs are ``expected``, but for pages the host's DAMON pageout
    scheme reclaimed since ``paged_out_before`` (:func:`damon_paged_out`): nothing outside
    ``expected`` is resident, and at most what the kernel says it took is missing."""
    from headstart.pagecache.residency import resident_runs

    got = resident_runs(path)
    if got == expected:
        return
    inside = all(any(o <= g and g + n <= o + m for o, m in expected) for g, n in got)
    missing = sum(m for _o, m in expected) - sum(n for _g, n in got)
    allowed = damon_paged_out() - paged_out_before
    assert inside and 0 <= missing <= allowed, (got, expected, missing, allowed)
