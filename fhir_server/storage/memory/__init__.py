"""storage/memory."""
