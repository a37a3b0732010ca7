"""Startup I/O profiles: record which file pages a cold start reads, replay them in order.

* :mod:`headstart.profiles.key`          what identifies a profile (cheap, hot path)
* :mod:`headstart.profiles.store`        the JSON files under ``headstart_cache()/profiles``
* :mod:`headstart.profiles.record`       ``headstart record``: evict, run the target, capture
* :mod:`headstart.profiles.recorders`    the ``Recorder`` protocol, process trees, maps sampling
* :mod:`headstart.profiles.fanotify`     the fanotify recorder (root)
* :mod:`headstart.profiles.weights`      loader order inside weight files (residency sampling)
* :mod:`headstart.profiles.pagemap`      which pages of mapped files the tree touched
* :mod:`headstart.profiles.capture`      at readiness: files, resident runs, the profile
* :mod:`headstart.profiles.layout`       pure range layout (trim, order, merge)
* :mod:`headstart.profiles.replay`       what ``headstart run`` reads when a profile matches
"""

__all__: list[str] = []
