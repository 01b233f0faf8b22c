"""Small shared helpers: atomic file writes, checksums, device selection, seeding."""
