"""Which files of a model folder a server reads, and in what order.

Default selection (what vLLM, SGLang, ``transformers`` and TGI load):

* **Weights**, first kind present wins:

  1. ``*.safetensors`` at the top of the folder. When a ``*.safetensors.index.json`` exists,
     only the shards its ``weight_map`` names (``model.safetensors.index.json`` wins over any
     other index), so ``consolidated.safetensors`` or ``original/`` are not read. Without an
     index, ``consolidated*.safetensors`` is dropped when other safetensors exist (Mistral
     repos ship both; servers read the HF-format shards).
  2. ``*.bin`` / ``*.pt``, restricted by ``pytorch_model.bin.index.json`` (or another
     ``*.bin.index.json``) the same way; training leftovers (``optimizer.pt``,
     ``training_args.bin``, ...) are never weights.
  3. ``*.gguf`` when the folder has nothing else (all of them; a note says so when they
     are not the parts of one split file).

* **Sidecars**: top-level ``*.json``, ``tokenizer.model``, ``*tokenizer*``, ``*.tiktoken``,
  ``vocab.*``, ``merges.txt``, ``*.jinja``. Only the top level: loaders read config and
  tokenizer files from the model folder itself, and subfolders (``original/``, ``onnx/``,
  ``gguf/``) belong to other runtimes.

``include`` (fnmatch globs on the ``/``-separated relative name, searched recursively, a
trailing ``/`` meaning "everything below") *replaces* the default selection, as
``huggingface_hub``'s ``allow_patterns`` does; ``exclude`` then removes matches from whatever
was selected. ``*`` matches ``/`` too (fnmatch), so ``*.safetensors`` also finds
``original/x.safetensors``.

Order: sidecars first (``config.json`` first, then by name: they are tiny and read first by
config and tokenizer init), then weights in the order loaders read them: shard names
naturally sorted (``sorted(set(weight_map.values()))`` for zero-padded names, as
``transformers`` and vLLM iterate them).

Robustness: every candidate is ``stat``-ed (following symlinks), never opened, except small
index files, which are opened with ``O_NONBLOCK`` and checked to be regular files. Dangling
symlinks, symlink loops, unreadable entries, FIFOs, sockets, devices and folders named like
weight files are skipped with a note. Two names that lead to one file (same ``st_dev`` and
``st_ino``) are listed once, at the first position.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Sequence

from headstart.errors import NoLoadableFilesError
from headstart.models.snapshot import Role, SnapshotFile
from headstart.pagecache.pathcheck import check_path, read_small_regular_file

__all__ = [
    "SIDECAR_PATTERNS",
    "WEIGHT_SUFFIXES",
    "NoLoadableFilesError",
    "natural_key",
    "role_of",
    "select_files",
    "single_file",
]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SIDECAR_PATTERNS = (
    "*.json",
    "tokenizer.model",
    "*tokenizer*",
    "*.tiktoken",
    "vocab.*",
    "merges.txt",
    "*.jinja",
)
# Saved by Trainer next to checkpoints; no server loads them as weights.
_TRAINING_FILES = frozenset(
    {
        "training_args.bin",
        "optimizer.bin",
        "optimizer.pt",
        "scheduler.pt",
        "scaler.pt",
        "rng_state.pth",
    }
)
_MAX_INDEX_BYTES = 256 * 1024 * 1024  # real indexes are a few MiB; refuse to slurp more


def natural_key(name: str) -> list[object]:
    """``model-2-of-10`` before ``model-10-of-10``; identical to ``sorted`` for padded names."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def role_of(name: str) -> Role:
    base = name.rsplit("/", 1)[-1]
    if name.endswith(WEIGHT_SUFFIXES) and base not in _TRAINING_FILES:
        return "weights"
    return "sidecar"


def _stat_regular(path: str, name: str, notes: list[str]) -> os.stat_result | None:
    """``os.stat`` (following symlinks, opening nothing); ``None`` plus a note unless regular."""
    reason, st = check_path(path)
    if st is None:
        if reason == "dangling symlink":
            reason += f" -> {_readlink(path)}"
        notes.append(f"skipped {name}: {reason}")
    return st


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _top_level(root: str, notes: list[str]) -> dict[str, os.stat_result]:
    """Regular files at the top of ``root`` (name -> stat); hidden names are ignored."""
    out: dict[str, os.stat_result] = {}
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise NoLoadableFilesError(f"cannot list folder: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue  # .cache/ (huggingface_hub local_dir), .msc/.mdl/.mv (ModelScope), .git
        path = entry.path
        try:
            # d_type from the listing: no stat for names we skip (README.md, images...)
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if name.endswith(WEIGHT_SUFFIXES):
                notes.append(f"skipped {name}: is a directory")
            continue
        if not _interesting(name):
            continue  # README.md, LICENSE, images: never stat-ed, never noted
        st = _stat_regular(path, name, notes)
        if st is not None:
            out[name] = st
    return out


def _interesting(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or _is_sidecar(name)


def _is_sidecar(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SIDECAR_PATTERNS)


def _walk(root: str, notes: list[str]) -> dict[str, os.stat_result]:
    """Every regular file below ``root`` by relative ``/`` name (for ``include``)."""
    out: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            st = _stat_regular(os.path.join(dirpath, name), rel, notes)
            if st is not None:
                out[rel] = st
        # os.walk lists symlinks to folders as folders and does not follow them; a symlink
        # to a file that is dangling lands in filenames, so _stat_regular notes it.
    return out


def _matches(name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _index_shards(
    root: str, index_names: list[str], notes: list[str]
) -> tuple[list[str] | None, list[str]]:
    """Shard names from ``weight_map`` of the given indexes; ``None`` when none was usable."""
    shards: list[str] = []
    used: list[str] = []
    for index_name in index_names:
        try:
            data = json.loads(read_small_regular_file(os.path.join(root, index_name),
                                                     _MAX_INDEX_BYTES))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"ignored {index_name}: {exc}")
            continue
        used.append(index_name)
        for value in weight_map.values():
            if isinstance(value, str) and value not in shards:
                shards.append(value)
    if not used:
        return None, used
    return shards, used


def _safe_rel(name: str) -> str | None:
    """Normalise a shard name from an index; ``None`` when it would leave the folder."""
    norm = os.path.normpath(name).replace(os.sep, "/")
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return norm


def _pick_weights(
    root: str, top: dict[str, os.stat_result], notes: list[str]
) -> list[tuple[str, os.stat_result]]:
    """The default weight files, in load order."""
    families = (
        ((".safetensors",), "model.safetensors.index.json", (".safetensors.index.json",)),
        ((".bin", ".pt"), "pytorch_model.bin.index.json", (".bin.index.json", ".pt.index.json")),
    )
    for suffixes, preferred_index, index_suffixes in families:
        present = [
            n for n in top if n.endswith(suffixes) and n not in _TRAINING_FILES
        ]
        indexes = sorted(n for n in top if n.endswith(index_suffixes))
        if preferred_index in indexes:
            indexes = [preferred_index]
        if not present and not indexes:
            continue
        shards, used = _index_shards(root, indexes, notes) if indexes else (None, [])
        if shards is not None:
            picked: list[tuple[str, os.stat_result]] = []
            for shard in sorted(shards, key=natural_key):
                rel = _safe_rel(shard)
                if rel is None:
                    notes.append(f"ignored shard {shard!r} named in {used[0]}: outside the folder")
                    continue
                shard_path = os.path.join(root, *rel.split("/"))
                st = top.get(rel)
                if st is None:
                    if not os.path.lexists(shard_path):
                        notes.append(f"shard {rel} named in {', '.join(used)} is missing")
                        continue
                    if "/" not in rel:
                        continue  # top-level entry that _top_level already noted as unusable
                    st = _stat_regular(shard_path, rel, notes)
                    if st is None:
                        continue
                picked.append((rel, st))
            unread = sorted(set(present) - {name for name, _ in picked})
            if unread:
                notes.append(
                    f"not read (not in {', '.join(used)}): {', '.join(unread)}"
                )
            if picked:
                return picked
            continue
        names = sorted(present, key=natural_key)
        if suffixes == (".safetensors",):
            consolidated = [n for n in names if n.startswith("consolidated")]
            if consolidated and len(consolidated) < len(names):
                notes.append(
                    f"not read (Mistral-format duplicate): {', '.join(consolidated)}"
                )
                names = [n for n in names if n not in consolidated]
        if names:
            return [(n, top[n]) for n in names]
    ggufs = sorted((n for n in top if n.endswith(".gguf")), key=natural_key)
    if len(ggufs) > 1 and not all(re.search(r"-\d+-of-\d+\.gguf$", n) for n in ggufs):
        notes.append(
            f"{len(ggufs)} GGUF files that are not parts of one split file; all selected "
            "(name the one the server loads, or use include)"
        )
    return [(n, top[n]) for n in ggufs]


def _sidecar_key(name: str) -> tuple[int, list[object]]:
    return (0 if name == "config.json" else 1, natural_key(name))


def _dedupe(
    root: str, chosen: Iterable[tuple[str, os.stat_result, Role]], notes: list[str]
) -> list[SnapshotFile]:
    seen: dict[tuple[int, int], str] = {}
    out: list[SnapshotFile] = []
    for name, st, role in chosen:
        key = (st.st_dev, st.st_ino)
        if key in seen:
            notes.append(f"skipped {name}: same file as {seen[key]}")
            continue
        seen[key] = name
        path = os.path.join(root, *name.split("/"))
        out.append(SnapshotFile(name, path, os.path.realpath(path), st.st_size, role))
    return out


def select_files(
    root: str,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    notes: list[str],
) -> list[SnapshotFile]:
    """The files of folder ``root`` a server reads, in read order (see the module docstring).

    Appends what it skipped and why to ``notes``. Raises :class:`NoLoadableFilesError` when
    nothing is left.
    """
    chosen: list[tuple[str, os.stat_result, Role]]
    if include:
        found = _walk(root, notes)
        names = [n for n in found if _matches(n, include)]
        sidecars = sorted((n for n in names if role_of(n) == "sidecar"), key=_sidecar_key)
        weights = sorted((n for n in names if role_of(n) == "weights"), key=natural_key)
        chosen = [(n, found[n], "sidecar") for n in sidecars]
        chosen += [(n, found[n], "weights") for n in weights]
        if not chosen:
            raise NoLoadableFilesError(f"no file matches include {list(include)}")
    else:
        top = _top_level(root, notes)
        weights_picked = _pick_weights(root, top, notes)
        if not weights_picked:
            raise NoLoadableFilesError(
                "no loadable weight files (*.safetensors, *.bin, *.pt or *.gguf)"
            )
        weight_names = {n for n, _ in weights_picked}
        sidecars = sorted(
            (n for n in top if n not in weight_names and _is_sidecar(n)), key=_sidecar_key
        )
        chosen = [(n, top[n], "sidecar") for n in sidecars]
        chosen += [(n, st, "weights") for n, st in weights_picked]
    if exclude:
        kept = [c for c in chosen if not _matches(c[0], exclude)]
        if len(kept) < len(chosen):
            notes.append(f"excluded {len(chosen) - len(kept)} file(s) by {list(exclude)}")
        chosen = kept
        if not chosen:
            raise NoLoadableFilesError(f"every selected file matches exclude {list(exclude)}")
    return _dedupe(root, chosen, notes)


def single_file(
    path: str,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    notes: list[str],
) -> list[SnapshotFile]:
    """A single weight file as a one-file selection (its folder is the snapshot root)."""
    name = os.path.basename(path)
    if not name.endswith(WEIGHT_SUFFIXES):
        raise NoLoadableFilesError(
            f"not a weight file (expected one of {', '.join(WEIGHT_SUFFIXES)})"
        )
    st = _stat_regular(path, name, notes)
    if st is None:
        raise NoLoadableFilesError(notes[-1].split(": ", 1)[-1] if notes else "unreadable")
    if include and not _matches(name, include):
        raise NoLoadableFilesError(f"{name} does not match include {list(include)}")
    if exclude and _matches(name, exclude):
        raise NoLoadableFilesError(f"{name} matches exclude {list(exclude)}")
    return _dedupe(os.path.dirname(path), [(name, st, "weights")], notes)
