"""``resolve_model``: a model reference -> the ordered files a server will read.

Resolution order for ``ref``:

1. A path that exists: a folder (its files are selected, see :mod:`headstart.models.select`),
   or a single weight file (``.safetensors``, ``.gguf``, ``.bin``, ``.pt``, ``.pth``). A
   ``models--ORG--NAME`` folder of the Hugging Face cache is read as that cache repo.
2. Otherwise a repo id (``ORG/NAME`` or ``NAME``), looked up offline in one hub's cache:
   ModelScope when ``hub="modelscope"``, or ``hub="auto"`` and ``HEADSTART_HUB=modelscope``
   or ``VLLM_USE_MODELSCOPE=true`` (:mod:`headstart.models.modelscope`); else Hugging Face
   (:mod:`headstart.models.hf_cache`). ``HEADSTART_HUB=hf`` forces Hugging Face.

Nothing is downloaded, nothing is written, no hub library is imported. Safe to call from
any thread; it only lists folders, ``stat``-s files and reads small index/ref files
(never blocking on a FIFO).

Errors (all :class:`~headstart.errors.HeadstartError`, and ``FileNotFoundError``):

* :class:`~headstart.errors.ModelNotFoundError` names every path that was looked at.
* :class:`~headstart.errors.RevisionNotFoundError` when the repo is cached but not at that
  revision; names the ref file and snapshot folder tried and what refs/snapshots exist.
* ``ModelNotFoundError`` too when the folder exists but holds nothing a server loads (the
  message says why).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from headstart import settings
from headstart.errors import ModelNotFoundError, NoLoadableFilesError
from headstart.models import hf_cache, modelscope
from headstart.models.select import select_files, single_file
from headstart.models.snapshot import Snapshot
from headstart.trace import tracer

__all__ = ["resolve_model"]

_log = logging.getLogger(__name__)


def _patterns(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [os.fspath(v) for v in value]


def _hub(hub: str | None) -> str:
    chosen = settings.hub_name(hub or "auto")
    if chosen is None:
        raise ValueError(f"hub must be one of {', '.join(settings.HUB_CHOICES)}; got {hub!r}")
    if chosen == "auto":
        chosen = "modelscope" if modelscope.selected_by_env() else "hf"
    return chosen


def _folder_snapshot(
    ref: str,
    root: str,
    *,
    source: str,
    revision: str | None,
    commit: str | None,
    include: list[str] | None,
    exclude: list[str] | None,
    notes: list[str],
) -> Snapshot:
    try:
        files = select_files(root, include=include, exclude=exclude, notes=notes)
    except NoLoadableFilesError as exc:
        raise ModelNotFoundError(ref, [f"{root} ({exc.reason})"]) from None
    return Snapshot(ref, root, tuple(files), source, revision, commit, tuple(notes))  # type: ignore[arg-type]


def _resolve_local(
    ref: str,
    path: str,
    revision: str | None,
    include: list[str] | None,
    exclude: list[str] | None,
) -> Snapshot:
    notes: list[str] = []
    path = os.path.abspath(path)
    if os.path.isdir(path):
        name = os.path.basename(os.path.normpath(path))
        if (
            name.startswith("models--")
            and os.path.isdir(os.path.join(path, "snapshots"))
            and os.path.isdir(os.path.join(path, "refs"))
        ):
            # A repo folder of the HF cache given by path: read it as the cache would.
            repo_id = "/".join(name.split("--")[1:])
            loc = hf_cache.locate_in_repo_folder(repo_id, path, revision)
            return _folder_snapshot(ref, loc.root, source="hf", revision=loc.revision,
                                    commit=loc.commit, include=include, exclude=exclude,
                                    notes=notes)
        if revision is not None:
            notes.append(f"revision {revision!r} ignored for a local folder")
        return _folder_snapshot(ref, path, source="local", revision=None, commit=None,
                                include=include, exclude=exclude, notes=notes)
    try:
        files = single_file(path, include=include, exclude=exclude, notes=notes)
    except NoLoadableFilesError as exc:
        raise ModelNotFoundError(ref, [f"{path} ({exc.reason})"]) from None
    if revision is not None:
        notes.append(f"revision {revision!r} ignored for a local file")
    return Snapshot(ref, os.path.dirname(path), tuple(files), "local", None, None, tuple(notes))


def resolve_model(
    ref: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    hub: str = "auto",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> Snapshot:
    """Resolve ``ref`` to a :class:`~headstart.models.snapshot.Snapshot`, offline.

    ``ref``: a local folder, a local weight file, or a repo id. ``revision``: branch, tag or
    full commit hash (default ``main``; ignored with a note for local paths). ``cache_dir``:
    the hub cache folder (vLLM's ``--download-dir``). ``hub``: ``auto``, ``hf`` or
    ``modelscope``. ``include``/``exclude``: fnmatch globs on relative names; ``include``
    replaces the default selection, ``exclude`` removes from it.

    Files come sidecars first, then weights in loader order, each file once.
    """
    ref_str = os.fspath(ref)
    include_p, exclude_p = _patterns(include), _patterns(exclude)
    with tracer.span("resolve_model", "models", ref=ref_str) as span:
        snap = _resolve(ref_str, revision, cache_dir, hub, include_p, exclude_p)
        span.update(source=snap.source, root=snap.root, files=len(snap.files),
                    bytes=snap.total_bytes)
    for note in snap.notes:
        _log.debug("resolve %s: %s", ref_str, note)
    return snap


def _resolve(
    ref: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    hub: str,
    include: list[str] | None,
    exclude: list[str] | None,
) -> Snapshot:
    chosen_hub = _hub(hub)  # validate before touching the disk
    local = os.path.expanduser(ref)
    if ref and os.path.exists(local):
        return _resolve_local(ref, local, revision, include, exclude)

    looked_at = [f"{os.path.abspath(local)} (local path: missing)"] if ref else []
    if not ref or not hf_cache.is_repo_id(ref):
        raise ModelNotFoundError(ref, [*looked_at, "(not a repo id: no hub cache searched)"])

    if chosen_hub == "modelscope":
        ms = modelscope.locate(ref, cache_dir, looked_at)
        if ms is None:
            raise ModelNotFoundError(ref, looked_at)
        notes: list[str] = []
        if revision is not None and ms.recorded_revision not in (None, revision):
            notes.append(
                f"ModelScope cache holds revision {ms.recorded_revision!r}, not {revision!r}"
                " (its cache keeps one revision)"
            )
        return _folder_snapshot(ref, ms.root, source="modelscope", revision=revision,
                                commit=ms.recorded_revision, include=include,
                                exclude=exclude, notes=notes)

    loc = hf_cache.locate(ref, revision, cache_dir, looked_at)
    if loc is None:
        raise ModelNotFoundError(ref, looked_at)
    return _folder_snapshot(ref, loc.root, source="hf", revision=loc.revision,
                            commit=loc.commit, include=include, exclude=exclude, notes=[])
