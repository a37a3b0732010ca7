"""pagemap.file_mappings on this process's own mappings: ``only`` matches by the file, not
by the spelling of its path (a symlink to it counts; a file renamed over it is it now)."""

from __future__ import annotations

import mmap
import os

from headstart.profiles.pagemap import file_mappings, real_path


def _map(path: str) -> mmap.mmap:
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)


def test_only_selects_by_file_and_reports_the_realpath(tmp_path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a" * 3 * 4096)
    b.write_bytes(b"b" * 2 * 4096)
    link = tmp_path / "link.bin"
    link.symlink_to(a)
    maps = [_map(str(link)), _map(str(b))]
    try:
        got = file_mappings(os.getpid(), only={str(a)})
        assert [(hi - lo, off, path) for lo, hi, off, path in got] == [(3 * 4096, 0, str(a))]
        everything = {path for *_, path in file_mappings(os.getpid())}
        assert {str(a), str(b)} <= {real_path(p) for p in everything}
        # b.bin renamed over a.bin: the old a.bin's mapping is of a deleted file, and the
        # one of b.bin is now the file at that path
        os.rename(b, a)
        got = file_mappings(os.getpid(), only={str(a)})
        assert [(hi - lo, path) for lo, hi, off, path in got] == [(2 * 4096, str(a))]
    finally:
        for m in maps:
            m.close()
