"""Offline lookup of a model in the ModelScope cache, with the stdlib only.

Used when ``hub="modelscope"``, or with ``hub="auto"`` when ``HEADSTART_HUB=modelscope`` or
vLLM's ``VLLM_USE_MODELSCOPE`` is ``true`` (vLLM compares ``.lower() == "true"``; so do we).

ModelScope keeps one plain copy of each model (no blobs, no per-commit snapshots) and its
layout changed over releases. Root ``R`` = ``MODELSCOPE_CACHE``, else
``~/.cache/modelscope/hub``; an explicit ``cache_dir`` (vLLM's ``--download-dir``) replaces
``R``. Candidates, in this order, for model id ``ORG/NAME``:

1. ``R/models/ORG/NAME'``  current ``modelscope`` (``get_model_cache_root()`` is
   ``<MODELSCOPE_CACHE or ~/.cache/modelscope/hub>/models``).
2. ``R/ORG/NAME'``         older releases, and current ones given ``cache_dir=``.
3. ``R/hub/ORG/NAME'``     releases where ``MODELSCOPE_CACHE`` was the parent of ``hub/``
   (only tried when the root comes from ``MODELSCOPE_CACHE``).

``NAME'`` is the name with every ``.`` written ``___`` (``Qwen2.5-0.5B`` is stored as
``Qwen2___5-0___5B``; ``snapshot_download`` may add a symlink with the dotted name), then the
dotted name itself (releases before the escaping). A bare ``NAME`` means ModelScope's
default group ``damo``. The first candidate holding any file wins (ModelScope creates the
folder before it downloads into it).

Revision: the cache cannot tell which revision its files are (ModelScope's own
``snapshot_download(local_files_only=True)`` says so and returns the folder anyway). The
revision recorded in the folder's ``.mv`` file (``Revision:<rev>,CreatedAt:<time>``) is
reported as ``commit``; a mismatch with the requested revision is a note, not an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from headstart import settings
from headstart.pagecache.pathcheck import read_small_regular_file

__all__ = ["MsLocation", "candidate_dirs", "locate", "modelscope_root", "selected_by_env"]

_DEFAULT_GROUP = "damo"


@dataclass(frozen=True)
class MsLocation:
    model_id: str
    root: str
    recorded_revision: str | None


def selected_by_env() -> bool:
    """``HEADSTART_HUB=modelscope`` (``hf``: not), else vLLM's ``VLLM_USE_MODELSCOPE=true``."""
    hub = settings.env_hub()
    if hub in settings.HUBS:
        return hub == "modelscope"
    return (settings.env_str("VLLM_USE_MODELSCOPE") or "").strip().lower() == "true"


def modelscope_root(cache_dir: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """``(root, from_env)``: the cache root and whether ``MODELSCOPE_CACHE`` gave it."""
    if cache_dir is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(cache_dir))), False
    from_env = settings.env_str("MODELSCOPE_CACHE") is not None
    return os.path.abspath(settings.modelscope_cache()), from_env


def candidate_dirs(model_id: str, cache_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Every folder the model may live in, most current layout first."""
    root, from_env = modelscope_root(cache_dir)
    group, _, name = model_id.rpartition("/")
    group = group or _DEFAULT_GROUP
    bases = [os.path.join(root, "models"), root]
    if from_env:
        bases.append(os.path.join(root, "hub"))
    out: list[str] = []
    for base in bases:
        for n in (name.replace(".", "___"), name):
            path = os.path.join(base, group, n)
            if path not in out:
                out.append(path)
    return out


def _has_files(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(not e.name.startswith(".") for e in it)
    except OSError:
        return False


def _recorded_revision(folder: str) -> str | None:
    try:
        text = read_small_regular_file(os.path.join(folder, ".mv"), 4096).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for part in text.strip().split(","):
        key, sep, value = part.partition(":")
        if sep and key.strip() == "Revision" and value.strip():
            return value.strip()
    return None


def locate(
    model_id: str,
    cache_dir: str | os.PathLike[str] | None,
    looked_at: list[str],
) -> MsLocation | None:
    """The model's folder, or ``None`` with every candidate appended to ``looked_at``."""
    candidates = candidate_dirs(model_id, cache_dir)
    existing = [c for c in candidates if os.path.isdir(c)]
    for folder in existing:
        if _has_files(folder):
            return MsLocation(model_id, folder, _recorded_revision(folder))
    if existing:  # only empty folders: let selection report "no loadable files" there
        return MsLocation(model_id, existing[0], _recorded_revision(existing[0]))
    looked_at.extend(f"{c} (ModelScope cache: missing)" for c in candidates)
    return None
