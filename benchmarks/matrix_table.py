"""README's tables from one ``bash benchmarks/cold_start_matrix.sh OUT`` run.

    python benchmarks/matrix_table.py OUT

Per cell (``OUT/NAME/results.json``, one ``headstart bench`` each): baseline and headstart
cold (min / median / max), headstart warm (the cell's own, or for a cold-only cell the
warm of the same recording's 300 MB/s cell: nothing is read warm, so the throttle does not
matter), the bytes the start read (what the replay read plus what the server still read
itself, medians of the runs' coverage reports), limit = max(headstart warm, bytes read /
bandwidth) (unthrottled: the warm time) and the ratio of the headstart cold median to it.
Then the first start with no profile and the warm cell with 8 runs per variant.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

RECORDINGS = ("R1", "R2", "R3", "save_pretrained", "reversed")
SPEEDS = ("150MB", "300MB", "1GB", "none")


def _load(out: str, name: str) -> dict | None:
    path = os.path.join(out, name, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _cell(doc: dict, mode: str, variant: str) -> dict | None:
    for row in doc["summary"]:
        if row["mode"] == mode and row["variant"] == variant and row["ok"]:
            return row
    return None


def _mmm(row: dict | None) -> str:
    return "—" if row is None else f"{row['min']:.2f} / {row['median']:.2f} / {row['max']:.2f} s"


def _read_bytes(doc: dict) -> float | None:
    got = [s["coverage"]["replayed_bytes"] + s["coverage"]["target_read_bytes"]
           for s in doc["samples"] if s["mode"] == "cold" and s["variant"] == "headstart"
           and s.get("ok") and s.get("coverage")]
    return statistics.median(got) if got else None


def profile_rows(out: str) -> list[str]:
    rows = ["| profile | disk | baseline cold | headstart cold | headstart warm | read | limit "
            "| cold / limit |", "|---|---|---|---|---|---|---|---|"]
    for rec in RECORDINGS:
        ref = _load(out, f"{rec}-300MB")
        warm_ref = _cell(ref, "warm", "headstart") if ref else None
        for speed in SPEEDS:
            doc = _load(out, f"{rec}-{speed}")
            if doc is None:
                continue
            warm = _cell(doc, "warm", "headstart") or warm_ref
            cold = _cell(doc, "cold", "headstart")
            read = _read_bytes(doc)
            bps = doc.get("disk_bps")
            limit, why = (warm["median"], "warm") if warm else (None, "")
            if bps and read and (limit is None or read / bps > limit):
                limit, why = read / bps, "disk"
            ratio = f"{cold['median'] / limit:.2f}x" if cold and limit else "—"
            speed_s = {"150MB": "150 MB/s", "300MB": "300 MB/s", "1GB": "1 GB/s",
                       "none": "unthrottled"}[speed]
            read_s = f"{read / 1e9:.2f} GB" if read else "—"
            limit_s = f"{limit:.2f} s ({why})" if limit else "—"
            rows.append(f"| {rec} | {speed_s} | {_mmm(_cell(doc, 'cold', 'baseline'))} "
                        f"| **{_mmm(cold)}** | {_mmm(warm)} | {read_s} | {limit_s} "
                        f"| {ratio} |")
    return rows


def variant_rows(doc: dict | None, mode: str) -> list[str]:
    if doc is None:
        return []
    base = _cell(doc, mode, "baseline")
    rows = ["| variant | min / median / max | vs baseline |", "|---|---|---|"]
    for variant in doc["variants"]:
        row = _cell(doc, mode, variant)
        if row is None:
            continue
        vs = "1.00x"
        if variant != "baseline" and base is not None:
            r = row["median"] / base["median"]
            vs = f"{r:.2f}x ({(r - 1) * 100:+.1f} %)"
        rows.append(f"| {variant} | {_mmm(row)} | {vs} |")
    return rows


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "bench-out/matrix"
    print("\n".join(profile_rows(out)))
    print("\nfirst start, no profile (300 MB/s, cold):\n")
    print("\n".join(variant_rows(_load(out, "first-start"), "cold")))
    print("\nwarm, 8 runs per variant (unthrottled):\n")
    print("\n".join(variant_rows(_load(out, "warm-8"), "warm")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
