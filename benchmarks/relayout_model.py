"""Write a copy of a safetensors model whose checkpoint layout a loader reads differently.

    python benchmarks/relayout_model.py SRC DST --layout reversed     # tensors in reverse order
    python benchmarks/relayout_model.py SRC DST --layout save_pretrained

``reversed``: every shard keeps its tensors but stores them last-to-first, so a loader that
walks the model's modules in order reads each shard from its end to its start (out of file
order). ``save_pretrained``: the model is loaded with transformers and written again by its
own ``save_pretrained`` (shards of at most 600 MB, tensors as transformers lays them out).
Sidecars (config, tokenizer, chat template) are copied. Needs the demo extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys


def _reversed_shard(src: str, dst: str) -> None:
    with open(src, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        base = 8 + n
        meta = header.pop("__metadata__", None)
        names = sorted(header, key=lambda k: header[k]["data_offsets"][0], reverse=True)
        out_header: dict = {"__metadata__": meta} if meta is not None else {}
        pos = 0
        for name in names:
            lo, hi = header[name]["data_offsets"]
            out_header[name] = {**header[name], "data_offsets": [pos, pos + hi - lo]}
            pos += hi - lo
        raw = json.dumps(out_header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
        with open(dst, "wb") as out:
            out.write(struct.pack("<Q", len(raw)) + raw)
            for name in names:
                lo, hi = header[name]["data_offsets"]
                fh.seek(base + lo)
                out.write(fh.read(hi - lo))
            out.flush()
            os.fsync(out.fileno())


def _save_pretrained(src: str, dst: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.save_pretrained(dst, max_shard_size="600MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--layout", choices=["reversed", "save_pretrained"], required=True)
    args = ap.parse_args()
    if os.path.exists(args.dst):
        print(f"{args.dst} exists: remove it first", file=sys.stderr)
        return 2
    os.makedirs(args.dst)
    if args.layout == "save_pretrained":
        _save_pretrained(args.src, args.dst)
    for name in sorted(os.listdir(args.src)):
        path = os.path.join(args.src, name)
        if name.endswith(".safetensors"):
            if args.layout == "reversed":
                _reversed_shard(path, os.path.join(args.dst, name))
        elif os.path.isfile(path) and not os.path.exists(os.path.join(args.dst, name)):
            shutil.copy2(path, os.path.join(args.dst, name))  # sidecars save_pretrained lacks
    print(f"wrote {args.dst} ({args.layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
