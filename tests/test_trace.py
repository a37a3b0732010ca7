"""Trace export: atomic, and safe when two threads write the same file at once (``headstart
run`` writes from a background thread when its work ends and again at exit)."""

from __future__ import annotations

import json
import threading

from headstart.trace import Tracer


def test_concurrent_writes_leave_one_valid_file_and_no_temp_files(tmp_path):
    tracer = Tracer()
    for i in range(2000):
        tracer.instant("event", index=i, pad="x" * 40)
    path = tmp_path / "trace.json"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer() -> None:
        start.wait()
        for _ in range(8):
            try:
                tracer.write(str(path))
            except BaseException as exc:  # collected: the assertion below names it
                errors.append(exc)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    doc = json.loads(path.read_text())
    assert len([e for e in doc["traceEvents"] if e["name"] == "event"]) == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]
