"""Startup I/O profiles: record which file pages a cold start reads, replay them in order.

* :mod:`headstart.profiles.key`     what identifies a profile (cheap, hot path)
* :mod:`headstart.profiles.store`   the JSON files under ``headstart_cache()/profiles``
* :mod:`headstart.profiles.record`  ``headstart record``: fanotify order + residency diff
* :mod:`headstart.profiles.replay`  what ``headstart run`` reads when a profile matches
"""

__all__: list[str] = []
