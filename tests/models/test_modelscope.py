"""resolve_model against the ModelScope cache layouts (see headstart.models.modelscope)."""

from __future__ import annotations

import os
import threading

import pytest

from headstart.errors import ModelNotFoundError
from headstart.models.resolve import resolve_model

MODEL = "Qwen/Qwen2.5-0.5B"
ESCAPED = "Qwen2___5-0___5B"


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                 "MODELSCOPE_CACHE", "HEADSTART_HUB", "VLLM_USE_MODELSCOPE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def make_model(folder, revision: str | None = "v1.0.0") -> str:
    """A ModelScope-downloaded model folder, with its hidden bookkeeping files."""
    os.makedirs(folder, exist_ok=True)
    files = {
        "config.json": b"{}",
        "tokenizer.json": b"{}",
        "model.safetensors": b"w" * 64,
        "configuration.json": b'{"framework": "pytorch"}',
        ".msc": b"pickled index",
        ".mdl": b"pickled meta",
    }
    if revision:
        files[".mv"] = f"Revision:{revision},CreatedAt:1718000000".encode()
    for name, content in files.items():
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(content)
    return str(folder)


def names(snap) -> list[str]:
    return [f.name for f in snap.files]


def test_current_layout_under_modelscope_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    root = make_model(tmp_path / "ms" / "models" / "Qwen" / ESCAPED)
    snap = resolve_model(MODEL, hub="modelscope")
    assert snap.root == root and snap.source == "modelscope"
    assert snap.commit == "v1.0.0"
    assert names(snap) == ["config.json", "configuration.json", "tokenizer.json",
                           "model.safetensors"]  # hidden .msc/.mdl/.mv are not read


def test_default_root_is_home_cache(clean_env):
    root = make_model(clean_env / ".cache" / "modelscope" / "hub" / "models" / "Qwen" / ESCAPED)
    assert resolve_model(MODEL, hub="modelscope").root == root


def test_dotted_symlink_next_to_escaped_folder(clean_env):
    org = clean_env / ".cache" / "modelscope" / "hub" / "models" / "Qwen"
    root = make_model(org / ESCAPED)
    os.symlink(root, org / "Qwen2.5-0.5B", target_is_directory=True)
    snap = resolve_model(MODEL, hub="modelscope")
    assert snap.root == root  # the escaped folder, as modelscope's snapshot_download returns


def test_legacy_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    # oldest: <root>/ORG/NAME, name not escaped
    root = make_model(tmp_path / "ms" / "Qwen" / "Qwen2.5-0.5B", revision=None)
    snap = resolve_model(MODEL, hub="modelscope")
    assert snap.root == root and snap.commit is None
    # MODELSCOPE_CACHE as the parent of hub/
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "parent"))
    root = make_model(tmp_path / "parent" / "hub" / "Qwen" / ESCAPED)
    assert resolve_model(MODEL, hub="modelscope").root == root


def test_empty_new_folder_does_not_hide_populated_old_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    os.makedirs(tmp_path / "ms" / "models" / "Qwen" / ESCAPED)  # created, never filled
    root = make_model(tmp_path / "ms" / "Qwen" / ESCAPED)
    assert resolve_model(MODEL, hub="modelscope").root == root


def test_explicit_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "elsewhere"))
    root = make_model(tmp_path / "download-dir" / "Qwen" / ESCAPED)
    snap = resolve_model(MODEL, hub="modelscope", cache_dir=tmp_path / "download-dir")
    assert snap.root == root


def test_bare_name_uses_default_group(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    root = make_model(tmp_path / "ms" / "models" / "damo" / "nlp_model")
    assert resolve_model("nlp_model", hub="modelscope").root == root


@pytest.mark.parametrize(
    ("env", "value", "selected"),
    [("HEADSTART_HUB", "modelscope", True), ("VLLM_USE_MODELSCOPE", "true", True),
     ("VLLM_USE_MODELSCOPE", "True", True), ("VLLM_USE_MODELSCOPE", "1", False),
     ("VLLM_USE_MODELSCOPE", "false", False)],
)
def test_selected_by_environment(tmp_path, monkeypatch, env, value, selected):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    make_model(tmp_path / "ms" / "models" / "Qwen" / ESCAPED)
    monkeypatch.setenv(env, value)
    if selected:
        assert resolve_model(MODEL).source == "modelscope"
    else:  # vLLM only honours "true": the HF cache is searched, and named in the error
        with pytest.raises(ModelNotFoundError, match=r"models--Qwen--Qwen2\.5-0\.5B"):
            resolve_model(MODEL)


def test_explicit_hub_beats_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    make_model(tmp_path / "ms" / "models" / "Qwen" / ESCAPED)
    monkeypatch.setenv("VLLM_USE_MODELSCOPE", "true")
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        resolve_model(MODEL, hub="hf")
    monkeypatch.setenv("HEADSTART_HUB", "hf")  # headstart's own variable wins over vLLM's
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        resolve_model(MODEL)


def test_revision_mismatch_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    make_model(tmp_path / "ms" / "models" / "Qwen" / ESCAPED, revision="v1.0.0")
    snap = resolve_model(MODEL, hub="modelscope", revision="v2.0.0")
    assert snap.revision == "v2.0.0" and snap.commit == "v1.0.0"
    assert any("v1.0.0" in n and "v2.0.0" in n for n in snap.notes)
    assert not resolve_model(MODEL, hub="modelscope", revision="v1.0.0").notes


def test_version_file_that_is_a_fifo_never_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    root = make_model(tmp_path / "ms" / "models" / "Qwen" / ESCAPED, revision=None)
    os.mkfifo(os.path.join(root, ".mv"))
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("snap", resolve_model(MODEL, hub="modelscope")),
        daemon=True,
    )
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "resolve_model blocked on a FIFO"
    assert result["snap"].commit is None


def test_not_found_names_every_candidate(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(MODEL, hub="modelscope")
    msg = str(info.value)
    ms = str(tmp_path / "ms")
    for path in (
        os.path.join(ms, "models", "Qwen", ESCAPED),
        os.path.join(ms, "models", "Qwen", "Qwen2.5-0.5B"),
        os.path.join(ms, "Qwen", ESCAPED),
        os.path.join(ms, "Qwen", "Qwen2.5-0.5B"),
        os.path.join(ms, "hub", "Qwen", ESCAPED),
        os.path.join(ms, "hub", "Qwen", "Qwen2.5-0.5B"),
        str(tmp_path / "Qwen" / "Qwen2.5-0.5B"),
    ):
        assert path in msg
    assert "Hugging Face" not in msg


def test_modelscope_folder_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    folder = tmp_path / "ms" / "models" / "Qwen" / ESCAPED
    os.makedirs(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no loadable weight files"):
        resolve_model(MODEL, hub="modelscope")
