"""Reading the decision forms that operators and partners post about a deletion request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData

from portal.core.fields import BY_KEY, to_bits


@dataclass(frozen=True)
class Decision:
    """What a form asks to do; the lifecycle (decisions.py) judges it."""

    status: str
    note: str | None
    ground: str | None
    reason: str | None
    partner_reference: str | None
    kept_fields: int
    version: int | None


def read_decision(form: FormData, *, status_field: str = "status") -> Decision:
    return Decision(
        status=text(form, status_field) or "",
        note=text(form, "note"),
        ground=text(form, "ground"),
        reason=text(form, "reason"),
        partner_reference=text(form, "partner_reference"),
        kept_fields=to_bits(k for k in form.getlist("kept") if isinstance(k, str) and k in BY_KEY),
        version=number(form, "version"),
    )


def text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


def number(form: FormData, name: str) -> int | None:
    value = text(form, name)
    return int(value) if value is not None and value.isdigit() and len(value) < 10 else None
