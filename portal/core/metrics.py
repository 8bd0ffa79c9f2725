"""The Prometheus metrics the portal exports on /metrics; none carries personal data.

Labels are fixed words (a route template, a status, a limit's name), never a value a
visitor sent. With several worker processes, PROMETHEUS_MULTIPROC_DIR (set by `portal
serve --workers N`) makes every process write its figures there and /metrics sum them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Pages answer in milliseconds: buckets from 1 ms, where the default ones start at 5 ms.
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Counter(
    "portal_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
request_seconds = Histogram(
    "portal_request_seconds", "HTTP request latency by route template", ["route"], buckets=FAST
)
lookup_response_seconds = Histogram(
    "portal_lookup_response_seconds",
    "Time to answer a lookup, as the person sees it (the background work not included)",
    buckets=FAST,
)
lookups_total = Counter("portal_lookups_total", "Lookups submitted")
lookups_shed_total = Counter(
    "portal_lookups_shed_total", "Lookups answered but dropped: the lookup queue was full"
)
lookups_processed_total = Counter(
    "portal_lookups_processed_total",
    "Lookups whose background work is done, by outcome",
    ["outcome"],  # queued, client_limited, address_limited, no_incident, failed
)
lookup_queue_depth = Gauge(
    "portal_lookup_queue_depth",
    "Lookups waiting to be hashed",
    multiprocess_mode="livesum",
)
hashes_total = Counter("portal_hashes_total", "Blind indexes computed for lookups (argon2id)")
link_batches_total = Counter("portal_link_batches_total", "Transactions that wrote lookup links")
links_written_total = Counter("portal_links_written_total", "Lookup links written")
rate_limited_total = Counter("portal_rate_limited_total", "Requests refused by a limit", ["limit"])
limits_fallback_total = Counter(
    "portal_limits_fallback_total",
    "Limit checks answered from process memory while Redis was unreachable",
)
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
# Read from the database when /metrics is scraped (portal.web.ops), by whichever process
# answers: every process sees the same database, so the newest reading is the one shown.
database_up = Gauge(
    "portal_database_up",
    "1 when the database answered the last scrape (or /healthz), 0 when it did not",
    multiprocess_mode="livemostrecent",
)
outbox_depth = Gauge(
    "portal_outbox_depth",
    "Outbox messages owed now: due, being sent, or waiting to be tried again",
    multiprocess_mode="livemostrecent",
)
requests_overdue = Gauge(
    "portal_requests_overdue",
    "Deletion requests still open after their (extended) due date",
    multiprocess_mode="livemostrecent",
)


def exposition() -> bytes:
    """The text /metrics answers: this process's figures, or every worker's summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
