"""Deletion requests: made, forwarded to partners, decided, receipted and reported back on."""
