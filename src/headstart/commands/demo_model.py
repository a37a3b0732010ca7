"""``headstart demo-model OUT``: write a synthetic model (random weights, real tokenizer)."""

from __future__ import annotations

import argparse
import time

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Generate a Qwen2- or Llama-shaped model with random weights of about SIZE bytes: "
            "sharded safetensors with an index, config, generation config, a byte-level BPE "
            "tokenizer trained locally and a ChatML chat template. Deterministic for a given "
            "--seed; needs no network. Needs the demo extra: pip install 'headstart[demo]'."
        ),
    )
    p.add_argument("out", metavar="OUT", help="folder to create (with --hf-cache: a hub cache)")
    p.add_argument("--size", default="2G", help="total weight bytes, e.g. 20M, 2G (default 2G)")
    p.add_argument("--arch", choices=("qwen2", "llama"), default="qwen2")
    p.add_argument("--seed", type=int, default=0, help="weights' random seed (default 0)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument(
        "--shards",
        type=int,
        default=None,
        help="number of safetensors shards (default: about one per 512 MiB)",
    )
    p.add_argument(
        "--hf-cache",
        action="store_true",
        help="write OUT as a Hugging Face hub cache (blobs, snapshots, refs/main)",
    )
    p.add_argument("--repo-id", metavar="ORG/NAME", help="repo id for --hf-cache")
    p.add_argument(
        "--force", action="store_true", help="replace an earlier demo model at the destination"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from headstart.bench.demo_model import make_demo_model, plan_demo_model
    from headstart.errors import HeadstartError
    from headstart.sizes import format_size

    if args.hf_cache and not args.repo_id:
        raise HeadstartError("--hf-cache needs --repo-id ORG/NAME")
    if args.repo_id and not args.hf_cache:
        raise HeadstartError("--repo-id only applies with --hf-cache")
    plan = plan_demo_model(args.size, arch=args.arch, dtype=args.dtype)
    start = time.monotonic()
    path = make_demo_model(
        args.out,
        size=args.size,
        arch=args.arch,
        seed=args.seed,
        hf_cache=args.hf_cache,
        repo_id=args.repo_id,
        shards=args.shards,
        dtype=args.dtype,
        force=args.force,
    )
    took = time.monotonic() - start
    shards = len(list(path.glob("model-*.safetensors")))
    print(
        f"wrote {path}: {args.arch}, {plan.params / 1e6:.1f}M params ({plan.layers} layers, "
        f"hidden {plan.hidden}), {format_size(plan.nbytes)} of {args.dtype} weights in "
        f"{shards} shard(s), in {took:.1f} s"
    )
    if args.hf_cache:
        print(
            f"resolve it offline with HF_HUB_CACHE={args.out} HF_HUB_OFFLINE=1 and model "
            f"id {args.repo_id}"
        )
    return 0
