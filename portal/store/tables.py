"""The database schema: SQLAlchemy Core tables with a naming convention."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Deployment-wide values that live with the data, such as the blind-index salt.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("languages", Text, nullable=False),  # JSON list, first is the default
    Column("title", Text, nullable=False),  # JSON {lang: text}
    Column("notice", Text, nullable=False),  # JSON {lang: markdown}
    Column("faq", Text, nullable=False),  # JSON [{question: {...}, answer: {...}}]
    Column("discovered", Date, nullable=True),
    Column("contact_email", String(254), nullable=False),
    Column("regulator_notified", Boolean, nullable=False, default=False),
    Column("organisation", String(200), nullable=True),  # who runs the portal
    Column("website", Text, nullable=True),  # the organisation's site, which links here
    Column("sections", Text, nullable=True),  # JSON {section: {lang: markdown}}
    # The argon2id parameters of the blind index: a lookup hashes as the import did.
    Column("kdf_time_cost", Integer, nullable=False),
    Column("kdf_memory_cost", Integer, nullable=False),
    Column("kdf_parallelism", Integer, nullable=False),
    # A keyed hash of a fixed string under the pepper and salt its records were imported
    # with (portal.incidents.fingerprints): another pepper would make every lookup miss.
    Column("pepper_fingerprint", String(64), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

partners = Table(
    "partners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("contact_email", String(254), nullable=False),
    Column("webhook_url", Text, nullable=True),
    Column("webhook_secret", Text, nullable=True),
    Column("language", String(8), nullable=True),  # of the request emails to it
    # "possible": the data set may hold people whose data were not exposed.
    Column("certainty", String(16), nullable=False, server_default="confirmed"),
    Column("intro", Text, nullable=True),  # JSON {lang: markdown}: its entry page's text
    # "each": every request by itself; "daily": a digest a day and the queue page (§8).
    Column("forward", String(8), nullable=False, server_default="each"),
    UniqueConstraint("incident_id", "slug", name="uq_partners_incident_slug"),
)

# One row per leaked email (as its blind index) per partner; `fields` is a bit set (fields.py).
# The primary key is the only index: every query names the partner (migration 0008).
exposures = Table(
    "exposures",
    metadata,
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
    Column("bidx", LargeBinary(32), primary_key=True),
    Column("fields", BigInteger, nullable=False),
)

# An emailed link; only the SHA-256 of its secret is kept, the address only sealed by it.
links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("purpose", String(32), nullable=False),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("bidx", LargeBinary(32), nullable=False),
    Column("sealed_email", LargeBinary, nullable=True),
    Column("lang", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime, nullable=True),
    # Asked on a partner's entry page: its results list that partner first.
    Column("partner_id", Integer, nullable=True),
    # Asked from a verified session's results page: confirmed in that same browser, the
    # address joins that session (session_addresses) instead of starting one.
    Column("session_id", Integer, nullable=True),
)

# A verified visit, started by confirming a link; the cookie holds the secret, we its hash.
sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("bidx", LargeBinary(32), nullable=False),
    Column("sealed_email", LargeBinary, nullable=True),
    Column("lang", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("verified_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("partner_id", Integer, nullable=True),  # the entry page's partner, listed first
    Column("letter_code_id", Integer, nullable=True),  # a session a letter's code started
)

# The further addresses of a session (design §2 "several addresses"), each added only by
# confirming its own link in the session's browser; sealed by the session's secret like the
# session's first address, and gone with the session.
session_addresses = Table(
    "session_addresses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("bidx", LargeBinary(32), nullable=False),
    Column("sealed_email", LargeBinary, nullable=False),
    Column("verified_at", DateTime, nullable=False),
    UniqueConstraint("session_id", "bidx", name="uq_session_addresses_session_bidx"),
)

deletion_requests = Table(
    "deletion_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(16), nullable=False, unique=True),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("bidx", LargeBinary(32), nullable=False),
    # The person asked for deletion and the partner needs the address (design §4.6).
    Column("email", String(320), nullable=True),
    Column("fields", BigInteger, nullable=False),
    Column("lang", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("verified_at", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("extended_due_on", Date, nullable=True),
    Column("extension_reason", Text, nullable=True),
    Column("closed_at", DateTime, nullable=True),
    Column("ground", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("note", Text, nullable=True),
    Column("partner_reference", String(200), nullable=True),
    # Bumped by every change: a form carries the version it showed, and a change made
    # meanwhile by someone else makes the guarded UPDATE match nothing.
    Column("version", Integer, nullable=False, server_default="0"),
    Column("forwarded_at", DateTime, nullable=True),
    Column("closed_by", String(100), nullable=True),  # "operator:NAME" or "partner:SLUG"
    Column("closed_via", String(16), nullable=True),  # admin, link or api
    Column("kept_fields", BigInteger, nullable=True),  # bit set of what a rejection keeps
    Column("last_reminded_at", DateTime, nullable=True),
    Column("reminders_sent", Integer, nullable=False, server_default="0"),
    # The daily digest that carried it to a forward="daily" partner: set in the transaction
    # that queues the digest, so no request is in two digests.
    Column("digest_id", ForeignKey("partner_digests.id", ondelete="SET NULL"), nullable=True),
    UniqueConstraint("partner_id", "bidx", name="uq_deletion_requests_partner_bidx"),
    Index("ix_deletion_requests_bidx", "bidx"),
)

deletion_events = Table(
    "deletion_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", ForeignKey("deletion_requests.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("note", Text, nullable=True),
    Column("via", String(16), nullable=True),  # admin, link, api, mail, portal
)

# A daily digest to a forward="daily" partner: its email and batch webhook in the outbox.
partner_digests = Table(
    "partner_digests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("requests", Integer, nullable=False),
    # Plain ids, not foreign keys: the outbox points at requests, which point here.
    Column("outbox_id", Integer, nullable=True),
    Column("webhook_outbox_id", Integer, nullable=True),
    Index("ix_partner_digests_partner_id_created_at", "partner_id", "created_at"),
)

# What a partner's upload of outcomes came to, shown on its queue page after the upload:
# counts, and per refused row its line and reason (references only, no addresses).
partner_uploads = Table(
    "partner_uploads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("applied", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
    Column("refusals", Text, nullable=False),  # JSON [[line, reason], ...]
)

# The durable mail (and webhook) queue. Recipient and bodies are erased on delivery.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("channel", String(16), nullable=False, default="email"),
    Column("recipient", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("body_text", Text, nullable=True),
    Column("body_html", Text, nullable=True),
    # The From header's display name when PORTAL_MAIL_FROM has none: the organisation.
    Column("sender_name", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_until", DateTime, nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("message_id", Text, nullable=True),
    Column("payload_sha256", String(64), nullable=True),
    Column("response_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("attempted_at", DateTime, nullable=True),  # the last attempt, sent or failed
    Column(
        "deletion_request_id",
        ForeignKey("deletion_requests.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

# A direct notice (design §7): one per address (as its blind index) per incident, whichever
# partners' files name it. The address itself is only in its outbox row, until delivery.
notices = Table(
    "notices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("bidx", LargeBinary(32), nullable=False),
    Column("status", String(16), nullable=False),  # queued, sent, failed, bounced
    Column("lang", String(8), nullable=False),
    # Its slot in the throttled schedule: the outbox row is not due before it.
    Column("send_after", DateTime, nullable=False),
    Column("outbox_id", ForeignKey("outbox.id", ondelete="SET NULL"), nullable=True),
    Column("link_id", ForeignKey("links.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    UniqueConstraint("incident_id", "bidx", name="uq_notices_incident_bidx"),
    Index("ix_notices_outbox_id", "outbox_id"),
    Index("ix_notices_send_after", "send_after"),
)

# A follow-up notice (design §8 "Later partners"): a partner notified after the person's
# notice went out is named once, in one follow-up (which later partners may join while it
# is unsent). `number` counts a notice's follow-ups: two runs can never make the same one.
notice_followups = Table(
    "notice_followups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("notice_id", ForeignKey("notices.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # queued, sent, failed, bounced
    Column("send_after", DateTime, nullable=False),
    Column("outbox_id", ForeignKey("outbox.id", ondelete="SET NULL"), nullable=True),
    Column("link_id", ForeignKey("links.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    UniqueConstraint("notice_id", "number", name="uq_notice_followups_notice_number"),
    Index("ix_notice_followups_outbox_id", "outbox_id"),
)

# The partners whose files named a notice's address, with the fields each file holds for it.
# `named`: the notice as sent names the partner; false: notified after the notice went out,
# and then named by the follow-up `followup_id` (none when the notice failed or bounced).
# The primary key makes a partner named at most once per person: never two follow-ups.
notice_partners = Table(
    "notice_partners",
    metadata,
    Column("notice_id", ForeignKey("notices.id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
    Column("fields", BigInteger, nullable=False),
    Column("named", Boolean, nullable=False),
    Column("added_at", DateTime, nullable=False),
    Column("followup_id", ForeignKey("notice_followups.id", ondelete="SET NULL"), nullable=True),
)

# An operator of the admin area; the password only as its argon2id hash.
operators = Table(
    "operators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime, nullable=True),
    Column("disabled_at", DateTime, nullable=True),
)

# A signed-in operator; the cookie holds the secret, we its hash.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("operator_id", ForeignKey("operators.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

# What operators, partners and the portal did: no personal data, only names and references.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object", String(200), nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_at", "at"),
)

# Aggregate figures per incident, partner (0: the whole incident) and day: counting a
# lookup or a visit never records whose it was.
counters = Table(
    "counters",
    metadata,
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", Integer, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# The operator's notice-day overview (/admin/): what happened per hour, counted as it happens,
# never derived from personal rows, so that purging those rows leaves the figures.
hourly_counters = Table(
    "hourly_counters",
    metadata,
    Column("hour", DateTime, primary_key=True),  # UTC, on the hour
    Column("name", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# A letter's personal code (design §8): its keyed hash only, never the code or the postal
# address. `person_key` is the blind index of the --key columns, which finds the person again
# in a later partner's file; the code's exposures live in `exposures` with `bidx = code_hash`.
letter_codes = Table(
    "letter_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("person_key", LargeBinary(32), nullable=False),
    Column("code_hash", LargeBinary(32), nullable=False, unique=True),
    Column("lang", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime, nullable=True),
    UniqueConstraint("incident_id", "person_key", name="uq_letter_codes_incident_person"),
)

# Which partners a code's letters have named: a partner is named once (a first letter or a
# follow-up), so no person gets a second letter for the same partner unless asked (--all).
letter_partners = Table(
    "letter_partners",
    metadata,
    Column("code_id", ForeignKey("letter_codes.id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
    Column("fields", BigInteger, nullable=False),
    Column("lettered_at", DateTime, nullable=False),
)
