"""The page-cache engine: ordered byte ranges read by worker threads within a memory budget."""
