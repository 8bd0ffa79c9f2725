"""The `portal` command: one module per command group; `main` builds the parser from them."""

from portal.cli.base import app, main

__all__ = ["app", "main"]
