"""A minimal GPU server start: load a model with transformers onto the GPU and greedily
generate a few tokens (what a server does before it is ready). Used as the target of
`headstart bench --until-exit` on a GPU machine:

    headstart bench --until-exit --model DIR --run-args "--model DIR --preload torch,transformers" \
        -- python benchmarks/gpu_load_generate.py DIR
"""

from __future__ import annotations

import os
import sys


def main(path: str) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = os.environ.get("BENCH_DEVICE", "cuda")  # "cpu" for a dry run without a GPU
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map=device)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello"}],
                                  add_generation_prompt=True, return_tensors="pt")
    ids = getattr(ids, "input_ids", ids).to(device)
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    print(repr(tok.decode(out[0, ids.shape[1]:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
