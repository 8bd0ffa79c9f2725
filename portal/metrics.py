"""The Prometheus metrics the portal exports on /metrics; none carries personal data."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

requests_total = Counter(
    "portal_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
request_seconds = Histogram("portal_request_seconds", "HTTP request latency", ["route"])
lookups_total = Counter("portal_lookups_total", "Lookups submitted")
rate_limited_total = Counter("portal_rate_limited_total", "Requests refused by a limit", ["limit"])
deletion_requests_total = Counter(
    "portal_deletion_requests_total", "Deletion requests by status reached", ["status"]
)
emails_queued_total = Counter("portal_emails_queued_total", "Outbox messages queued", ["kind"])
emails_sent_total = Counter("portal_emails_sent_total", "Outbox messages delivered", ["kind"])
emails_failed_total = Counter(
    "portal_emails_failed_total", "Outbox messages given up after 24 hours", ["kind"]
)
smtp_reconnects_total = Counter(
    "portal_smtp_reconnects_total", "SMTP connections opened in place of one lost or refused"
)
