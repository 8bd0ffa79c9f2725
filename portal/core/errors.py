"""The one exception type for operator mistakes, carrying a human message."""

from __future__ import annotations


class PortalError(Exception):
    """An operator mistake or an unusable input: the CLI prints the message, no traceback."""

    exit_code = 1
