"""interactions/operations."""
