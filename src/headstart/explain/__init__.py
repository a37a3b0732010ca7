"""``headstart explain``: where a start's time went, per process and phase."""
