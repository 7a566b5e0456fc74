"""The collection workflow: duplicates, label issues, corrections and review."""
