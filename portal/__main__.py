"""Lets `python -m portal` run the command line."""

from portal.cli import main

main()
