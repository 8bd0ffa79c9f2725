"""A sorted spill of keyed indexes to the instance folder: memory that does not grow with a file.

`portal import` and `portal notify` deduplicate a file's addresses on their keyed index
(HMAC-SHA256 with the pepper, the blind index's first step; never an address) and do
not keep them in memory: records of fixed size are sorted in runs of RUN, each run written
to a file of its own, and the runs merged. The folder is the instance folder's `spill/`,
one sub-folder per process named after its process id, readable by the owner only. It is
erased when the run ends, and a folder left by a process that no longer lives (killed
with `kill -9`, a host that lost power) is erased by the next run on that instance.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from portal.core.errors import PortalError

# Records sorted in memory before a run is written: about 80 bytes each as Python bytes.
RUN = 32_768
# Runs merged at once; more are first merged in groups (each open run holds a read buffer).
FAN_IN = 64
READ_BUFFER = 16 * 1024


class Spill:
    """Records of one `struct` format, given in any order and read back sorted.

    The format is big-endian, so that the packed bytes sort as the records do: a record
    sorts by its first field, then its second.
    """

    def __init__(self, folder: Path, fmt: struct.Struct, *, run: int = RUN) -> None:
        self.folder = folder
        self.fmt = fmt
        self.run = run
        self.count = 0
        self._buffer: list[bytes] = []
        self._runs: list[Path] = []

    def add(self, *record: Any) -> None:
        self._buffer.append(self.fmt.pack(*record))
        self.count += 1
        if len(self._buffer) >= self.run:
            self._flush()

    def sorted(self) -> Iterator[tuple[Any, ...]]:
        """Every record added, in order (the runs merged, the buffer sorted in memory)."""
        self._buffer.sort()
        if not self._runs:
            yield from (self.fmt.unpack(packed) for packed in self._buffer)
            return
        self._flush()
        while len(self._runs) > FAN_IN:
            self._runs = [self._merged(self._runs[:FAN_IN]), *self._runs[FAN_IN:]]
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(run.open("rb", READ_BUFFER)) for run in self._runs]
            for packed in heapq.merge(*(self._records(source) for source in sources)):
                yield self.fmt.unpack(packed)

    def discard(self) -> None:
        """Lets go of every record: the buffer and the run files."""
        self._buffer = []
        for run in self._runs:
            run.unlink(missing_ok=True)
        self._runs = []

    def _flush(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort()
        self._runs.append(self._write(self._buffer))
        self._buffer = []

    def _write(self, records: Iterable[bytes]) -> Path:
        try:
            handle, name = tempfile.mkstemp(dir=self.folder, suffix=".run")
            with os.fdopen(handle, "wb", READ_BUFFER) as out:
                for packed in records:
                    out.write(packed)
        except OSError as exc:
            raise PortalError(
                f"cannot write the sorted spill in {self.folder.parent} ({exc.strerror}): "
                "it needs about 100 bytes per row of the file; free space in the instance "
                "folder (PORTAL_INSTANCE_DIR), then run the command again"
            ) from None
        return Path(name)

    def _merged(self, runs: list[Path]) -> Path:
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(run.open("rb", READ_BUFFER)) for run in runs]
            merged = self._write(heapq.merge(*(self._records(s) for s in sources)))
        for run in runs:
            run.unlink()
        return merged

    def _records(self, source: IO[bytes]) -> Iterator[bytes]:
        size = self.fmt.size
        while packed := source.read(size):
            yield packed


@contextlib.contextmanager
def spill_folder(instance_dir: Path) -> Iterator[Path]:
    """A folder of this process's own under `instance/spill/`, erased at the end.

    Folders of processes that no longer run are erased first: what a killed run left.
    """
    root = instance_dir / "spill"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    erase_abandoned(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def erase_abandoned(root: Path) -> list[Path]:
    """Erases the folders under `root` whose process no longer runs; returns them."""
    erased = []
    for folder in root.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            erased.append(folder)
    return erased


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
