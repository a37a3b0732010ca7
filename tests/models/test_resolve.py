"""resolve_model against real Hugging Face cache layouts, local folders and odd files.

Every HF cache here is built in the documented layout (blobs named by content hash,
``snapshots/COMMIT/`` with relative symlinks into ``../../blobs``, ``refs/``), and
huggingface_hub's own ``snapshot_download(local_files_only=True)`` must agree with us.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest

from headstart.errors import ModelNotFoundError, RevisionNotFoundError
from headstart.models.resolve import resolve_model

REPO = "acme/tiny-llm"
ENV_VARS = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "MODELSCOPE_CACHE",
    "HEADSTART_HUB",
    "VLLM_USE_MODELSCOPE",
    "HF_HUB_OFFLINE",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No variable from the outer environment, and a private HOME."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def commit_of(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


def add_snapshot(cache, repo_id: str, commit: str, files: dict[str, bytes], refs=()) -> str:
    """Write one snapshot in the documented layout; return the snapshot folder."""
    repo_dir = os.path.join(os.fspath(cache), "models--" + repo_id.replace("/", "--"))
    blobs = os.path.join(repo_dir, "blobs")
    snap = os.path.join(repo_dir, "snapshots", commit)
    os.makedirs(blobs, exist_ok=True)
    for rel, content in files.items():
        blob = os.path.join(blobs, hashlib.sha256(content).hexdigest())
        if not os.path.exists(blob):
            with open(blob, "wb") as fh:
                fh.write(content)
        link = os.path.join(snap, *rel.split("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    for ref in refs:
        ref_path = os.path.join(repo_dir, "refs", *ref.split("/"))
        os.makedirs(os.path.dirname(ref_path), exist_ok=True)
        with open(ref_path, "w") as fh:
            fh.write(commit)  # huggingface_hub writes the hash without a newline
    return snap


def model_files(tag: str = "", shards: int = 2) -> dict[str, bytes]:
    """A sharded safetensors model with an index, plus files servers must not read."""
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    index = {"metadata": {}, "weight_map": {f"w{i}": n for i, n in enumerate(reversed(names))}}
    files = {
        "config.json": b'{"model_type": "llama"}' + tag.encode(),
        "tokenizer.json": b'{"tok": 1}' + tag.encode(),
        "tokenizer_config.json": b"{}" + tag.encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "README.md": b"readme",
        "consolidated.safetensors": b"C" * 300,
        "original/consolidated.00.pth": b"O" * 200,
        "original/params.json": b"{}",
    }
    for i, name in enumerate(names):
        files[name] = bytes([65 + i]) * (100 + i) + tag.encode()
    return files


def names(snap) -> list[str]:
    return [f.name for f in snap.files]


def hf_snapshot_download(**kwargs) -> str:
    hub = pytest.importorskip("huggingface_hub")
    return hub.snapshot_download(local_files_only=True, **kwargs)


def hf_in_subprocess(repo_id: str, revision: str | None = None) -> str:
    """huggingface_hub computes its cache folder from the environment at import: ask a fresh
    interpreter, with this test's environment."""
    pytest.importorskip("huggingface_hub")
    code = (
        "import sys\n"
        "from huggingface_hub import snapshot_download\n"
        "print(snapshot_download(sys.argv[1], revision=sys.argv[2] or None,"
        " local_files_only=True))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, repo_id, revision or ""],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- HF cache


@pytest.fixture
def hf_cache(tmp_path):
    """main and tag v1.0 -> commit A; branch dev -> commit B; commit C reachable by hash
    only; refs/pr/1 -> B."""
    cache = tmp_path / "hub"
    add_snapshot(cache, REPO, commit_of("A"), model_files("A"), refs=("main", "v1.0"))
    add_snapshot(cache, REPO, commit_of("B"), model_files("B", shards=3),
                 refs=("dev", "refs/pr/1"))
    add_snapshot(cache, REPO, commit_of("C"), model_files("C"))
    return cache


@pytest.mark.parametrize(
    ("revision", "label"),
    [(None, "A"), ("main", "A"), ("v1.0", "A"), ("dev", "B"), ("refs/pr/1", "B"),
     (commit_of("C"), "C"), (commit_of("B"), "B")],
)
def test_hf_revisions_match_huggingface_hub(hf_cache, revision, label):
    snap = resolve_model(REPO, revision=revision, cache_dir=hf_cache)
    expected = hf_snapshot_download(repo_id=REPO, revision=revision, cache_dir=hf_cache)
    assert snap.root == expected
    assert snap.commit == commit_of(label)
    assert snap.source == "hf"
    assert snap.revision == (revision or "main")


def test_hf_files_selected_ordered_and_real(hf_cache):
    snap = resolve_model(REPO, revision="dev", cache_dir=hf_cache)
    assert names(snap) == [
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ]
    assert [f.role for f in snap.files] == ["sidecar"] * 4 + ["weights"] * 3
    blobs = os.path.join(os.path.realpath(hf_cache), "models--acme--tiny-llm", "blobs")
    for f in snap.files:
        assert f.path == os.path.join(snap.root, f.name)
        assert os.path.islink(f.path)
        assert os.path.dirname(f.real_path) == blobs
        assert f.size == os.path.getsize(f.real_path)
        with open(f.real_path, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == os.path.basename(f.real_path)
    assert "consolidated.safetensors" in " ".join(snap.notes)  # said why it is not read


def test_hf_cache_dir_through_a_symlink_and_tilde(hf_cache, tmp_path, clean_env):
    link = tmp_path / "link-to-hub"
    link.symlink_to(hf_cache, target_is_directory=True)
    snap = resolve_model(REPO, cache_dir=str(link))
    assert snap.root == hf_snapshot_download(repo_id=REPO, cache_dir=str(link))
    assert snap.root.startswith(str(os.path.realpath(hf_cache)))

    in_home = clean_env / "models-cache"
    in_home.symlink_to(hf_cache, target_is_directory=True)
    snap = resolve_model(REPO, cache_dir="~/models-cache")
    assert snap.root == hf_snapshot_download(repo_id=REPO, cache_dir="~/models-cache")


def test_hf_unknown_branch_names_refs_looked_at(hf_cache):
    with pytest.raises(RevisionNotFoundError) as info:
        resolve_model(REPO, revision="nope", cache_dir=hf_cache)
    msg = str(info.value)
    repo_dir = os.path.join(os.path.realpath(hf_cache), "models--acme--tiny-llm")
    assert os.path.join(repo_dir, "refs", "nope") in msg
    assert "dev" in msg and "main" in msg and "v1.0" in msg  # the refs that do exist
    assert isinstance(info.value, FileNotFoundError)
    hub = pytest.importorskip("huggingface_hub")
    with pytest.raises(hub.errors.LocalEntryNotFoundError):  # huggingface_hub agrees
        hf_snapshot_download(repo_id=REPO, revision="nope", cache_dir=hf_cache)


def test_hf_unknown_commit_names_snapshots_looked_at(hf_cache):
    missing = commit_of("never downloaded")
    with pytest.raises(RevisionNotFoundError) as info:
        resolve_model(REPO, revision=missing, cache_dir=hf_cache)
    msg = str(info.value)
    assert os.path.join("snapshots", missing) in msg
    assert commit_of("A") in msg  # lists the snapshots that exist


def test_hf_ref_to_missing_snapshot(hf_cache):
    refs = os.path.join(hf_cache, "models--acme--tiny-llm", "refs")
    with open(os.path.join(refs, "gone"), "w") as fh:
        fh.write(commit_of("deleted"))
    with pytest.raises(RevisionNotFoundError) as info:
        resolve_model(REPO, revision="gone", cache_dir=hf_cache)
    assert commit_of("deleted") in str(info.value)


def test_hf_unknown_repo_names_every_place(tmp_path, hf_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("acme/other", cache_dir=hf_cache)
    msg = str(info.value)
    assert os.path.join(str(tmp_path), "acme", "other") in msg  # the local path
    assert os.path.join(os.path.realpath(hf_cache), "models--acme--other") in msg
    assert not isinstance(info.value, RevisionNotFoundError)
    assert len(info.value.looked_at) == 2


def test_hf_repo_without_namespace(tmp_path):
    cache = tmp_path / "hub"
    add_snapshot(cache, "gpt2", commit_of("g"), {"config.json": b"{}", "model.safetensors": b"x"},
                 refs=("main",))
    snap = resolve_model("gpt2", cache_dir=cache)
    assert snap.root == hf_snapshot_download(repo_id="gpt2", cache_dir=cache)
    assert names(snap) == ["config.json", "model.safetensors"]


def test_hf_repo_folder_given_as_a_path(hf_cache):
    repo_dir = os.path.join(hf_cache, "models--acme--tiny-llm")
    snap = resolve_model(repo_dir, revision="dev")
    assert snap.source == "hf" and snap.commit == commit_of("B")
    assert snap.root == os.path.join(repo_dir, "snapshots", commit_of("B"))


# ------------------------------------------------------------- HF cache from environment


def _hub_at(path, label: str) -> str:
    add_snapshot(path, REPO, commit_of(label), model_files(label), refs=("main",))
    return commit_of(label)


def test_hf_cache_env_precedence_matches_huggingface_hub(tmp_path, monkeypatch, clean_env):
    """Each variable in turn, the higher ones removed one by one; a fresh huggingface_hub
    in a subprocess must find the same snapshot we do."""
    expected = {
        "HF_HUB_CACHE": _hub_at(tmp_path / "hf_hub_cache", "hub_cache"),
        "HUGGINGFACE_HUB_CACHE": _hub_at(tmp_path / "legacy", "legacy"),
        "HF_HOME": _hub_at(tmp_path / "hf_home" / "hub", "hf_home"),
        "XDG_CACHE_HOME": _hub_at(tmp_path / "xdg" / "huggingface" / "hub", "xdg"),
        "HOME": _hub_at(clean_env / ".cache" / "huggingface" / "hub", "home"),
    }
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_hub_cache"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for var, commit in expected.items():
        snap = resolve_model(REPO)
        assert snap.commit == commit, var
        assert snap.root == hf_in_subprocess(REPO), var
        if var != "HOME":
            monkeypatch.delenv(var)


def test_hf_home_with_tilde_and_variable(tmp_path, monkeypatch, clean_env):
    commit = _hub_at(clean_env / "hfh" / "hub", "tilde")
    monkeypatch.setenv("HF_HOME", "~/hfh")
    assert resolve_model(REPO).commit == commit
    monkeypatch.setenv("MY_MODELS", str(tmp_path / "varhub"))
    commit = _hub_at(tmp_path / "varhub", "var")
    monkeypatch.setenv("HF_HUB_CACHE", "$MY_MODELS")
    snap = resolve_model(REPO)
    assert snap.commit == commit
    assert snap.root == hf_in_subprocess(REPO)


def test_explicit_cache_dir_beats_environment(tmp_path, monkeypatch):
    env_commit = _hub_at(tmp_path / "env", "env")
    dir_commit = _hub_at(tmp_path / "explicit", "explicit")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "env"))
    assert resolve_model(REPO).commit == env_commit
    assert resolve_model(REPO, cache_dir=tmp_path / "explicit").commit == dir_commit


# --------------------------------------------------------------------------- local


def write(folder, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)


def test_local_folder_index_restricts_shards(tmp_path):
    write(tmp_path / "m", model_files(shards=3))
    write(tmp_path / "m", {"model-00009-of-00009.safetensors": b"stale shard"})
    snap = resolve_model(str(tmp_path / "m"))
    assert snap.source == "local" and snap.root == str(tmp_path / "m")
    weights = [f.name for f in snap.weight_files]
    assert weights == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert "original/consolidated.00.pth" not in names(snap)
    assert "original/params.json" not in names(snap)  # sidecars: top level only
    assert "README.md" not in names(snap)
    assert any("model-00009-of-00009.safetensors" in n for n in snap.notes)
    assert snap.total_bytes == sum(os.path.getsize(f.path) for f in snap.files)


def test_local_folder_without_index_drops_consolidated(tmp_path):
    write(tmp_path, {"config.json": b"{}", "model.safetensors": b"m",
                     "consolidated.safetensors": b"c"})
    assert names(resolve_model(tmp_path)) == ["config.json", "model.safetensors"]
    write(tmp_path / "only", {"consolidated.safetensors": b"c"})
    assert names(resolve_model(tmp_path / "only")) == ["consolidated.safetensors"]


def test_index_naming_a_missing_shard_is_a_note(tmp_path):
    files = model_files(shards=2)
    del files["model-00002-of-00002.safetensors"]
    write(tmp_path, files)
    snap = resolve_model(tmp_path)
    assert [f.name for f in snap.weight_files] == ["model-00001-of-00002.safetensors"]
    assert any("model-00002-of-00002.safetensors" in n and "missing" in n for n in snap.notes)


def test_shards_in_natural_order(tmp_path):
    write(tmp_path, {f"model-{i}-of-10.safetensors": b"x" * i for i in range(1, 11)})
    weights = [f.name for f in resolve_model(tmp_path).weight_files]
    assert weights == [f"model-{i}-of-10.safetensors" for i in range(1, 11)]


def test_bin_fallback_with_index_and_training_leftovers(tmp_path):
    index = {"weight_map": {"a": "pytorch_model-00002-of-00002.bin",
                            "b": "pytorch_model-00001-of-00002.bin"}}
    write(tmp_path, {
        "config.json": b"{}",
        "vocab.txt": b"a\nb",
        "merges.txt": b"",
        "pytorch_model.bin.index.json": json.dumps(index).encode(),
        "pytorch_model-00001-of-00002.bin": b"1",
        "pytorch_model-00002-of-00002.bin": b"2",
        "pytorch_model.bin": b"old single file",
        "training_args.bin": b"t",
        "optimizer.pt": b"o",
    })
    snap = resolve_model(tmp_path)
    assert names(snap) == [
        "config.json", "merges.txt", "pytorch_model.bin.index.json", "vocab.txt",
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
    ]


def test_bin_and_pt_without_index(tmp_path):
    write(tmp_path, {"model.pt": b"p", "pytorch_model.bin": b"b", "scheduler.pt": b"s"})
    assert names(resolve_model(tmp_path)) == ["model.pt", "pytorch_model.bin"]


def test_safetensors_win_over_bin(tmp_path):
    write(tmp_path, {"model.safetensors": b"s", "pytorch_model.bin": b"b"})
    assert names(resolve_model(tmp_path)) == ["model.safetensors"]


def test_gguf_file_and_gguf_folder(tmp_path):
    write(tmp_path, {"qwen-q4.gguf": b"GGUF" * 10, "qwen-q8.gguf": b"GGUF" * 20,
                     "config.json": b"{}"})
    snap = resolve_model(tmp_path / "qwen-q4.gguf")
    assert snap.root == str(tmp_path)
    assert [(f.name, f.role, f.size) for f in snap.files] == [("qwen-q4.gguf", "weights", 40)]
    folder = resolve_model(tmp_path)
    assert names(folder) == ["config.json", "qwen-q4.gguf", "qwen-q8.gguf"]
    assert any("GGUF" in n for n in folder.notes)  # two quantisations: said so

    split = tmp_path / "split"
    write(split, {f"m-0000{i}-of-00003.gguf": b"g" for i in (3, 1, 2)})
    snap = resolve_model(split)
    assert names(snap) == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert not snap.notes


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pt"])
def test_single_weight_file(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"w" * 7)
    snap = resolve_model(path)
    assert [(f.name, f.path, f.size, f.role) for f in snap.files] == [
        (path.name, str(path), 7, "weights")
    ]


def test_single_file_that_is_not_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelNotFoundError, match="not a weight file"):
        resolve_model(tmp_path / "notes.txt")


def test_include_replaces_and_exclude_removes(tmp_path):
    write(tmp_path, model_files(shards=2))
    snap = resolve_model(tmp_path, include=["original/*"])
    assert names(snap) == ["original/params.json", "original/consolidated.00.pth"]
    assert [f.role for f in snap.files] == ["sidecar", "weights"]
    snap = resolve_model(tmp_path, include="*.safetensors", exclude=["consolidated*"])
    assert names(snap) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    snap = resolve_model(tmp_path, exclude=["tokenizer*", "*-00002-*"])
    assert names(snap) == ["config.json", "model.safetensors.index.json",
                           "model-00001-of-00002.safetensors"]
    snap = resolve_model(tmp_path, include=["original/"])
    assert len(snap.files) == 2
    with pytest.raises(ModelNotFoundError, match="no file matches include"):
        resolve_model(tmp_path, include=["*.onnx"])
    with pytest.raises(ModelNotFoundError, match="exclude"):
        resolve_model(tmp_path, exclude=["*"])


def test_include_on_hf_snapshot_follows_symlinks(hf_cache):
    snap = resolve_model(REPO, cache_dir=hf_cache, include=["original/*.pth"])
    assert names(snap) == ["original/consolidated.00.pth"]
    assert os.path.basename(os.path.dirname(snap.files[0].real_path)) == "blobs"


def test_two_names_one_blob_listed_once(tmp_path):
    cache = tmp_path / "hub"
    same = b"identical shard bytes"
    add_snapshot(cache, REPO, commit_of("dup"), {
        "config.json": b"{}",
        "model-00001-of-00002.safetensors": same,
        "model-00002-of-00002.safetensors": same,
    }, refs=("main",))
    snap = resolve_model(REPO, cache_dir=cache)
    assert names(snap) == ["config.json", "model-00001-of-00002.safetensors"]
    assert any("same file as model-00001-of-00002.safetensors" in n for n in snap.notes)


def test_hard_link_listed_once(tmp_path):
    write(tmp_path, {"a.safetensors": b"x"})
    os.link(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert names(resolve_model(tmp_path)) == ["a.safetensors"]


def test_dangling_symlink_loop_and_folder_are_skipped_with_notes(tmp_path):
    write(tmp_path, {"model-00001-of-00002.safetensors": b"1", "config.json": b"{}"})
    os.symlink("../blobs/deadbeef", tmp_path / "model-00002-of-00002.safetensors")
    os.symlink("loop2.json", tmp_path / "loop1.json")
    os.symlink("loop1.json", tmp_path / "loop2.json")
    os.mkdir(tmp_path / "extra.safetensors")
    snap = resolve_model(tmp_path)
    assert names(snap) == ["config.json", "model-00001-of-00002.safetensors"]
    notes = "\n".join(snap.notes)
    assert "model-00002-of-00002.safetensors: dangling symlink -> ../blobs/deadbeef" in notes
    assert "loop1.json: symlink loop" in notes
    assert "extra.safetensors: is a directory" in notes


def _resolve_in_thread(*args, **kwargs):
    """Run resolve_model in a daemon thread; a FIFO opened for reading would block forever,
    so a thread still alive after the join is the failure this guards against."""
    result: dict[str, object] = {}

    def target():
        try:
            result["snap"] = resolve_model(*args, **kwargs)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "resolve_model blocked (opened a FIFO?)"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["snap"]


def test_fifo_named_like_weights_and_index_never_blocks(tmp_path):
    write(tmp_path, {"config.json": b"{}", "model-00001-of-00002.safetensors": b"1",
                     "model-00002-of-00002.safetensors": b"2"})
    os.mkfifo(tmp_path / "model.safetensors")
    os.mkfifo(tmp_path / "model.safetensors.index.json")
    os.mkfifo(tmp_path / "tokenizer.json")
    snap = _resolve_in_thread(tmp_path)
    assert names(snap) == ["config.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors"]
    notes = "\n".join(snap.notes)
    assert "model.safetensors: is a FIFO" in notes
    assert "tokenizer.json: is a FIFO" in notes


def test_fifo_given_as_the_reference(tmp_path):
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(ModelNotFoundError, match="FIFO"):
        _resolve_in_thread(tmp_path / "model.safetensors")


def test_index_behind_symlink_to_fifo_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    os.symlink("pipe", tmp_path / "model.safetensors.index.json")
    write(tmp_path, {"model.safetensors": b"m"})
    snap = _resolve_in_thread(tmp_path)
    assert names(snap) == ["model.safetensors"]


def test_folder_without_weights_is_a_clear_error(tmp_path):
    write(tmp_path, {"config.json": b"{}", "tokenizer.json": b"{}", "README.md": b""})
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "no loadable weight files" in str(info.value)


def test_not_a_repo_id_and_missing(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(tmp_path / "missing" / "dir"))
    assert str(tmp_path / "missing" / "dir") in str(info.value)
    with pytest.raises(ModelNotFoundError):
        resolve_model("")


def test_bad_hub_argument():
    with pytest.raises(ValueError, match="hub"):
        resolve_model("acme/x", hub="pypi")


def test_resolution_imports_no_hub_library(tmp_path, hf_cache):
    """Resolution must not import huggingface_hub (the background-import race) nor any
    other heavy library."""
    code = (
        "import sys, headstart\n"
        f"snap = headstart.resolve_model({REPO!r}, cache_dir={str(hf_cache)!r})\n"
        "bad = sorted(m for m in ('huggingface_hub', 'modelscope', 'torch', 'transformers',"
        " 'safetensors', 'requests', 'httpx') if m in sys.modules)\n"
        "print(len(snap.files), bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["6", "[]"]


def test_ref_file_that_is_a_fifo_never_blocks(hf_cache):
    refs = os.path.join(hf_cache, "models--acme--tiny-llm", "refs")
    os.mkfifo(os.path.join(refs, "piped"))
    with pytest.raises(RevisionNotFoundError, match="FIFO"):
        _resolve_in_thread(REPO, revision="piped", cache_dir=hf_cache)
