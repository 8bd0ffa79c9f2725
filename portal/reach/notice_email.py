"""The direct notice as an email: what happened, which partners hold which data, what to do."""

from __future__ import annotations

from dataclasses import dataclass

from portal.core import fields
from portal.core.config import Settings
from portal.incidents.stored import Incident, Partner
from portal.mail.markdown import MailMarkdown
from portal.mail.messages import Message
from portal.mail.renderer import Renderer


@dataclass(frozen=True)
class NamedPartner:
    """A partner as a notice names it: sure or not that the person's data leaked there."""

    name: str
    possible: bool  # its data set also holds people whose data were not exposed
    fields: list[fields.Field]


def render_notice(
    renderer: Renderer,
    settings: Settings,
    incident: Incident,
    lang: str,
    partners: list[tuple[Partner, int]],
    link: str,
    *,
    template: str = "notice",
) -> Message:
    """The notice in `lang`: what happened, which partners hold which data, what to do.

    `template` "notice_followup": the follow-up naming only partners new to the person."""
    named = [
        NamedPartner(p.name, p.certainty == "possible", fields.from_bits(bits))
        for p, bits in partners
    ]
    union = {f.key: f for partner in named for f in partner.fields}
    advice = sorted(union.values(), key=lambda f: (-f.severity, f.bit))
    notice = incident.text(incident.notice, lang)
    markdown = MailMarkdown(settings.base_url)
    return renderer.email(
        template,
        lang,
        incident_title=incident.text(incident.title, lang),
        organisation=incident.organisation,
        website=incident.website,
        portal_url=settings.base_url,
        lookup_url=f"{settings.base_url}/{incident.slug}/",
        contact=incident.contact_email,
        discovered=incident.discovered,
        regulator_notified=incident.regulator_notified,
        notice_text=markdown.text(notice),
        notice_html=markdown.html(notice),
        partners=named,
        only_possible=all(partner.possible for partner in named),
        advice=[f.advice[lang] for f in advice],
        link=link,
        days=settings.notice_link_ttl // 86400,
    )
