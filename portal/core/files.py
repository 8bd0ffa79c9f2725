"""Files the portal writes for people to open: cells safe in a spreadsheet, files private."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from portal.core.errors import PortalError

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would read as a formula gets a leading apostrophe."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path`, readable by its owner alone, whole or not at all."""
    try:
        # mkstemp makes the file with mode 0600; os.replace puts it in place in one step.
        fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise PortalError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(aside, path)
    except OSError as exc:
        raise PortalError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        Path(aside).unlink(missing_ok=True)
