"""Every environment variable headstart reads, in one place.

Values are read when a function runs, never frozen at import, so tests and long-lived
processes see changes.

=========================  ==========================================================
``HEADSTART_DISABLE``      true: ``headstart run`` is a pure pass-through
``HEADSTART_CACHE``        headstart's own cache folder (profiles, demo model)
``HEADSTART_HUB``          ``auto`` | ``hf`` | ``modelscope``
``HEADSTART_MODEL``        ``--model`` of ``headstart run``
``HEADSTART_REVISION``     ``--revision``
``HEADSTART_CACHE_DIR``    ``--cache-dir``
``HEADSTART_PRELOAD``      ``--preload`` (comma separated)
``HEADSTART_NO_PRELOAD``   true: ``--no-preload``
``HEADSTART_NO_PREFETCH``  true: ``--no-prefetch``
``HEADSTART_FORKSERVER``   true/false: ``--forkserver`` / ``--no-forkserver``
``HEADSTART_ZYGOTE``       true/false: ``--zygote`` / ``--no-zygote``
``HEADSTART_ZYGOTE_WAIT``  seconds a spawn waits for the zygote's imports (``120``)
``HEADSTART_ZYGOTE_LEVELS``  how many generations of spawned children fork from zygotes (``2``)
``HEADSTART_TRACE``        ``--trace FILE``
``HEADSTART_VERBOSE``      true: ``-v``
``HEADSTART_NO_PROFILE``   true: ``--no-profile`` (ignore recorded startup profiles)
``HEADSTART_PREFETCH_WORKERS``  reader threads of ``headstart run``'s whole-file prefetch
``HEADSTART_PREFETCH_BLOCK``  their block size (``4MiB``)
``HEADSTART_PREFETCH_METHOD``  ``pread`` | ``populate`` | ``auto``
``HEADSTART_REPLAY_METHOD``  profile replay: ``readahead`` (default) | ``engine``
``HEADSTART_REPLAY_WINDOW``  bytes a ``readahead`` replay keeps asked for (``16MiB``)
``HEADSTART_REPLAY_EARLY_RATE``  bytes/s of weights while the target imports (``0``: no cap)
``HEADSTART_REPLAY_EARLY_WINDOW``  bytes of weights a replay keeps asked for while the target
                           imports (``4MiB``)
``HEADSTART_REPLAY_YIELD``  when the replay stands back while the target reads: ``always``,
                           ``imports`` (only while it imports), ``never`` (or false)
``HEADSTART_REPLAY_IOPRIO``  I/O class of the replay helper: ``idle`` | ``low`` | ``none``
``HEADSTART_REPLAY_LEAD_CPU``  the helper's CPU priority while it asks for a profile's
                           libraries: ``target`` (the target's, then nice 10) | ``low``
                           (nice 10 throughout)
``HEADSTART_REPLAY_TOUCH``  true: the helper reads each replayed weight page once more, so a
                           hypervisor maps it before the target's first access (off)
``HEADSTART_REPLAY_TAIL``  where the profile's tail is read: ``inline`` | ``before`` | ``after``
                           (the weights) | ``off``
``HEADSTART_AUTO_RECORD``  false: a start with no profile does not record one
``HEADSTART_COVERAGE_FILE``  where a replayed start writes its coverage (JSON), e.g. for bench
``HEADSTART_PROFILE_WORKERS`` ``LIB,WEIGHTS`` reader threads of an ``engine`` replay
``HEADSTART_DEBUG``        true: a failing subcommand shows its traceback
=========================  ==========================================================

Hugging Face and ModelScope variables are read with the precedence their own libraries use
(see :func:`hf_hub_cache` and :func:`modelscope_cache`).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "COVERAGE_FILE_ENV",
    "HUBS",
    "HUB_CHOICES",
    "PREFETCH_DEFAULTS",
    "PREFETCH_METHODS",
    "PROFILE_WORKERS_DEFAULT",
    "REPLAY_DEFAULTS",
    "REPLAY_METHODS",
    "RUN_OPTION_ENV",
    "RUN_PREFETCH_DEFAULTS",
    "WHOLE_FILE_EARLY_RATE",
    "WHOLE_FILE_EARLY_WINDOW",
    "ZYGOTE_DEFAULTS",
    "auto_record",
    "comma_list",
    "coverage_file",
    "debug",
    "disabled",
    "env_bool",
    "env_hub",
    "env_str",
    "headstart_cache",
    "hf_hub_cache",
    "hub_name",
    "modelscope_cache",
    "profile_workers",
    "replay_options",
    "run_env_options",
    "run_prefetch_options",
    "runtime_dir",
    "zygote_lessons",
    "zygote_options",
]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def env_bool(name: str, default: bool | None = False) -> bool | None:
    """Parse a boolean variable the way huggingface_hub does; unknown values give ``default``."""
    value = os.environ.get(name)
    if value is None:
        return default
    return _parse_bool(value, default)


def _parse_bool(value: str, default: bool | None) -> bool | None:
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


def disabled() -> bool:
    """``HEADSTART_DISABLE``: ``headstart run`` is a pure pass-through."""
    return bool(env_bool("HEADSTART_DISABLE"))


def debug() -> bool:
    """``HEADSTART_DEBUG`` true (``1``, ``true``, ...; ``0`` is false): subcommands show
    tracebacks."""
    return bool(env_bool("HEADSTART_DEBUG"))


# The hubs a repo id resolves in, and the values of ``--hub`` / ``HEADSTART_HUB``
# (``auto``: ModelScope when the environment selects it, else Hugging Face).
HUBS = ("hf", "modelscope")
HUB_CHOICES = ("auto", *HUBS)
_HUB_ALIASES = {"huggingface": "hf"}


def hub_name(value: str) -> str | None:
    """``value`` as one of ``HUB_CHOICES`` (any case and spacing, ``huggingface`` = ``hf``);
    None when it is none of them."""
    key = value.strip().lower()
    key = _HUB_ALIASES.get(key, key)
    return key if key in HUB_CHOICES else None


def env_hub() -> str | None:
    """``HEADSTART_HUB`` as :func:`hub_name` reads it; None when unset or not a hub."""
    value = env_str("HEADSTART_HUB")
    return hub_name(value) if value else None


# `headstart run`'s options (plan.RunOptions fields) and the variable that gives each one
# when the command line does not.
RUN_OPTION_ENV = {
    "model": "HEADSTART_MODEL", "revision": "HEADSTART_REVISION",
    "cache_dir": "HEADSTART_CACHE_DIR", "hub": "HEADSTART_HUB", "preload": "HEADSTART_PRELOAD",
    "no_preload": "HEADSTART_NO_PRELOAD", "no_prefetch": "HEADSTART_NO_PREFETCH",
    "forkserver": "HEADSTART_FORKSERVER", "trace": "HEADSTART_TRACE",
    "verbose": "HEADSTART_VERBOSE", "no_profile": "HEADSTART_NO_PROFILE",
    "zygote": "HEADSTART_ZYGOTE",
}
_RUN_FLAGS = ("no_preload", "no_prefetch", "forkserver", "verbose", "no_profile", "zygote")


def comma_list(value: str) -> list[str]:
    """``a, b,,c`` -> ``["a", "b", "c"]`` (``--preload``, ``HEADSTART_PRELOAD``)."""
    return [m.strip() for m in value.split(",") if m.strip()]


def run_env_options(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """``headstart run``'s options as ``env`` (default ``os.environ``) sets them, None for
    each one it does not (an empty value is not set). Strings as given (``hub`` is checked
    where it is used); ``preload`` a list (:func:`comma_list`); flags True when the value
    is true as :func:`env_bool` reads it, else False (``HEADSTART_FORKSERVER=maybe`` is an
    explicit no)."""
    env = os.environ if env is None else env
    out: dict[str, object] = {}
    for option, name in RUN_OPTION_ENV.items():
        value = env.get(name) or None
        if option in _RUN_FLAGS:
            out[option] = (None if value is None or not value.strip()
                           else bool(_parse_bool(value, False)))
        elif option == "preload" and value is not None:
            out[option] = comma_list(value)
        else:
            out[option] = value
    return out


# `headstart run` without a profile reads weights while the target imports. A deep queue
# of large reads puts every small library read of the imports behind all of it; a shallow
# queue keeps the imports' reads near the front (benchmarks/design_measurements.md).
RUN_PREFETCH_DEFAULTS = {"workers": 1, "block_size": 4 * 2**20, "method": "pread"}
# The page-cache engine's own defaults (headstart.prefetch, ``headstart prefetch``).
PREFETCH_DEFAULTS = {"workers": 8, "block_size": 16 * 2**20, "budget": "auto", "method": "auto"}
# How the page-cache engine reads (``auto``: its default), and how a profile is replayed.
PREFETCH_METHODS = ("auto", "populate", "pread")
REPLAY_METHODS = ("readahead", "engine")


def run_prefetch_options() -> dict[str, object]:
    """Engine options for ``headstart run``'s whole-file prefetch (env overrides)."""
    opts = dict(RUN_PREFETCH_DEFAULTS)
    workers = env_str("HEADSTART_PREFETCH_WORKERS")
    if workers and workers.isdigit() and int(workers) > 0:
        opts["workers"] = int(workers)
    block = _env_size("HEADSTART_PREFETCH_BLOCK", least=4096)
    if block is not None:
        opts["block_size"] = block
    method = env_str("HEADSTART_PREFETCH_METHOD")
    if method in PREFETCH_METHODS:
        opts["method"] = method
    return opts


# While the target imports, weights are read with a small window: each read of the
# target's that the replay did not do ahead (the ones it makes before the replay starts, the
# ones the profile lacks) waits behind everything the replay has asked for and the disk has
# not done yet, and under a cgroup throttle that queue is shared. Libraries always get the
# full window: the target waits for them right then, in that order. The window is lifted
# when the target's preloads finish. ``early_rate`` (bytes/s of weights until then) is off by
# default: with the libraries first in the stream the target read nothing from the disk
# itself while it imported, so a cap only left the disk idle. Side by side, 3-4 cold runs
# each, the 100 MB/s cap that was the default against none: 300 MB/s 9.95 against 9.24 s
# and 10.14 against 9.23 s (two benches), 150 MB/s 17.23 / 17.22 s, 1 GB/s 6.99 / 6.89 s,
# unthrottled 6.85 / 6.84 s (benchmarks/design_measurements.md). Not a rule for every
# profile: on a ``headstart record`` profile that left the target 89 MB of its own reads
# the cap was 1.0 s faster, on another auto-recorded one 0.7 s slower; the default follows
# ``headstart run``'s recordings.
REPLAY_DEFAULTS = {"window": 16 * 2**20, "early_rate": 0,
                   "early_window": 4 * 2**20, "yield": "always", "ioprio": "low",
                   "tail": "off", "lead_cpu": "target", "touch": False}
# Without a profile (the first start: the model's whole files, no libraries in the stream)
# the cap only delays the weights: the target's library reads are its own, and standing
# back while it reads protects them. At 300 MB/s, 3 runs each, side by side: uncapped 0.80x
# the baseline, 300 MB/s 0.81x, the 100 MB/s cap 0.88x, no standing back 1.02x. Each of
# those reads still waits behind what is in flight: with 4 MiB the imports took 11.4 s
# against 8.2 s for the baseline, 2 MiB 10.6 s, 1 MiB 10.1 s; in a second bench 1 MiB
# 9.95 s, 512 KiB 9.06 s, 256 KiB 9.47 s (the start 0.85x, 0.80x, 0.82x the baseline).
WHOLE_FILE_EARLY_RATE = 0
WHOLE_FILE_EARLY_WINDOW = 512 * 2**10
IOPRIO_CHOICES = ("idle", "low", "none")
# When a replay stands back for the target's own reads: always, only while the target
# imports (after, what it reads is the weights the replay is reading for it), or never.
YIELD_CHOICES = ("always", "imports", "never")
# Where a replay reads the profile's tail (the read-around of mapped libraries): inline
# (each library file's tail with its touched pages, in offset order), before or after the
# weights, or not at all, the default: measured side by side, no placement made a start
# faster than leaving it out, and it is 200-270 MB more to read
# (benchmarks/design_measurements.md).
TAIL_CHOICES = ("inline", "before", "after", "off")
# The helper's CPU priority while it asks for a profile's libraries (the lead: thousands of
# small files, ~0.3 CPU s for 220 MB here): the target's (``target``), nice 10 once they are
# all asked for; or nice 10 from the start (``low``). At nice 10 beside a target and its
# zygote importing on both cores, the helper got so little CPU that the disk idled for about
# a second between the libraries and the weights: side by side at 300 MB/s, 5 cold runs
# each, the replay ended after 7.75-7.83 s (the disk's 2.34 GB / 300 MB/s) against 8.2-9.8 s,
# and the start took 9.73 / 9.87 / 12.65 s against 10.42 / 10.99 / 12.08 s
# (benchmarks/design_measurements.md).
LEAD_CPU_CHOICES = ("target", "low")


def replay_options(whole_files: bool = False) -> dict[str, object]:
    """How a startup profile is replayed: ``{"method": "readahead" | "engine", "window":
    bytes, "early_rate": bytes/s, "early_window": bytes, "yield": str, "ioprio": str,
    "tail": str, "lead_cpu": str, "touch": bool}``
    (see :mod:`headstart.pagecache.readahead`). ``whole_files``: for a helper's read of a
    model's whole files (no profile): ``early_rate`` and ``early_window`` are
    ``WHOLE_FILE_EARLY_RATE`` and ``WHOLE_FILE_EARLY_WINDOW`` unless the variables say
    otherwise."""
    method = env_str("HEADSTART_REPLAY_METHOD")
    opts: dict[str, object] = {"method": method if method in REPLAY_METHODS
                               else REPLAY_METHODS[0], **REPLAY_DEFAULTS}
    if whole_files:
        opts["early_rate"] = WHOLE_FILE_EARLY_RATE
        opts["early_window"] = WHOLE_FILE_EARLY_WINDOW
    for key, name, least in (("window", "HEADSTART_REPLAY_WINDOW", 4096),
                             ("early_rate", "HEADSTART_REPLAY_EARLY_RATE", 0),
                             ("early_window", "HEADSTART_REPLAY_EARLY_WINDOW", 4096)):
        size = _env_size(name, least=least)
        if size is not None:
            opts[key] = size
    value = (env_str("HEADSTART_REPLAY_YIELD") or "").strip().lower()
    if value in YIELD_CHOICES:
        opts["yield"] = value
    elif value:
        opts["yield"] = "always" if _parse_bool(value, True) else "never"
    ioprio = env_str("HEADSTART_REPLAY_IOPRIO")
    if ioprio in IOPRIO_CHOICES:
        opts["ioprio"] = ioprio
    tail = env_str("HEADSTART_REPLAY_TAIL")
    if tail in TAIL_CHOICES:
        opts["tail"] = tail
    lead_cpu = env_str("HEADSTART_REPLAY_LEAD_CPU")
    if lead_cpu in LEAD_CPU_CHOICES:
        opts["lead_cpu"] = lead_cpu
    opts["touch"] = bool(env_bool("HEADSTART_REPLAY_TOUCH", bool(REPLAY_DEFAULTS["touch"])))
    return opts


# An engine replay: one ordered queue (equal counts: no idle disk between two phases) of
# few readers, which leave CPU to the target when the disk is fast
# (benchmarks/design_measurements.md).
PROFILE_WORKERS_DEFAULT = (4, 4)


def profile_workers() -> tuple[int, int]:
    """(library workers, weight workers) of an ``engine`` replay, from
    ``HEADSTART_PROFILE_WORKERS=LIB[,WEIGHTS]`` (each at least 1; a bad value is ignored)."""
    value = env_str("HEADSTART_PROFILE_WORKERS")
    lib, weights = PROFILE_WORKERS_DEFAULT
    if value:
        try:
            parts = [int(x) for x in value.split(",")]
            lib = max(1, parts[0])
            weights = max(1, parts[1]) if len(parts) > 1 else weights
        except ValueError:
            import logging

            logging.getLogger(__name__).debug("HEADSTART_PROFILE_WORKERS=%r ignored", value)
    return lib, weights


COVERAGE_FILE_ENV = "HEADSTART_COVERAGE_FILE"


def coverage_file() -> str | None:
    """``HEADSTART_COVERAGE_FILE``: where a replayed start writes its coverage report."""
    return env_str(COVERAGE_FILE_ENV)


def auto_record() -> bool:
    """``HEADSTART_AUTO_RECORD`` (default true): a start with no profile records one."""
    return bool(env_bool("HEADSTART_AUTO_RECORD", True))


def _env_size(name: str, *, least: int) -> int | None:
    """A size variable (``4MiB``, ``384MB``) when set, valid and at least ``least``."""
    from headstart.sizes import parse_size

    value = env_str(name)
    if not value:
        return None
    try:
        size = parse_size(value)
    except ValueError:
        return None
    return size if size >= least else None


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _xdg_cache_home() -> str:
    return env_str("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def hf_hub_cache() -> str:
    """The Hugging Face hub cache: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, XDG."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = env_str(name)
        if value:
            return os.path.expanduser(value)
    hf_home = env_str("HF_HOME") or os.path.join(_xdg_cache_home(), "huggingface")
    return os.path.join(os.path.expanduser(hf_home), "hub")


def modelscope_cache() -> str:
    """ModelScope's cache root: MODELSCOPE_CACHE, else ~/.cache/modelscope/hub."""
    value = env_str("MODELSCOPE_CACHE")
    if value:
        return os.path.expanduser(value)
    return os.path.join(os.path.expanduser("~"), ".cache", "modelscope", "hub")


def headstart_cache() -> str:
    """headstart's own cache folder: HEADSTART_CACHE, else $XDG_CACHE_HOME/headstart."""
    value = env_str("HEADSTART_CACHE")
    if value:
        return os.path.expanduser(value)
    return os.path.join(_xdg_cache_home(), "headstart")


def runtime_dir() -> str:
    """Where per-host lock files live: $XDG_RUNTIME_DIR/headstart, else the cache folder."""
    value = env_str("XDG_RUNTIME_DIR")
    if value and os.path.isdir(value) and os.access(value, os.W_OK):
        return os.path.join(value, "headstart")
    return os.path.join(headstart_cache(), "run")


ZYGOTE_DEFAULTS = {"wait": 120.0, "levels": 2}


def zygote_options() -> dict[str, float]:
    """How long a spawn waits for the zygote (``HEADSTART_ZYGOTE_WAIT``, seconds) and how
    many generations of spawned children fork from one (``HEADSTART_ZYGOTE_LEVELS``: 1,
    the target's children only; 2, their children too). A value that does not parse is
    ignored."""
    out = dict(ZYGOTE_DEFAULTS)
    for key, name, kind in (("wait", "HEADSTART_ZYGOTE_WAIT", float),
                            ("levels", "HEADSTART_ZYGOTE_LEVELS", int)):
        raw = os.environ.get(name, "").strip()
        try:
            out[key] = max(kind(raw), 0) if raw else out[key]
        except ValueError:
            continue
    return out


def zygote_lessons(key: str | list[str]) -> str:
    """The file where the zygote keeps, for one target (a profile key, else its argv), the
    variables its children's children were spawned with."""
    if not isinstance(key, str):
        import zlib

        key = f"argv-{zlib.crc32(repr(list(key)).encode()):08x}"
    return os.path.join(headstart_cache(), "zygote", key.replace(os.sep, "_") + ".json")
