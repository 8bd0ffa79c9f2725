"""breach-portal: the self-service 'am I affected?' portal for one data breach."""

from __future__ import annotations

__version__ = "0.1.0"
