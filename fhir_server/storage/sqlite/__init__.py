"""storage/sqlite."""
