"""The notice-day overview of /admin/: the last 48 hours per hour, and what needs action now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from portal.core.clock import utcnow
from portal.mail import outbox
from portal.operator import stats
from portal.store import hourly

HOURS = 48
# The charts, in the order of the day: people look up, mail goes out, requests follow.
CHARTS = (
    hourly.LOOKUPS,
    hourly.LINK_MAILS,
    hourly.NOTICES_SENT,
    hourly.NOTICES_BOUNCED,
    hourly.REQUESTS_OPENED,
    hourly.REQUESTS_CLOSED,
    hourly.OUTBOX_DEPTH,
)
GAUGES = frozenset({hourly.OUTBOX_DEPTH})  # the hour's highest sample, not a sum


@dataclass(frozen=True)
class Series:
    """One figure per hour, oldest first."""

    name: str
    hours: list[datetime]
    values: list[int]

    @property
    def gauge(self) -> bool:
        return self.name in GAUGES

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def peak(self) -> int:
        return max(self.values)

    @property
    def peak_hour(self) -> datetime:
        """The first hour with the highest figure."""
        return self.hours[self.values.index(self.peak)]


@dataclass(frozen=True)
class Alerts:
    """The figures that need action now; each one 0 when all is well."""

    mail_retrying: int  # messages whose last attempt failed, waiting to be tried again
    mail_given_up: int  # messages given up in the overview's hours
    relay_error: str | None  # the relay's newest error, while its newest attempt failed
    requests_overdue: int
    lookups_shed: int  # in the overview's hours

    @property
    def mail_failing(self) -> int:
        return self.mail_retrying + self.mail_given_up


@dataclass(frozen=True)
class Overview:
    charts: list[Series]
    alerts: Alerts
    since: datetime  # the first hour shown
    until: datetime  # the last hour shown (the current one, still counting)


def overview(conn: Connection, *, now: datetime | None = None) -> Overview:
    """The charts of the last HOURS hours up to the current one, and the alerts."""
    now = now or utcnow()
    counted = hourly.series(conn, CHARTS, hours=HOURS, until=now)
    last = hourly.hour_of(now)
    hours = [last - timedelta(hours=HOURS - 1 - n) for n in range(HOURS)]
    relay = stats.relay_figures(conn)
    alerts = Alerts(
        mail_retrying=outbox.retrying(conn, now=now),
        mail_given_up=hourly.total(conn, hourly.MAIL_FAILED, since=hours[0]),
        relay_error=relay.last_error if relay.failing else None,
        requests_overdue=stats.requests_overdue(conn, today=now.date()),
        lookups_shed=hourly.total(conn, hourly.LOOKUPS_SHED, since=hours[0]),
    )
    charts = [Series(name, hours, counted[name]) for name in CHARTS]
    return Overview(charts, alerts, since=hours[0], until=last)
