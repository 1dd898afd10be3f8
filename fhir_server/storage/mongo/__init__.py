"""storage/mongo."""
