"""The sorted spill: records back in order from runs on disk, and nothing left behind."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from portal.core.errors import PortalError
from portal.incidents.spill import Spill, erase_abandoned, spill_folder

RECORD = struct.Struct(">32sQQ")


def test_it_gives_every_record_back_in_order_across_many_runs(tmp_path: Path) -> None:
    records = [(random.randbytes(32), n, n % 7) for n in range(5000)]
    records += records[:300]  # repeats come back as often as they were added
    spill = Spill(tmp_path, RECORD, run=97)  # 55 runs: merged in more than one pass

    for record in records:
        spill.add(*record)

    assert list(spill.sorted()) == sorted(records)
    assert len(list(tmp_path.glob("*.run"))) >= 1
    assert spill.count == len(records)


def test_it_keeps_small_spills_in_memory(tmp_path: Path) -> None:
    spill = Spill(tmp_path, RECORD, run=100)
    for n in (3, 1, 2):
        spill.add(bytes(32), n, 0)

    assert [line for _, line, _ in spill.sorted()] == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []


def test_it_erases_its_folder_at_the_end_even_after_an_error(tmp_path: Path) -> None:
    try:
        with spill_folder(tmp_path) as folder:
            (folder / "a.run").write_bytes(b"x")
            raise RuntimeError("stop")
    except RuntimeError:
        pass

    assert list((tmp_path / "spill").iterdir()) == []


def test_it_erases_what_a_killed_process_left_but_not_a_living_ones(tmp_path: Path) -> None:
    root = tmp_path / "spill"
    root.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    abandoned = root / f"{gone.stdout.strip()}-abc"
    living = root / f"{os.getpid()}-def"
    for folder in (abandoned, living):
        folder.mkdir()
        (folder / "x.run").write_bytes(b"keyed indexes")

    assert erase_abandoned(root) == [abandoned]
    assert not abandoned.exists() and living.exists()


def test_it_stops_with_the_fix_when_the_disk_refuses_a_run(tmp_path: Path) -> None:
    spill = Spill(tmp_path / "gone", RECORD, run=2)  # a folder that is not there

    with pytest.raises(PortalError, match="free space in the instance folder"):
        for n in range(3):
            spill.add(bytes(32), n, 0)
