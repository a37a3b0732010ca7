"""Watching a target from outside: its process tree, what each process reads and waits for."""
