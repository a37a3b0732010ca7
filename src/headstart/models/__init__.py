"""Model references -> the ordered files a server will read."""
