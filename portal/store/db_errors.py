"""Database errors told apart: the database away or its disk full (wait, try again) or a bug.

No page and no command ever shows such an error's text: it can hold a statement and its
parameters (blind indexes, addresses). They say what happened in words of their own, and
the log gets the error's type and the place it was raised, nothing else.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from pathlib import Path
from traceback import extract_tb

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("portal.db")
PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep

UNAVAILABLE = "unavailable"  # the server is away or restarting, or the connection was cut
FULL = "full"  # no room to write: the disk under SQLite, or PostgreSQL's
OTHER = "other"  # any other database error: most likely a bug
RETRY_AFTER = 5  # seconds a 503 asks the client to wait before it tries again
# SQLite's own words for a file it cannot use now; its other errors (SQLITE_ERROR: no such
# table, say) are bugs.
SQLITE_AWAY = (
    "SQLITE_IOERR",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
)
KEPT = "what was committed before stays, nothing after it was written"


def kind(exc: BaseException) -> str | None:
    """UNAVAILABLE, FULL or OTHER for a database error (SQLAlchemy's or a driver's), else None."""
    if isinstance(exc, PoolTimeout):  # every connection of the pool busy for 30 s
        return UNAVAILABLE
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return UNAVAILABLE
        return (_driver_kind(exc.orig) if exc.orig is not None else None) or OTHER
    if isinstance(exc, SQLAlchemyError):
        return OTHER
    return _driver_kind(exc)


def passing(exc: BaseException) -> bool:
    """Whether the error passes when the database is back (or has room): worth waiting for."""
    return kind(exc) in (UNAVAILABLE, FULL)


def code(exc: BaseException) -> str | None:
    """The driver's code for the error (SQLite's name, SQLSTATE on PostgreSQL): a word that
    tells a full disk from a lock or a short read, and never holds a value."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorname", None)
    return getattr(orig, "sqlstate", None)


def _driver_kind(exc: BaseException) -> str | None:
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL":
            return FULL
        return UNAVAILABLE if name.startswith(SQLITE_AWAY) else OTHER
    # The driver is loaded when PostgreSQL is used; an error of it cannot occur otherwise.
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return None
    if isinstance(exc, psycopg.errors.DiskFull):
        return FULL
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return UNAVAILABLE
    return OTHER


def where(exc: BaseException) -> str:
    """Where the portal's code met the error, innermost first, as module.function: no values.

    The portal's own frames, where there are some (the driver's and SQLAlchemy's say
    nothing of which query it was), named so that an edit elsewhere in the file leaves the
    log line as it was.
    """
    frames = extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(PACKAGE) and f.name != "wrapper"]
    return " < ".join(f"{Path(f.filename).stem}.{f.name}" for f in reversed((ours or frames)[-4:]))


def for_operator(exc: BaseException) -> str:
    """Logs the error's type and place, and returns the one line a command prints for it."""
    name = type(exc).__name__
    log.error("database error %s in %s", name, where(exc))
    what, then = WORDS.get(kind(exc) or OTHER, WORDS[OTHER])
    return f"{what} ({name}); {KEPT}{then}"


# What happened, and what to do, per kind of error.
WORDS = {
    FULL: ("the disk under the database is full", ": free space, then run the command again"),
    UNAVAILABLE: ("the database stopped answering", ": run the command again once it answers"),
    OTHER: ("unexpected database error", ""),
}
