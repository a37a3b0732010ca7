"""A small struct type (named fields with defaults) for the hot path: ``dataclasses``
imports ``inspect`` (and with it ``ast``, ``dis``, ``enum``, ``tokenize``): several
milliseconds on every ``headstart run``.

Subclasses list ``FIELDS`` as ``(name, default)`` pairs in order; list/dict/set defaults are
copied per instance. ``FROZEN = True`` forbids assignment after ``__init__``.
"""

from __future__ import annotations

__all__ = ["Struct"]

_MUTABLE = (list, dict, set)


class Struct:
    __slots__ = ()
    FIELDS: tuple[tuple[str, object], ...] = ()
    FROZEN = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} arguments")
        for (name, _default), value in zip(fields, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}: {name!r} given twice")
            kwargs[name] = value
        for name, default in fields[len(args):]:
            if name not in kwargs:
                kwargs[name] = type(default)(default) if isinstance(default, _MUTABLE) else default
        known = {name for name, _ in fields}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected fields {sorted(unknown)}")
        for name, value in kwargs.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        if self.FROZEN:
            raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name, _ in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        if not self.FROZEN:
            raise TypeError(f"unhashable type: {type(self).__name__!r}")
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: object):
        """A copy with ``changes`` applied (like ``dataclasses.replace``)."""
        values = {name: getattr(self, name) for name, _ in self.FIELDS}
        values.update(changes)
        return type(self)(**values)
