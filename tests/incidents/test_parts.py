"""--part K/N: every address in exactly one part, the same on every host, about evenly."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from portal.core.errors import PortalError
from portal.incidents.parts import Part, parse_part, part_of


def keyed(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def test_it_puts_each_address_in_exactly_one_part() -> None:
    parts = [Part(k, 3) for k in (1, 2, 3)]

    holders = [sum(part.holds(keyed(n)) for part in parts) for n in range(3000)]

    assert set(holders) == {1}


def test_it_splits_about_evenly() -> None:
    sizes = Counter(part_of(keyed(n), 4) for n in range(40_000))

    assert set(sizes) == {1, 2, 3, 4}
    assert all(9_400 < size < 10_600 for size in sizes.values()), sizes


def test_the_whole_file_is_one_part() -> None:
    assert all(Part().holds(keyed(n)) for n in range(100))


@pytest.mark.parametrize("text", ["2/4", " 2 / 4 "])
def test_it_reads_k_of_n(text: str) -> None:
    assert parse_part(text) == Part(2, 4)


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "1/1001"])
def test_it_refuses_a_part_that_does_not_exist(text: str) -> None:
    with pytest.raises(PortalError, match="--part"):
        parse_part(text)
