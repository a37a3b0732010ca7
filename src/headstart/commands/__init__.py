"""One module per ``headstart`` subcommand: ``add_parser(subparsers, name, help)`` and ``run``."""
