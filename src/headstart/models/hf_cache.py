"""Offline lookup of a repo in the Hugging Face hub cache, with the stdlib only.

``huggingface_hub`` is never imported: resolution runs in background threads of processes
that import it themselves, and a second thread importing a package mid-``__init__`` is the
race the original prefetch (vLLM PR #40331) was reverted for (see
:mod:`headstart.imports.gate`).

The documented cache layout (https://huggingface.co/docs/huggingface_hub/guides/manage-cache)::

    <cache>/models--ORG--NAME/
        refs/main                 text file holding a 40-hex commit hash (branches, tags;
        refs/refs/pr/1            ``refs/pr/1`` revisions nest)
        snapshots/<commit>/...    the repo's files, symlinks into ../../blobs/
        blobs/<sha256 or git sha1>

Cache folder, as ``huggingface_hub`` picks it: explicit ``cache_dir`` (vLLM's
``--download-dir``), else ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``,
``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``; ``~`` and ``$VARS`` are
expanded and the result resolved (``snapshot_download`` returns a resolved path too).

Revisions: ``None`` means ``main``; a full 40-hex commit hash is looked up in ``snapshots/``
directly; anything else is a branch or tag read from ``refs/``. That is exactly what
``snapshot_download(..., local_files_only=True)`` accepts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from headstart import settings
from headstart.errors import RevisionNotFoundError
from headstart.pagecache.pathcheck import read_small_regular_file

__all__ = [
    "COMMIT_HASH_RE",
    "HfLocation",
    "hub_cache_dir",
    "is_repo_id",
    "locate",
    "locate_in_repo_folder",
    "repo_folder_name",
]

COMMIT_HASH_RE = re.compile(r"[0-9a-f]{40}")
# huggingface_hub's REPO_ID_REGEX: optional namespace, then a name; no "--" or "..".
_REPO_ID_RE = re.compile(r"(?:\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b")


@dataclass(frozen=True)
class HfLocation:
    """A snapshot folder found in the cache."""

    repo_id: str
    repo_dir: str
    revision: str
    commit: str
    root: str


def is_repo_id(ref: str) -> bool:
    """Whether ``ref`` is a valid ``ORG/NAME`` or ``NAME`` repo id."""
    return (
        _REPO_ID_RE.fullmatch(ref) is not None
        and "--" not in ref
        and ".." not in ref
        and not ref.endswith(".git")
    )


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The cache folder ``huggingface_hub`` would use, resolved."""
    if cache_dir is not None:
        path = os.path.expanduser(os.fspath(cache_dir))
    else:
        # huggingface_hub expands ~ and $VARS in the variables (settings expands only ~).
        path = os.path.expandvars(settings.hf_hub_cache())
    # snapshot_download returns a path under Path(cache_dir).expanduser().resolve().
    return os.path.realpath(path)


def repo_folder_name(repo_id: str) -> str:
    return "--".join(["models", *repo_id.split("/")])


def _listing(folder: str, limit: int = 20) -> str:
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError:
        return "none"
    if not names:
        return "none"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _refs(repo_dir: str) -> list[str]:
    refs_dir = os.path.join(repo_dir, "refs")
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(refs_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, refs_dir)
        for name in sorted(filenames):
            out.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return out


def locate_in_repo_folder(repo_id: str, repo_dir: str, revision: str | None) -> HfLocation:
    """Resolve ``revision`` inside an existing ``models--ORG--NAME`` folder.

    Raises :class:`RevisionNotFoundError` naming the ref file and snapshot folder it tried.
    """
    rev = revision or "main"
    refs_dir = os.path.join(repo_dir, "refs")
    snapshots_dir = os.path.join(repo_dir, "snapshots")
    looked_at: list[str] = []
    commit: str | None = None
    if COMMIT_HASH_RE.fullmatch(rev):
        commit = rev
    else:
        ref_path = os.path.normpath(os.path.join(refs_dir, rev))
        if not ref_path.startswith(refs_dir + os.sep):
            raise RevisionNotFoundError(repo_id, rev, [f"{ref_path} (outside {refs_dir})"])
        try:
            commit = read_small_regular_file(ref_path, 4096).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = "missing" if isinstance(exc, FileNotFoundError) else str(exc)
            known = ", ".join(_refs(repo_dir)) or "none"
            looked_at.append(f"{ref_path} ({reason}; refs: {known})")
        else:
            if not COMMIT_HASH_RE.fullmatch(commit):
                looked_at.append(f"{ref_path} (holds {commit[:60]!r}, not a commit hash)")
                commit = None
    if commit is not None:
        root = os.path.join(snapshots_dir, commit)
        if os.path.isdir(root):
            return HfLocation(repo_id, repo_dir, rev, commit, root)
        if looked_at == [] and not COMMIT_HASH_RE.fullmatch(rev):
            looked_at.append(f"{os.path.join(refs_dir, rev)} (-> {commit})")
        looked_at.append(f"{root} (missing; snapshots: {_listing(snapshots_dir)})")
    raise RevisionNotFoundError(repo_id, rev, looked_at)


def locate(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    looked_at: list[str],
) -> HfLocation | None:
    """Find ``repo_id`` at ``revision`` in the cache.

    ``None`` (with the repo folder appended to ``looked_at``) when the cache has no such
    repo; :class:`RevisionNotFoundError` when the repo is there but the revision is not.
    """
    cache = hub_cache_dir(cache_dir)
    repo_dir = os.path.join(cache, repo_folder_name(repo_id))
    if not os.path.isdir(repo_dir):
        looked_at.append(f"{repo_dir} (Hugging Face cache: missing)")
        return None
    return locate_in_repo_folder(repo_id, repo_dir, revision)
