"""What the results page shows, in the order a person should read it: worst first, advice once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from portal.core.fields import Field
from portal.incidents.stored import Partner
from portal.person.lookups import PartnerResult, Results
from portal.requests.deletions import DeletionRequest


@dataclass(frozen=True)
class PartnerShown:
    partner: Partner
    fields: list[Field]  # most serious first
    request: DeletionRequest | None

    @property
    def severity(self) -> int:
        return max(f.severity for f in self.fields)

    @property
    def possible(self) -> bool:
        return self.partner.certainty == "possible"

    @property
    def by_severity(self) -> list[tuple[int, list[Field]]]:
        """What leaked here at a glance: the fields per severity, the most serious first."""
        return by_severity(self.fields)


@dataclass(frozen=True)
class ResultsView:
    address: str | None
    partners: list[PartnerShown]

    @property
    def worst(self) -> tuple[Field, PartnerShown] | None:
        """The most serious exposed field, and the first partner listed where it leaked."""
        if not self.partners:
            return None
        worst = max(self.partners, key=lambda p: p.severity)
        return worst.fields[0], worst

    @property
    def without_request(self) -> list[PartnerShown]:
        return [p for p in self.partners if p.request is None]


def results_view(
    results: Results,
    requests: dict[int, DeletionRequest],
    *,
    address: str | None,
    first: int | None = None,
) -> ResultsView:
    """Partners by their most serious field (then by how much leaked, then by name), the
    partner `first` (an entry page's, by id) before them all."""
    ordered = sorted(results.partners, key=lambda r: (r.partner.id != first, *_seriousness(r)))
    shown = [
        PartnerShown(
            r.partner, sorted(r.fields, key=lambda f: -f.severity), requests.get(r.partner.id)
        )
        for r in ordered
    ]
    return ResultsView(address, shown)


def advice_once(views: Iterable[ResultsView]) -> list[tuple[int, list[Field]]]:
    """Each field exposed anywhere on the page once, per severity, the most serious first;
    within one severity in the order the page first shows them."""
    seen: dict[str, Field] = {}
    for view in views:
        for shown in view.partners:
            for field in shown.fields:
                seen.setdefault(field.key, field)
    return by_severity(list(seen.values()))


def by_severity(fields: list[Field]) -> list[tuple[int, list[Field]]]:
    ordered = sorted(fields, key=lambda f: -f.severity)  # stable: keeps the order within one
    return [(level, list(group)) for level, group in groupby(ordered, key=lambda f: f.severity)]


def _seriousness(result: PartnerResult) -> tuple[int, int, int, str]:
    worst = max((f.severity for f in result.fields), default=0)
    at_worst = sum(f.severity == worst for f in result.fields)
    return (-worst, -at_worst, -len(result.fields), result.partner.name.lower())
