"""Reaching people who did not come to the portal: the direct notice (letters, digests next)."""
