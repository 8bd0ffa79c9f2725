"""A partner's `forward` in the incident file: "each" (the default) or "daily" (design §8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from portal.core.errors import PortalError
from portal.incidents.stored import get_partners, load_incident_file
from tests.factories import INCIDENT

PARK_A = 'contact_email = "privacy@park-a.example"\n'


def write(tmp_path: Path, forward: str) -> Path:
    path = tmp_path / "incident.toml"
    path.write_text(INCIDENT.replace(PARK_A, PARK_A + forward), encoding="utf-8")
    return path


def test_it_stores_each_partners_forward_with_each_as_the_default(
    engine: Engine, tmp_path: Path
) -> None:
    result = load_incident_file(engine, write(tmp_path, 'forward = "daily"\n'))
    with engine.connect() as conn:
        forwards = {p.slug: p.forward for p in get_partners(conn, result.incident.id)}
    assert forwards == {"park-a": "daily", "theater-b": "each", "omroep-c": "each"}

    load_incident_file(engine, write(tmp_path, ""))  # left out again: back to each
    with engine.connect() as conn:
        assert {p.forward for p in get_partners(conn, result.incident.id)} == {"each"}


@pytest.mark.parametrize(
    ("value", "shown"), [('"weekly"', "'weekly'"), ("1", "a number")], ids=["text", "number"]
)
def test_it_names_the_key_the_value_and_what_is_allowed(
    engine: Engine, tmp_path: Path, value: str, shown: str
) -> None:
    path = write(tmp_path, f"forward = {value}\n")
    line = INCIDENT[: INCIDENT.index(PARK_A)].count("\n") + 2

    with pytest.raises(PortalError) as caught:
        load_incident_file(engine, path)

    assert str(caught.value) == (
        f"{path}:{line}: partner 1: forward must be one of: each, daily, not {shown}"
    )
