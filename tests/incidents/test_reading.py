"""Reading a file for import and notify: distinct addresses in file order, from a spill."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.core.errors import PortalError
from portal.incidents.columns import plan_columns
from portal.incidents.parts import WHOLE, Part
from portal.incidents.reading import Addresses, FileRead, read_file
from portal.incidents.spill import spill_folder

PEPPER = b"pepper"


def read(path: Path, folder: Path, part: Part = WHOLE) -> FileRead:
    return read_file(
        path,
        lambda header: plan_columns(header, mapping={}, email_column=None),
        None,
        pepper=PEPPER,
        folder=folder,
        part=part,
    )


def leak(tmp_path: Path) -> Path:
    path = tmp_path / "leak.csv"
    rows = ["email,naam,telefoon", "b@example.org,B,", "a@example.org,A,", "B@Example.org,,06"]
    path.write_text("\n".join([*rows, "kapot,C,"]) + "\n", encoding="utf-8")
    return path


def test_it_gives_each_address_once_in_file_order_with_its_rows_fields(tmp_path: Path) -> None:
    path = leak(tmp_path)
    with spill_folder(tmp_path) as folder:
        found = read(path, folder)
        addresses = [(address, bits) for address, _, bits in Addresses(found, pepper=PEPPER)]

    summary = found.summary
    assert (summary.rows, summary.imported, summary.skipped_rows, summary.addresses) == (4, 3, 1, 2)
    assert [address for address, _ in addresses] == ["b@example.org", "a@example.org"]
    assert addresses[0][1] == addresses[1][1] | found.plan.bits(["", "", "06"])


def test_the_parts_together_read_each_row_once(tmp_path: Path) -> None:
    path = leak(tmp_path)
    with spill_folder(tmp_path) as folder:
        parts = [read(path, folder, Part(k, 2)).summary for k in (1, 2)]

    for summary in parts:
        assert summary.rows == summary.imported + summary.skipped_rows + summary.other_parts
    assert sum(s.imported for s in parts) == 3 and sum(s.skipped_rows for s in parts) == 1
    assert sum(s.addresses for s in parts) == 2


def test_it_refuses_a_file_that_changed_between_its_two_readings(tmp_path: Path) -> None:
    path = leak(tmp_path)
    with spill_folder(tmp_path) as folder:
        found = read(path, folder)
        path.write_text(path.read_text().replace("a@example.org", "z@example.org"))

        with pytest.raises(PortalError, match="changed while it was read"):
            list(Addresses(found, pepper=PEPPER))
