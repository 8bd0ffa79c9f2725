"""Stored incidents and partners: write them from a checked incident file, read them back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from portal.core.blind_index import KdfParams
from portal.core.clock import utcnow
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents.file import parse_incident_file
from portal.store import tables


@dataclass(frozen=True)
class Partner:
    id: int
    slug: str
    name: str
    contact_email: str
    webhook_url: str | None
    webhook_secret: str | None
    language: str | None = None  # of the request emails to it; None: the incident's default
    certainty: str = "confirmed"  # or "possible": the set may hold people not exposed
    # Markdown per language, heading its entry page /{incident}/p/{slug}/; not part of the
    # identity (a Partner is a dict key).
    intro: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    forward: str = "each"  # or "daily": a digest a day and the partner queue page


@dataclass(frozen=True)
class Incident:
    id: int
    slug: str
    languages: list[str]
    title: dict[str, str]
    notice: dict[str, str]
    faq: list[dict[str, Any]]
    discovered: date | None
    contact_email: str
    regulator_notified: bool
    kdf: KdfParams
    organisation: str | None = None  # who runs the portal: the header, the mail's sender name
    website: str | None = None  # the organisation's own site, which links to the portal
    sections: dict[str, dict[str, str]] = field(default_factory=dict)  # incident_file.SECTIONS

    def text(self, mapping: dict[str, str], lang: str) -> str:
        """The text in `lang`, falling back to the incident's default language."""
        return mapping.get(lang) or mapping.get(self.languages[0], "")


@dataclass(frozen=True)
class LoadResult:
    incident: Incident
    created: bool
    partners_created: int
    partners_updated: int
    warnings: list[str] = field(default_factory=list)  # "file:line: ..." loaded anyway


# -- storing ---------------------------------------------------------------------------


def load_incident_file(engine: Engine, path: Path) -> LoadResult:
    """Creates or updates the incident and upserts its partners, in one transaction.

    Partners missing from the file are kept: removing one would delete its exposures.
    """
    data = parse_incident_file(path)
    with engine.begin() as conn:
        incident_id, created = _store_incident(conn, data)
        partner_counts = [_store_partner(conn, incident_id, p) for p in data["partners"]]
        incident = get_incident(conn, data["slug"])
    assert incident is not None
    return LoadResult(
        incident=incident,
        created=created,
        partners_created=partner_counts.count(True),
        partners_updated=partner_counts.count(False),
        warnings=data["warnings"],
    )


def _store_incident(conn: Connection, data: dict[str, Any]) -> tuple[int, bool]:
    now = utcnow()
    values = {
        "languages": _json(data["languages"]),
        "title": _json(data["title"]),
        "notice": _json(data["notice"]),
        "faq": _json(data["faq"]),
        "discovered": data["discovered"],
        "contact_email": data["contact_email"],
        "regulator_notified": data["regulator_notified"],
        "organisation": data["organisation"],
        "website": data["website"],
        "sections": _json(data["sections"]),
        "updated_at": now,
    }
    t = tables.incidents
    existing = conn.execute(select(t).where(t.c.slug == data["slug"])).first()
    kdf: KdfParams | None = data["kdf"]
    if existing is not None:
        # The kdf parameters stay as stored: lookups must hash as the import did.
        if kdf is not None and kdf != _kdf(existing):
            raise PortalError(
                f"incident {data['slug']!r} keeps its blind_index parameters "
                f"({_kdf(existing)}): a lookup must hash as its import did"
            )
        conn.execute(t.update().where(t.c.id == existing.id).values(**values))
        return existing.id, False
    kdf = kdf or KdfParams()
    result = conn.execute(
        t.insert()
        .values(
            slug=data["slug"],
            kdf_time_cost=kdf.time_cost,
            kdf_memory_cost=kdf.memory_cost,
            kdf_parallelism=kdf.parallelism,
            created_at=now,
            **values,
        )
        .returning(t.c.id)
    )
    return int(result.scalar_one()), True


def _kdf(row: Any) -> KdfParams:
    return KdfParams(row.kdf_time_cost, row.kdf_memory_cost, row.kdf_parallelism)


def _store_partner(conn: Connection, incident_id: int, data: dict[str, Any]) -> bool:
    """Inserts or updates one partner by slug; tells whether it was created."""
    t = tables.partners
    keys = (
        "name", "contact_email", "webhook_url", "webhook_secret", "language", "certainty",
        "forward",
    )  # fmt: skip
    values = {k: data[k] for k in keys}
    values["intro"] = _json(data["intro"]) if data.get("intro") else None
    existing = conn.scalar(
        select(t.c.id).where(t.c.incident_id == incident_id, t.c.slug == data["slug"])
    )
    if existing is not None:
        conn.execute(t.update().where(t.c.id == existing).values(**values))
        return False
    conn.execute(t.insert().values(incident_id=incident_id, slug=data["slug"], **values))
    return True


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- reading back ----------------------------------------------------------------------


def get_incident(conn: Connection, slug: str) -> Incident | None:
    row = conn.execute(select(tables.incidents).where(tables.incidents.c.slug == slug)).first()
    return _incident(row._mapping) if row else None


def require_incident(conn: Connection, slug: str) -> Incident:
    """The incident, or a PortalError that names the known ones (for the operator's CLI)."""
    found = get_incident(conn, slug)
    if found is None:
        known = ", ".join(i.slug for i in list_incidents(conn))
        hint = f"known: {known}" if known else "none is loaded yet: portal incident load FILE.toml"
        raise PortalError(f"unknown incident {shown(repr(slug))} ({hint})")
    return found


def list_incidents(conn: Connection) -> list[Incident]:
    rows = conn.execute(select(tables.incidents).order_by(tables.incidents.c.id))
    return [_incident(row._mapping) for row in rows]


def get_partners(conn: Connection, incident_id: int) -> list[Partner]:
    t = tables.partners
    rows = conn.execute(select(t).where(t.c.incident_id == incident_id).order_by(t.c.id))
    return [_partner(row._mapping) for row in rows]


def get_partner(conn: Connection, incident_id: int, slug: str) -> Partner | None:
    t = tables.partners
    row = conn.execute(select(t).where(t.c.incident_id == incident_id, t.c.slug == slug)).first()
    return _partner(row._mapping) if row else None


def _incident(row: Any) -> Incident:
    return Incident(
        id=row["id"],
        slug=row["slug"],
        languages=json.loads(row["languages"]),
        title=json.loads(row["title"]),
        notice=json.loads(row["notice"]),
        faq=json.loads(row["faq"]),
        discovered=row["discovered"],
        contact_email=row["contact_email"],
        regulator_notified=row["regulator_notified"],
        kdf=KdfParams(
            time_cost=row["kdf_time_cost"],
            memory_cost=row["kdf_memory_cost"],
            parallelism=row["kdf_parallelism"],
        ),
        organisation=row["organisation"],
        website=row["website"],
        sections=json.loads(row["sections"] or "{}"),
    )


def _partner(row: Any) -> Partner:
    return Partner(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        contact_email=row["contact_email"],
        webhook_url=row["webhook_url"],
        webhook_secret=row["webhook_secret"],
        language=row["language"],
        certainty=row["certainty"],
        intro=json.loads(row["intro"] or "{}"),
        forward=row["forward"],
    )


def exposures_of(conn: Connection, incident: Incident, bidx: bytes) -> dict[Partner, int]:
    """The incident's partners where an address occurs, each with its field bit set."""
    by_id = {p.id: p for p in get_partners(conn, incident.id)}
    rows = conn.execute(
        select(tables.exposures.c.partner_id, tables.exposures.c.fields).where(
            tables.exposures.c.bidx == bidx,
            tables.exposures.c.partner_id.in_(by_id),
        )
    ).all()
    return {by_id[r.partner_id]: r.fields for r in rows}
