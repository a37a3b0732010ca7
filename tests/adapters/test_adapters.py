"""Adapters, table-driven, on command lines taken from each project's own documentation.

Each case names its source. ``expect`` lists only the fields the case is about; every other
field is checked by the dedicated tests further down.
"""

from __future__ import annotations

import importlib
import itertools
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headstart.adapters import TargetFacts, detect, parse_invocation, vllm_accepts_forkserver
from headstart.adapters.registry import ADAPTERS, adapter_for
from headstart.adapters.vllm import accepts_forkserver_text

VLLM_MP = "VLLM_WORKER_MULTIPROC_METHOD"

# (id, argv, env, expected fields)
CASES: list[tuple[str, list[str], dict[str, str], dict[str, object]]] = [
    # --- vLLM -------------------------------------------------------------------------------
    # docs.vllm.ai Quickstart, "OpenAI-Compatible Server": vllm serve Qwen/Qwen2.5-1.5B-Instruct
    ("vllm-serve-positional", ["vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct"], {},
     {"adapter": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct", "loads_weights": True,
      "hub": "hf", "forkserver_env": VLLM_MP,
      "preload": ("torch", "transformers")}),
    # docs.vllm.ai "OpenAI-Compatible Server": flags after the model
    ("vllm-serve-flags-after-model",
     ["vllm", "serve", "NousResearch/Meta-Llama-3-8B-Instruct", "--dtype", "auto",
      "--api-key", "token-abc123"], {},
     {"model": "NousResearch/Meta-Llama-3-8B-Instruct", "loads_weights": True}),
    # docs.vllm.ai v0.5.0 "Engine Arguments": usage: -m vllm.entrypoints.openai.api_server
    ("vllm-api-server-module",
     ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "facebook/opt-125m"],
     {}, {"adapter": "vllm", "model": "facebook/opt-125m", "loads_weights": True}),
    # Engine Arguments: --revision, --download-dir, --tokenizer, --tokenizer-revision
    ("vllm-revision-cache-tokenizer",
     ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--revision", "abc123",
      "--download-dir", "/mnt/models", "--tokenizer", "hf-internal-testing/llama-tokenizer",
      "--tokenizer-revision", "v2"], {},
     {"model": "meta-llama/Llama-3.1-8B-Instruct", "revision": "abc123",
      "cache_dir": "/mnt/models", "tokenizer": "hf-internal-testing/llama-tokenizer",
      "tokenizer_revision": "v2"}),
    # --opt=value everywhere, and --model instead of the positional
    ("vllm-equals-form",
     ["vllm", "serve", "--model=facebook/opt-125m", "--revision=main",
      "--download-dir=/data/hf", "--load-format=safetensors"], {},
     {"model": "facebook/opt-125m", "revision": "main", "cache_dir": "/data/hf",
      "loads_weights": True}),
    # vLLM's parser maps --download_dir to --download-dir
    ("vllm-underscore-option",
     ["vllm", "serve", "facebook/opt-125m", "--download_dir", "/d", "--load_format", "pt"], {},
     {"cache_dir": "/d"}),
    # the positional model after value options and a boolean switch
    ("vllm-positional-after-options",
     ["vllm", "serve", "--port", "8000", "--trust-remote-code", "Qwen/Qwen3-0.6B"], {},
     {"model": "Qwen/Qwen3-0.6B"}),
    # tokenizer equal to the model is not a second reference
    ("vllm-tokenizer-same-as-model",
     ["vllm", "serve", "facebook/opt-125m", "--tokenizer", "facebook/opt-125m"], {},
     {"tokenizer": None}),
    # Engine Arguments --load-format: "dummy" initialises random weights
    ("vllm-load-format-dummy",
     ["vllm", "serve", "facebook/opt-125m", "--load-format", "dummy"], {},
     {"loads_weights": False}),
    # vllm/envs.py: VLLM_USE_MODELSCOPE is true only for the text "true"
    ("vllm-modelscope", ["vllm", "serve", "qwen/Qwen2.5-7B-Instruct"],
     {"VLLM_USE_MODELSCOPE": "True"}, {"hub": "modelscope"}),
    ("vllm-modelscope-1-is-false", ["vllm", "serve", "qwen/Qwen2.5-7B-Instruct"],
     {"VLLM_USE_MODELSCOPE": "1"}, {"hub": "hf"}),
    ("vllm-mp-method-env", ["vllm", "serve", "facebook/opt-125m"], {VLLM_MP: "spawn"},
     {"forkserver_env": VLLM_MP}),
    # docs "Data Parallel Deployment": API server only on node 0 (-dpl 0), engines on node 1
    ("vllm-dp-api-only",
     ["vllm", "serve", "deepseek-ai/DeepSeek-V3", "--data-parallel-size", "4",
      "--data-parallel-size-local", "0", "--data-parallel-address", "10.99.48.128",
      "--data-parallel-rpc-port", "13345"], {},
     {"model": "deepseek-ai/DeepSeek-V3", "loads_weights": False}),
    ("vllm-dp-headless-engines",
     ["vllm", "serve", "deepseek-ai/DeepSeek-V3", "--headless", "--data-parallel-size", "4",
      "--data-parallel-size-local", "2", "--data-parallel-start-rank", "2",
      "--data-parallel-address", "10.99.48.128", "--data-parallel-rpc-port", "13345"], {},
     {"model": "deepseek-ai/DeepSeek-V3", "loads_weights": True}),
    ("vllm-dpl-short-flag", ["vllm", "serve", "m/m", "-dpl", "0"], {},
     {"loads_weights": False}),
    # serve --help: -asc/--api-server-count runs API servers in separate processes
    ("vllm-api-server-count", ["vllm", "serve", "m/m", "--api-server-count", "4"], {},
     {"model": "m/m", "loads_weights": True}),
    # `vllm serve --help=ModelConfig` (serve DESCRIPTION), --help anywhere
    ("vllm-help", ["vllm", "serve", "--help"], {}, {"loads_weights": False, "preload": ()}),
    ("vllm-help-group", ["vllm", "serve", "--help=ModelConfig"], {}, {"loads_weights": False}),
    ("vllm-help-after-model", ["vllm", "serve", "facebook/opt-125m", "--port", "1", "-h"], {},
     {"loads_weights": False}),
    # vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch}
    ("vllm-version", ["vllm", "--version"], {}, {"loads_weights": False}),
    ("vllm-collect-env", ["vllm", "collect-env"], {}, {"loads_weights": False}),
    ("vllm-chat-client", ["vllm", "chat", "--url", "http://localhost:8000/v1"], {},
     {"loads_weights": False}),
    ("vllm-bench-serve-client", ["vllm", "bench", "serve", "--model", "m/m"], {},
     {"loads_weights": False}),
    ("vllm-bench-throughput-offline",
     ["vllm", "bench", "throughput", "--model", "facebook/opt-125m", "--input-len", "32"], {},
     {"model": "facebook/opt-125m", "loads_weights": True}),
    ("vllm-run-batch",
     ["vllm", "run-batch", "-i", "in.jsonl", "-o", "out.jsonl", "--model", "m/m"], {},
     {"model": "m/m", "loads_weights": True}),
    ("vllm-no-subcommand", ["vllm"], {}, {"loads_weights": False}),
    # interpreter path + options before -m
    ("vllm-cli-module-with-python-options",
     ["/opt/venv/bin/python3.11", "-u", "-X", "importtime", "-m", "vllm.entrypoints.cli.main",
      "serve", "facebook/opt-125m"], {},
     {"adapter": "vllm", "model": "facebook/opt-125m"}),
    # --- SGLang -----------------------------------------------------------------------------
    # docs.sglang.io "Server Arguments": multi-GPU tensor parallelism
    ("sglang-launch-server",
     ["python", "-m", "sglang.launch_server", "--model-path",
      "meta-llama/Meta-Llama-3-8B-Instruct", "--tp", "2"], {},
     {"adapter": "sglang", "model": "meta-llama/Meta-Llama-3-8B-Instruct",
      "loads_weights": True, "hub": "hf",
      "preload": ("torch", "transformers")}),
    # python/sglang/cli/main.py: `sglang serve`; sglang diffusion README example
    ("sglang-serve",
     ["sglang", "serve", "--model-path", "Qwen/Qwen-Image", "--num-gpus", "1", "--host",
      "127.0.0.1", "--port", "30000"], {},
     {"adapter": "sglang", "model": "Qwen/Qwen-Image", "loads_weights": True}),
    # server_args.py: --model is an alias of --model-path; --revision, --download-dir
    ("sglang-alias-and-options",
     ["python3", "-m", "sglang.launch_server", "--model=Qwen/Qwen3-0.6B", "--revision", "r1",
      "--download-dir", "/models", "--tokenizer-path", "Qwen/Qwen3-8B"], {},
     {"model": "Qwen/Qwen3-0.6B", "revision": "r1", "cache_dir": "/models",
      "tokenizer": "Qwen/Qwen3-8B"}),
    ("sglang-dummy", ["python", "-m", "sglang.launch_server", "--model-path", "m/m",
                      "--load-format", "dummy"], {}, {"loads_weights": False}),
    # SGLang docs "Use Models From ModelScope": SGLANG_USE_MODELSCOPE=true
    ("sglang-modelscope", ["python", "-m", "sglang.launch_server", "--model-path", "qwen/Qwen2-7B"],
     {"SGLANG_USE_MODELSCOPE": "true"}, {"hub": "modelscope"}),
    ("sglang-help", ["python", "-m", "sglang.launch_server", "--help"], {},
     {"loads_weights": False, "preload": ()}),
    ("sglang-version", ["sglang", "version"], {}, {"loads_weights": False}),
    # --- transformers -----------------------------------------------------------------------
    # huggingface.co/docs/transformers "Serve CLI": `transformers serve` (models load on demand)
    ("transformers-serve-bare", ["transformers", "serve"], {},
     {"adapter": "transformers", "model": None, "loads_weights": False}),
    # transformers/cli/serve.py: positional force_model, options before and after it
    ("transformers-serve-model",
     ["transformers", "serve", "--port", "8080", "--continuous-batching",
      "Qwen/Qwen2.5-0.5B-Instruct", "--device", "cpu"], {},
     {"model": "Qwen/Qwen2.5-0.5B-Instruct", "loads_weights": True,
      "preload": ("torch", "transformers"), "hub": "hf"}),
    # serve.py: GGUF weights are named `<repo>:<file>.gguf`
    ("transformers-serve-gguf",
     ["transformers", "serve", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_0.gguf"],
     {}, {"model": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "loads_weights": True}),
    ("transformers-serve-legacy-force-model",
     ["transformers", "serve", "--force-model", "Qwen/Qwen2.5-0.5B-Instruct"], {},
     {"model": "Qwen/Qwen2.5-0.5B-Instruct", "loads_weights": True}),
    # transformers/cli/chat.py: `transformers chat <model_id> <base_url>` is a client
    ("transformers-chat-client",
     ["transformers", "chat", "HuggingFaceTB/SmolLM3-3B", "http://localhost:8000/v1"], {},
     {"model": "HuggingFaceTB/SmolLM3-3B", "loads_weights": False}),
    # transformers 4.x: `transformers-cli chat --model_name_or_path ...` loaded it in-process
    ("transformers-cli-chat-legacy",
     ["transformers-cli", "chat", "--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct"], {},
     {"model": "Qwen/Qwen2.5-0.5B-Instruct", "loads_weights": True}),
    ("transformers-env", ["transformers", "env"], {}, {"loads_weights": False}),
    ("transformers-help", ["transformers", "serve", "Qwen/Qwen2.5-0.5B-Instruct", "--help"], {},
     {"loads_weights": False}),
    # --- TGI --------------------------------------------------------------------------------
    # TGI docs "Text-generation-launcher arguments": --model-id, --revision
    ("tgi-flags",
     ["text-generation-launcher", "--model-id", "teknium/OpenHermes-2.5-Mistral-7B",
      "--revision", "refs/pr/2", "--huggingface-hub-cache", "/data"], {},
     {"adapter": "tgi", "model": "teknium/OpenHermes-2.5-Mistral-7B", "revision": "refs/pr/2",
      "cache_dir": "/data", "loads_weights": True,
      "preload": ()}),
    ("tgi-equals-form",
     ["text-generation-launcher", "--model-id=gpt2", "--revision=main", "--port", "8080"], {},
     {"model": "gpt2", "revision": "main"}),
    # TGI sagemaker-entrypoint.sh: configuration from the environment only
    ("tgi-env-only", ["text-generation-launcher", "--port", "8080"],
     {"MODEL_ID": "bigscience/bloom", "REVISION": "abc", "HUGGINGFACE_HUB_CACHE": "/data"},
     {"model": "bigscience/bloom", "revision": "abc", "cache_dir": "/data",
      "loads_weights": True}),
    ("tgi-flag-beats-env", ["text-generation-launcher", "--model-id", "gpt2"],
     {"MODEL_ID": "bigscience/bloom"}, {"model": "gpt2"}),
    # launcher.md: [default: bigscience/bloom-560m]
    ("tgi-default-model", ["text-generation-launcher"], {},
     {"model": "bigscience/bloom-560m", "loads_weights": True}),
    ("tgi-version", ["text-generation-launcher", "-V"], {}, {"loads_weights": False}),
    ("tgi-help", ["text-generation-launcher", "--model-id", "gpt2", "--help"], {},
     {"loads_weights": False}),
    # the launcher starts `text-generation-server serve MODEL_ID --revision R` shards
    ("tgi-server-shard",
     ["text-generation-server", "serve", "gpt2", "--revision", "main", "--sharded"], {},
     {"model": "gpt2", "revision": "main", "loads_weights": True}),
    # --- llama.cpp --------------------------------------------------------------------------
    # llama.cpp tools/server/README.md: llama-server -m models/7B/ggml-model.gguf -c 2048
    ("llamacpp-m", ["llama-server", "-m", "models/7B/ggml-model.gguf", "-c", "2048"], {},
     {"adapter": "llama.cpp", "model": "models/7B/ggml-model.gguf", "loads_weights": True,
      "preload": (), "hub": None}),
    ("llamacpp-long", ["llama-server", "--model", "/m/q4.gguf", "--port", "8080"], {},
     {"model": "/m/q4.gguf"}),
    # README: -hf, -hfr, --hf-repo <user>/<model>[:quant]
    ("llamacpp-hf", ["llama-server", "-hf", "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"], {},
     {"model": "ggml-org/gemma-3-1b-it-GGUF", "hub": "hf", "loads_weights": True}),
    # README: (env: LLAMA_ARG_MODEL)
    ("llamacpp-env", ["llama-server", "--port", "8080"],
     {"LLAMA_ARG_MODEL": "/models/a.gguf"}, {"model": "/models/a.gguf"}),
    ("llamacpp-help", ["llama-server", "-m", "a.gguf", "--help"], {}, {"loads_weights": False}),
    # --- generic fallback -------------------------------------------------------------------
    # transformers examples: python run_clm.py --model_name_or_path openai-community/gpt2
    ("generic-script",
     ["python", "run_clm.py", "--model_name_or_path", "openai-community/gpt2", "--do_eval"], {},
     {"adapter": "generic", "model": "openai-community/gpt2", "loads_weights": True}),
    # llama-cpp-python docs: python -m llama_cpp.server --model models/7B/llama-model.gguf
    ("generic-module", ["python3", "-m", "llama_cpp.server", "--model",
                        "models/7B/llama-model.gguf"], {},
     {"adapter": "generic", "model": "models/7B/llama-model.gguf"}),
    ("generic-model-path-equals", ["myserver", "--model-path=/srv/m", "--revision", "r"], {},
     {"model": "/srv/m", "revision": "r", "loads_weights": True}),
    ("generic-model-id", ["./serve.sh", "--model-id", "a/b"], {}, {"model": "a/b"}),
    ("generic-model-name-or-path", ["srv", "--model-name-or-path", "a/b"], {}, {"model": "a/b"}),
    ("generic-unknown", ["uvicorn", "app:app", "--port", "8000"], {},
     {"adapter": "generic", "model": None, "loads_weights": False}),
    ("generic-help", ["srv", "--model", "a/b", "--help"], {}, {"loads_weights": False}),
    ("generic-empty", [], {}, {"adapter": "generic", "model": None, "loads_weights": False}),
    ("python-repl", ["python3"], {}, {"model": None}),
]


@pytest.mark.parametrize(("argv", "env", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_detect(argv: list[str], env: dict[str, str], expect: dict[str, object]) -> None:
    facts = detect(argv, env)
    assert isinstance(facts, TargetFacts)
    got = {key: getattr(facts, key) for key in expect}
    assert got == expect, facts.notes


def test_case_ids_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_adapter_has_a_case() -> None:
    names = {detect(c[1], c[2]).adapter for c in CASES}
    assert names == {"vllm", "sglang", "transformers", "tgi", "llama.cpp", "generic"}


def test_facts_are_frozen_and_notes_explain() -> None:
    facts = detect(["vllm", "serve", "m/m", "--data-parallel-size-local", "0"], {})
    with pytest.raises(AttributeError):
        facts.model = "x"  # type: ignore[misc]
    assert any("API server only" in note for note in facts.notes)


def test_detect_reads_only_the_given_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ID", "from/os-environ")
    monkeypatch.setenv("VLLM_USE_MODELSCOPE", "true")
    assert detect(["text-generation-launcher"], {}).model == "bigscience/bloom-560m"
    assert detect(["vllm", "serve", "m/m"], {}).hub == "hf"


# --- --config files --------------------------------------------------------------------------


def test_vllm_config_file(tmp_path: Path) -> None:
    # docs.vllm.ai "OpenAI-Compatible Server" / serve --config: a YAML of serve options
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent("""\
        # vllm serve --config config.yaml
        model: "meta-llama/Llama-3.1-8B-Instruct"
        revision: 'v1'   # pinned
        download_dir: /mnt/cache
        host: "127.0.0.1"
        port: 6379
        compilation-config:
          level: 3
        """))
    facts = detect(["vllm", "serve", "--config", str(config)], {})
    assert (facts.model, facts.revision, facts.cache_dir) == (
        "meta-llama/Llama-3.1-8B-Instruct", "v1", "/mnt/cache")
    # the command line wins over the file
    facts = detect(["vllm", "serve", "other/model", "--config", str(config), "--revision", "v2"],
                   {})
    assert (facts.model, facts.revision) == ("other/model", "v2")


def test_sglang_config_file(tmp_path: Path) -> None:
    # docs.sglang.io "Server Arguments": python -m sglang.launch_server --config config.yaml
    config = tmp_path / "config.yaml"
    config.write_text("model-path: meta-llama/Meta-Llama-3-8B-Instruct\nhost: 0.0.0.0\n"
                      "port: 30000\ntensor-parallel-size: 2\nenable-metrics: true\n")
    facts = detect(["python", "-m", "sglang.launch_server", "--config", str(config)], {})
    assert facts.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert facts.loads_weights


def test_unreadable_config_is_a_note(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    facts = detect(["vllm", "serve", "m/m", "--config", str(missing)], {})
    assert facts.model == "m/m"
    assert any("unreadable" in note for note in facts.notes)


@pytest.mark.parametrize("server", ["vllm", "sglang"])
def test_config_fifo_never_blocks(tmp_path: Path, server: str) -> None:
    """Opening a FIFO for reading blocks until a writer comes: detect() must not open it."""
    import os
    import threading

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    argv = (["vllm", "serve", "m/m", "--config", str(fifo)] if server == "vllm"
            else ["python", "-m", "sglang.launch_server", "--model-path", "m/m",
                  "--config", str(fifo)])
    result: list[TargetFacts] = []
    thread = threading.Thread(target=lambda: result.append(detect(argv, {})), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "detect() blocked on a FIFO given as --config"
    assert result[0].model == "m/m"
    assert any("unreadable" in note and "FIFO" in note for note in result[0].notes)


# --- program parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "name", "args", "via"), [
    (["python3", "-u", "-m", "pkg.mod", "a"], "pkg.mod", ["a"], "module"),
    (["python", "-X", "importtime", "-W", "ignore", "-m", "m", "-x"], "m", ["-x"], "module"),
    (["python", "-Wignore", "-m", "m"], "m", [], "module"),
    (["python", "-um", "m", "b"], "m", ["b"], "module"),
    (["python", "-mm"], "m", [], "module"),
    (["python", "-OO", "-B", "-m", "m"], "m", [], "module"),
    (["/usr/bin/python3.12", "/srv/run_clm.py", "--x", "1"], "run_clm", ["--x", "1"], "script"),
    (["python3.13t", "script", "a"], "script", ["a"], "script"),
    (["python", "-c", "print(1)", "a"], "-c", ["a"], "code"),
    (["python", "-", "a"], "-", ["a"], "stdin"),
    (["python"], "", [], "interpreter"),
    (["python", "-m"], "", [], "interpreter"),
    (["pypy3", "-m", "m"], "m", [], "module"),
    (["/opt/venv/bin/vllm", "serve", "m"], "vllm", ["serve", "m"], "program"),
    (["python-config", "--libs"], "python-config", ["--libs"], "program"),
])
def test_parse_invocation(argv: list[str], name: str, args: list[str], via: str) -> None:
    inv = parse_invocation(argv)
    assert (inv.name, inv.args, inv.via) == (name, args, via)


def test_adapters_never_raise_on_odd_argv() -> None:
    # Adapters called directly (detect() would hide a failure behind its catch-all).
    pool = ["serve", "chat", "bench", "throughput", "--model", "--model=", "-m", "-hf", "--help=",
            "--config", "--revision", "--", "-", "x", "a/b:c.gguf", "-dpl", "0", "--headless",
            "--load-format", "dummy", "=", "-1", "--no-x", "--force-model", "-V", ""]
    rng = random.Random(1234)
    seen = 0
    for (module, name) in set(ADAPTERS.values()) | {("generic", "x")}:
        adapter = adapter_for(module)
        for _ in range(300):
            args = [rng.choice(pool) for _ in range(rng.randrange(0, 7))]
            facts = adapter(name, args, {"MODEL_ID": "m", "LLAMA_ARG_HF_REPO": "r/r:Q"})
            assert isinstance(facts, TargetFacts)
            seen += 1
    for args in itertools.permutations(["serve", "--model", "m", "--help"]):
        assert not detect(["vllm", *args], {}).loads_weights
    assert seen == 300 * (len(set(ADAPTERS.values())) + 1)


def test_import_is_light() -> None:
    code = ("import sys, headstart.adapters as a; "
            "a.detect(['vllm', 'serve', 'm'], {}); "
            "heavy = ['torch', 'transformers', 'vllm', 'sglang', 'yaml', 'importlib.metadata', "
            "'numpy', 'huggingface_hub']; "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


# --- vllm_accepts_forkserver -----------------------------------------------------------------

# Shaped like vllm/envs.py up to mid-2025 (e.g. v0.9): a plain getenv, no validation.
ENVS_GETENV = '''
environment_variables: dict[str, Callable[[], Any]] = {
    # Use dedicated multiprocess context for workers.
    # Both spawn and fork work
    "VLLM_WORKER_MULTIPROC_METHOD":
    lambda: os.getenv("VLLM_WORKER_MULTIPROC_METHOD", "fork"),

    # Path to the cache for storing downloaded assets
    "VLLM_ASSETS_CACHE":
    lambda: os.path.expanduser(os.getenv("VLLM_ASSETS_CACHE", "x")),
}
'''

# Shaped like later releases: env_with_choices rejects anything but spawn/fork.
ENVS_CHOICES = '''
environment_variables: dict[str, Callable[[], Any]] = {
    # Use dedicated multiprocess context for workers.
    # Both spawn and fork work; forkserver is not supported
    "VLLM_WORKER_MULTIPROC_METHOD": env_with_choices(
        "VLLM_WORKER_MULTIPROC_METHOD", "fork", ["spawn", "fork"]  # no forkserver (#40442)
    ),
    # Path to the cache for storing downloaded assets
    "VLLM_ASSETS_CACHE": lambda: os.path.expanduser(
        os.getenv("VLLM_ASSETS_CACHE", "forkserver-unrelated")
    ),
}
'''

# Shaped like vLLM PR #40331 (the seed): forkserver added to the choices.
ENVS_CHOICES_FORKSERVER = ENVS_CHOICES.replace('["spawn", "fork"]',
                                               '["spawn", "fork", "forkserver"]')

# Choices held in a module constant.
ENVS_NAMED = '''
MP_METHODS = ("spawn", "fork", "forkserver")
environment_variables = {
        "VLLM_WORKER_MULTIPROC_METHOD": env_with_choices(
            "VLLM_WORKER_MULTIPROC_METHOD", "fork", MP_METHODS),
        "VLLM_ASSETS_CACHE": lambda: "",
}
'''

ENVS_UNKNOWN = '''
environment_variables = {
    "VLLM_WORKER_MULTIPROC_METHOD": _resolve_mp_method,
}
'''


@pytest.mark.parametrize(("text", "expected"), [
    (ENVS_GETENV, True),
    (ENVS_CHOICES, False),
    (ENVS_CHOICES_FORKSERVER, True),
    (ENVS_NAMED, True),
    (ENVS_NAMED.replace(', "forkserver"', ""), False),
    (ENVS_UNKNOWN, None),
    ("environment_variables = {}\n", None),
], ids=["getenv", "choices", "choices-forkserver", "named", "named-no-forkserver", "unknown",
        "absent"])
def test_accepts_forkserver_text(text: str, expected: bool | None) -> None:
    assert accepts_forkserver_text(text) is expected


def _fake_vllm(root: Path, envs_text: str) -> Path:
    pkg = root / "vllm"
    pkg.mkdir()
    # Importing this package would fail loudly: proves the check only reads text.
    (pkg / "__init__.py").write_text("raise RuntimeError('vllm must not be imported')\n")
    (pkg / "envs.py").write_text(envs_text)
    return pkg


def test_vllm_accepts_forkserver_reads_installed_file(tmp_path: Path) -> None:
    for name, text in (("choices", ENVS_CHOICES), ("getenv", ENVS_GETENV)):
        (tmp_path / name).mkdir()
        _fake_vllm(tmp_path / name, text)
    assert vllm_accepts_forkserver([str(tmp_path / "choices")]) is False
    assert vllm_accepts_forkserver([str(tmp_path / "getenv")]) is True
    assert vllm_accepts_forkserver([str(tmp_path)]) is None  # not installed there
    assert "vllm" not in sys.modules


def test_vllm_accepts_forkserver_via_sys_path(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("a real vLLM is installed; covered by the explicit-path test")
    assert vllm_accepts_forkserver() is None  # not installed
    _fake_vllm(tmp_path, ENVS_CHOICES_FORKSERVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert vllm_accepts_forkserver() is True
    assert "vllm" not in sys.modules


def test_vllm_accepts_forkserver_unreadable(tmp_path: Path) -> None:
    pkg = _fake_vllm(tmp_path, ENVS_GETENV)
    (pkg / "envs.py").unlink()
    assert vllm_accepts_forkserver([str(tmp_path)]) is None


def test_vllm_own_prefetch_is_noted_and_changes_nothing_else():
    from headstart.adapters import detect

    plain = detect(["vllm", "serve", "/m"], {})
    own = detect(["vllm", "serve", "/m", "--safetensors-load-strategy", "prefetch"], {})
    assert any("safetensors-load-strategy prefetch" in n for n in own.notes)
    assert (own.model, own.loads_weights, own.zygote) == (plain.model, True, True)


# transformers 5.25's `EngineClient.start_process` (cli/serving/model_manager.py), abridged;
# 5.24's module of the same name loads the model in the server's own process.
MODEL_MANAGER_SPAWN = textwrap.dedent("""
    import multiprocessing
    def start_process(model):
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=print, name="model", daemon=True)
        process.start()
""")
MODEL_MANAGER_IN_PROCESS = "import threading\ndef load(model):\n    return model\n"


def _fake_transformers(root: Path, model_manager: str | None) -> Path:
    pkg = root / "transformers"
    (pkg / "cli" / "serving").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    if model_manager is not None:
        (pkg / "cli" / "serving" / "model_manager.py").write_text(model_manager)
    return pkg


@pytest.mark.parametrize(("source", "answer"), [
    (MODEL_MANAGER_SPAWN, True), (MODEL_MANAGER_IN_PROCESS, False), (None, False),
])
def test_transformers_spawns_model_process_from_its_source(tmp_path, source, answer):
    from headstart.adapters.transformers import spawns_model_process

    _fake_transformers(tmp_path, source)
    assert spawns_model_process([str(tmp_path / "absent"), str(tmp_path)]) is answer
    assert "transformers" not in sys.modules or sys.modules["transformers"].__file__ != str(
        tmp_path / "transformers" / "__init__.py")


def test_transformers_spawn_check_unknown(tmp_path):
    from headstart.adapters.transformers import spawns_model_process

    assert spawns_model_process([str(tmp_path)]) is None  # not installed there
    pkg = _fake_transformers(tmp_path, None)
    (pkg / "cli" / "serving" / "model_manager.py").mkdir()  # not a regular file
    assert spawns_model_process([str(tmp_path)]) is None


def test_transformers_serve_zygote_follows_the_installed_version(tmp_path, monkeypatch):
    from headstart.plan import RunOptions, build_plan

    argv = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", "/models/x"]
    facts = detect(argv, {})
    assert facts.zygote and facts.zygote_check and "transformers.cli.transformers" in \
        facts.zygote_preload
    plan = build_plan(RunOptions(), argv, env={})
    if not plan.launch.in_process:
        pytest.skip("transformers is not installed in this interpreter")
    for source, on in ((MODEL_MANAGER_SPAWN, True), (MODEL_MANAGER_IN_PROCESS, False)):
        root = tmp_path / str(on)
        _fake_transformers(root, source)
        monkeypatch.setattr(sys, "path", [str(root), *sys.path])
        plan = build_plan(RunOptions(), argv, env={})
        assert plan.zygote is on, plan.zygote_reason
        if not on:
            assert plan.zygote_reason == "the installed transformers starts no spawned workers"
            assert build_plan(RunOptions(zygote=True), argv, env={}).zygote  # asked for
        monkeypatch.undo()
