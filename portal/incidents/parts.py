"""`--part K/N`: which addresses of a file one of N processes handles, split by keyed index.

A row's part follows from its address's keyed index (HMAC-SHA256 with the pepper, so the
same on every host that shares the pepper), hashed once more and taken mod N: N hosts share
one file, each reading all of it and handling only its own addresses, with no one splitting
it by hand, and an address that occurs on several lines always falls in the same part.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from portal.core.errors import PortalError

MAX_PARTS = 1000
_PART = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` (1 ≤ index ≤ count)."""

    index: int = 1
    count: int = 1

    def holds(self, keyed: bytes) -> bool:
        return self.count == 1 or part_of(keyed, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Part()


def part_of(keyed: bytes, count: int) -> int:
    """The part (1 … count) of an address, from its keyed index."""
    digest = hashlib.sha256(b"portal-part\0" + keyed).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_part(text: str) -> Part:
    """ "K/N" as a Part; raises PortalError naming the form it wants."""
    match = _PART.fullmatch(text)
    if not match:
        raise PortalError(f"--part {text!r}: give it as K/N, e.g. --part 2/4")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count <= MAX_PARTS:
        raise PortalError(f"--part {text!r}: K must be from 1 to N, and N at most {MAX_PARTS:,}")
    return Part(index, count)
