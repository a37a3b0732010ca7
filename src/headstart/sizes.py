"""Byte sizes as people write them (``16MiB``, ``2G``, ``300MB``) and as headstart prints them."""

from __future__ import annotations

import re

from headstart.errors import InvalidSizeError

__all__ = ["format_size", "parse_size", "parse_size_or_percent"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """``"16MiB"`` -> 16777216. Bare letters (K, M, G, T) are binary, ``MB``/``GB`` decimal."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidSizeError(f"size must not be negative: {text}")
        return text
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidSizeError(f"invalid size {text!r} (examples: 4096, 16MiB, 2G, 300MB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_size_or_percent(text: str) -> int | float:
    """A size in bytes (int), or a fraction (float in (0, 1]) for ``"25%"``."""
    text = str(text).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise InvalidSizeError(f"invalid percentage {text!r} (example: 80%)") from None
        if not 0 < pct <= 100:
            raise InvalidSizeError(f"percentage must be in (0, 100]: {text!r}")
        return pct / 100.0
    return parse_size(text)


def format_size(n: float) -> str:
    """Binary units: 1536 -> ``1.50 KiB``, 3 * 2**30 -> ``3.00 GiB``."""
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")
