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
* :mod:`headstart.profiles.model_prefetch`  one leader per host and snapshot: replay a profile
  (:func:`~headstart.profiles.model_prefetch.replay_profile`) or read the whole files
* :mod:`headstart.profiles.replay_helper` the helper process ``headstart run`` starts for both
* :mod:`headstart.profiles.autorecord`   recording during an ordinary start (in the helper)
* :mod:`headstart.profiles.coverage`     how well a replay covered the target's reads
"""

__all__: list[str] = []
