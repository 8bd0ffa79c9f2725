"""What the results page shows, in the order a person should read it: worst first, advice once."""

from __future__ import annotations

from dataclasses import dataclass

from portal.deletions import DeletionRequest
from portal.fields import Field
from portal.incidents import Partner
from portal.lookups import PartnerResult, Results


@dataclass(frozen=True)
class FieldShown:
    """One exposed field at one partner; its advice is shown at its first occurrence only."""

    field: Field
    with_advice: bool
    advice_at: Partner  # the partner under which its advice stands


@dataclass(frozen=True)
class PartnerShown:
    partner: Partner
    fields: list[FieldShown]
    request: DeletionRequest | None

    @property
    def severity(self) -> int:
        return max(f.field.severity for f in self.fields)

    @property
    def possible(self) -> bool:
        return self.partner.certainty == "possible"


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
        return worst.fields[0].field, worst

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
    partner `first` (an entry page's, by id) before them all; each field's advice under the
    first partner that shows it."""
    ordered = sorted(results.partners, key=lambda r: (r.partner.id != first, *_seriousness(r)))
    seen: dict[str, Partner] = {}
    shown = []
    for result in ordered:
        fields = []
        for field in result.fields:
            first = field.key not in seen
            seen.setdefault(field.key, result.partner)
            fields.append(FieldShown(field, first, seen[field.key]))
        shown.append(PartnerShown(result.partner, fields, requests.get(result.partner.id)))
    return ResultsView(address, shown)


def _seriousness(result: PartnerResult) -> tuple[int, int, int, str]:
    worst = max((f.severity for f in result.fields), default=0)
    at_worst = sum(f.severity == worst for f in result.fields)
    return (-worst, -at_worst, -len(result.fields), result.partner.name.lower())
