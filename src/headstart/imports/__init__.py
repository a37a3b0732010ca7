"""Race-free background imports: :func:`headstart.preload` and the import gate behind it."""

__all__: list[str] = []
