"""Incidents and partners: the incident file, the records imported, their cache and counts."""
