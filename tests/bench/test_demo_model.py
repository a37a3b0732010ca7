"""headstart demo-model: real files that real transformers / huggingface_hub load."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headstart.bench.demo_model import (
    MARKER,
    DemoModelExistsError,
    make_demo_model,
    plan_demo_model,
)
from headstart.errors import HeadstartError
from headstart.sizes import parse_size

SMALL = "20M"


def _need_demo_extra() -> None:
    pytest.importorskip("numpy")
    pytest.importorskip("tokenizers")


def _digests(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> dict[str, Path]:
    _need_demo_extra()
    base = tmp_path_factory.mktemp("demo")
    return {
        arch: make_demo_model(base / arch, size=SMALL, arch=arch, seed=1, shards=3)
        for arch in ("qwen2", "llama")
    }


@pytest.mark.parametrize("size", ["8M", "20M", "300M", "2G", "16G"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_plan_hits_requested_size(size: str, arch: str) -> None:
    plan = plan_demo_model(size, arch=arch)
    assert abs(plan.nbytes - parse_size(size)) / parse_size(size) < 0.02
    assert plan.hidden % plan.heads == 0 and plan.heads % plan.kv_heads == 0
    has_bias = any(name.endswith("q_proj.bias") for name, _, _ in plan.tensors)
    assert has_bias == (arch == "qwen2")


def test_plan_rejects_bad_input() -> None:
    with pytest.raises(HeadstartError):
        plan_demo_model("1k")
    with pytest.raises(HeadstartError):
        plan_demo_model("2G", arch="gpt2")
    with pytest.raises(HeadstartError):
        plan_demo_model("2G", dtype="int8")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_index_names_every_shard_and_tensor(small_models, arch: str) -> None:
    root = small_models[arch]
    index = json.loads((root / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in root.glob("*.safetensors"))
    assert len(shards) == 3
    assert sorted(set(index["weight_map"].values())) == shards
    plan = plan_demo_model(SMALL, arch=arch)
    assert set(index["weight_map"]) == {name for name, _, _ in plan.tensors}
    # The header of each shard lists exactly the tensors the index maps to it; the data
    # section is exactly as long as the tensors (safetensors rejects holes and overlaps).
    data_total = 0
    for shard in shards:
        raw = (root / shard).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        header.pop("__metadata__")
        assert set(header) == {k for k, v in index["weight_map"].items() if v == shard}
        end = max(v["data_offsets"][1] for v in header.values())
        assert len(raw) == 8 + n + end
        data_total += end
    assert index["metadata"]["total_size"] == data_total == plan.nbytes


def test_weights_are_small_finite_and_norms_are_ones(small_models) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    root = small_models["qwen2"]
    seen = set()
    for shard in root.glob("*.safetensors"):
        for name, t in safetensors_torch.load_file(str(shard)).items():
            seen.add(name)
            assert t.dtype == torch.bfloat16
            assert torch.isfinite(t).all(), name
            if "norm" in name:
                assert (t == 1).all(), name
            elif name.endswith(".bias"):
                assert (t == 0).all(), name
            else:
                mag = t.float().abs()
                assert mag.min() >= 2**-7 and mag.max() < 2**-5, name
                assert 0.3 < (t > 0).float().mean() < 0.7, name  # both signs
    assert "lm_head.weight" in seen


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_transformers_loads_and_generates_greedily(small_models, arch: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = small_models[arch]
    tok = transformers.AutoTokenizer.from_pretrained(root)
    model = transformers.AutoModelForCausalLM.from_pretrained(root, dtype=torch.bfloat16)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "Hello, who are you?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    first = model.generate(**enc, max_new_tokens=8, do_sample=False)
    second = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert first.shape[1] > enc["input_ids"].shape[1]
    assert torch.equal(first, second)
    logits = model(**enc).logits
    assert torch.isfinite(logits).all()


def test_tokenizer_round_trips_and_applies_chat_template(small_models) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(small_models["qwen2"])
    text = "The quick brown fox: 42 jumps!  Ünïcode\tand\nnew lines."
    ids = tok(text)["input_ids"]
    assert len(ids) < len(text.encode())  # merges were learned, not just bytes
    assert tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    prompt = tok.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Special tokens are single tokens, as a chat server needs them to be.
    assert len(tok("<|im_start|>")["input_ids"]) == 1


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small_models) -> None:
    again = make_demo_model(tmp_path / "again", size=SMALL, arch="qwen2", seed=1, shards=3)
    other = make_demo_model(tmp_path / "other", size=SMALL, arch="qwen2", seed=2, shards=3)
    first = _digests(small_models["qwen2"])
    assert _digests(again) == first
    changed = {k for k, v in _digests(other).items() if first[k] != v}
    assert {k for k in first if k.endswith(".safetensors")} <= changed
    assert "tokenizer.json" not in changed  # the tokenizer does not depend on the seed


def test_hf_cache_layout_resolves_offline(tmp_path) -> None:
    _need_demo_extra()
    hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snap = make_demo_model(
        cache, size="8M", seed=3, hf_cache=True, repo_id="acme/tiny-demo", shards=2
    )
    repo = cache / "models--acme--tiny-demo"
    commit = (repo / "refs" / "main").read_text()
    assert len(commit) == 40 and int(commit, 16) >= 0
    assert snap == repo / "snapshots" / commit
    got = hub.snapshot_download("acme/tiny-demo", cache_dir=cache, local_files_only=True)
    assert Path(got) == snap
    names = {p.name for p in snap.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json"} <= names
    for p in snap.iterdir():
        target = os.readlink(p)
        assert target.startswith("../../blobs/")  # relative, so the cache can move
        blob = p.resolve()
        assert blob.parent == (repo / "blobs").resolve()
        if p.name.endswith(".safetensors"):  # LFS-style: named by the content's sha256
            assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
    # The same call gives the same commit: repo ids stay stable across machines.
    again = make_demo_model(
        tmp_path / "hub2", size="8M", seed=3, hf_cache=True, repo_id="acme/tiny-demo", shards=2
    )
    assert again.name == commit


def test_refuses_non_empty_destination_and_replaces_only_its_own(tmp_path) -> None:
    _need_demo_extra()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(DemoModelExistsError):
            make_demo_model(foreign, size="8M", force=force)
    assert (foreign / "keep.txt").read_text() == "precious"

    ours = make_demo_model(tmp_path / "ours", size="8M", seed=1)
    with pytest.raises(DemoModelExistsError):
        make_demo_model(ours, size="8M", seed=2)
    make_demo_model(ours, size="8M", seed=2, force=True)
    assert json.loads((ours / MARKER).read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "ours"]  # no temp left


def test_killed_mid_way_leaves_no_model(tmp_path) -> None:
    _need_demo_extra()
    dest = tmp_path / "model"
    code = (
        "import sys; from headstart.bench.demo_model import make_demo_model; "
        f"make_demo_model({str(dest)!r}, size='400M', shards=8)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        # Wait until the generator has written part of the weights, then kill it hard.
        while not list(tmp_path.glob(".model.tmp-*/model-00002-*.safetensors")):
            assert proc.poll() is None, "generator finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not dest.exists()


def test_cli_writes_and_refuses(tmp_path, capsys) -> None:
    _need_demo_extra()
    from headstart.cli import main

    out = tmp_path / "cli"
    assert main(["demo-model", str(out), "--size", "8M", "--arch", "llama", "--seed", "4"]) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert main(["demo-model", str(out), "--size", "8M"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["demo-model", str(tmp_path / "h"), "--size", "8M", "--hf-cache"]) == 2


def test_demo_picks_bfloat16_only_where_the_cpu_has_it(tmp_path):
    from headstart.commands.demo import demo_dtype

    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without = tmp_path / "b"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert demo_dtype(str(with_bf16)) == "bfloat16"
    assert demo_dtype(str(without)) == "float32"
    assert demo_dtype(str(tmp_path / "missing")) == "float32"
