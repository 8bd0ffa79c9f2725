"""The operator's commands: `admin create|list|disable`, `stats`, `export` and `purge`."""

from __future__ import annotations

import getpass
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from portal.cli.base import (
    database,
    load_settings,
    operator_errors,
    out,
    print_table,
    say,
    when,
)
from portal.core.errors import PortalError
from portal.core.files import write_private
from portal.incidents.importer import require_partner
from portal.operator import accounts
from portal.operator.export import export_requests
from portal.operator.retention import purge as apply_retention
from portal.operator.retention import purge_incident
from portal.operator.stats import (
    PARTNER_NOTICES,
    IncidentFigures,
    PartnerFigures,
    RelayFigures,
    bounces_counted,
    incident_figures,
    partner_figures,
    relay_figures,
)
from portal.store import audit


@operator_errors
def purge(
    incident: Annotated[
        str | None,
        typer.Option("--incident", help="With --all: the closed incident to erase entirely."),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="With --incident: erase that incident entirely.")
    ] = False,
) -> None:
    """Apply the retention rules; safe to run daily from cron.

    Deletes links a day after they expire, expired sessions (the person's and the
    operators'), delivered mail that proves no request, the address of deletion requests
    closed longer ago than PORTAL_DELETION_RETENTION_DAYS (90), and audit entries older
    than PORTAL_AUDIT_RETENTION_DAYS (730). Prints what it removed.

    With --incident SLUG --all it erases a closed incident entirely (its partners, their
    records, links, sessions, deletion requests and their messages) and nothing else; it
    refuses while any of its requests is open or any of their messages is undelivered.

    Example: portal purge   (daily, from cron)

    Example: portal purge --incident ticketing-2021 --all
    """
    if (incident is None) != (not everything):
        raise typer.BadParameter("--incident SLUG and --all go together", param_hint="--all")
    settings = load_settings()
    with database(settings) as engine:
        if incident is not None:
            gone = purge_incident(engine, incident)
            out.print(
                f"erased incident {gone.incident}: {gone.partners} partner(s), {gone.exposures} "
                f"record(s), {gone.requests} deletion request(s), {gone.links} link(s), "
                f"{gone.sessions} session(s), {gone.messages} message(s)",
                highlight=False,
                soft_wrap=True,
            )
            return
        report = apply_retention(engine, settings)
    out.print(
        f"purged {report.links} link(s), {report.sessions} session(s), {report.operator_sessions} "
        f"operator session(s), {report.outbox} delivered message(s), "
        f"{report.deletion_addresses} closed request address(es), {report.audit_entries} "
        "audit entr(ies)",
        highlight=False,
        soft_wrap=True,
    )


@operator_errors
def stats(
    incident: Annotated[
        str | None, typer.Argument(help="An incident's slug (default: all).")
    ] = None,
) -> None:
    """Print per-partner figures: records, people found affected, deletion requests by
    status, overdue and median days to close, direct notices and follow-up notices naming
    the partner (queued, sent, failed, bounced); and per incident: distinct people, lookups,
    verified visits, mail and notices. /admin/ shows the same figures.

    Then the bounces `portal bounces` counted without marking a notice: temporary failures,
    and forged, untagged or unparseable ones.

    Nothing here says who looked up what: lookups and visits are counted, not recorded.

    Example: portal stats ticketing-2021
    """
    settings = load_settings()
    with database(settings) as engine, engine.connect() as conn:
        partners = partner_figures(conn, incident=incident)
        incidents = incident_figures(conn, incident=incident)
        relay = relay_figures(conn)
        unmarked = bounces_counted(conn)
    print_table(_requests_table(partners))
    print_table(_notices_table(partners))
    for figures in incidents:
        _print_incident_figures(figures)
    if any(unmarked.values()):
        say("bounces read: " + ", ".join(f"{k} {v}" for k, v in unmarked.items()))
    if relay.failing:
        say(_relay_failing(relay))


def _requests_table(partners: list[PartnerFigures]) -> Table:
    statuses = ("received", "forwarded", "forward_failed", "completed", "rejected")
    table = Table(title="per partner: records, and deletion requests by status")
    columns = (
        "incident",
        "partner",
        "records",
        "found affected",
        *statuses,
        "overdue",
        "median days",
    )
    for column in columns:
        justify: Literal["left", "right"] = "left" if column in ("incident", "partner") else "right"
        table.add_column(column.replace("_", " "), justify=justify, overflow="fold")
    for row in partners:
        median = row.median_days_to_close
        table.add_row(
            row.incident,
            row.partner,
            str(row.records),
            str(row.found_affected),
            *(str(row.requests.get(s, 0)) for s in statuses),
            str(row.overdue),
            "-" if median is None else f"{median:g}",
        )
    return table


def _notices_table(partners: list[PartnerFigures]) -> Table:
    noticed = Table(title="per partner: direct notices naming it, by status")
    for column in ("incident", "partner", *(f"notices {s}" for s in PARTNER_NOTICES)):
        noticed.add_column(column, justify="left" if column in ("incident", "partner") else "right")
    for row in partners:
        noticed.add_row(row.incident, row.partner, *(str(row.notices[s]) for s in PARTNER_NOTICES))
    return noticed


def _print_incident_figures(figures: IncidentFigures) -> None:
    mail = ", ".join(f"{k} {v}" for k, v in sorted(figures.mail.items())) or "none"
    out.print(
        f"{figures.incident}: {figures.distinct_people} distinct people in the data, "
        f"{figures.lookups} lookup(s) answered with a link, {figures.verified_visits} "
        f"verified visit(s), {figures.links_issued} link(s) on record; mail: {mail}",
        highlight=False,
        soft_wrap=True,
    )
    notices = ", ".join(f"{k} {v}" for k, v in figures.notices.items())
    say(f"{figures.incident}: notices: {notices}")
    if figures.mail_failures:
        reasons = "; ".join(
            f"{count} {FAILURE_REASONS.get(reason, reason)}"
            for reason, count in sorted(figures.mail_failures.items())
        )
        say(f"{figures.incident}: mail given up: {reasons}")


def _relay_failing(relay: RelayFigures) -> str:
    """The newest attempt at the relay failed: when, why, and what waits for it."""
    assert relay.last_failed_at is not None
    reason = (relay.last_error or "").partition(": ")[2] or relay.last_error
    sent = when(relay.last_sent_at) or "never"
    return (
        f"mail relay failing: the newest attempt, {when(relay.last_failed_at)}, failed: "
        f"{reason}; {relay.waiting} message(s) wait to be tried again; last delivery: {sent}"
    )


FAILURE_REASONS = {
    "NoSmtpUtf8": "the relay does not offer SMTPUTF8, which a non-ASCII address needs",
    "SMTPRecipientRefused": "refused by the recipient's server (bounced)",
    "SMTPRecipientsRefused": "refused by the recipient's server (bounced)",
    "SMTPDataError": "the message refused by the server",
}


@operator_errors
def export_command(
    incident: Annotated[str, typer.Argument(help="The incident's slug.")],
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the CSV to this file, readable by you alone (mode 0600), instead of "
            "to standard output.",
        ),
    ] = None,
) -> None:
    """Write a partner's deletion requests as CSV: the file /admin/ exports (reference,
    email, received, due, status, closed, outcome; cells that a spreadsheet would run as a
    formula start with ').

    The file holds the people's addresses. With --out it is written readable by you alone
    (mode 0600), whole or not at all. Every export is written in the audit log, as one from
    the admin area is, with the name you are logged in as on this machine (cli:NAME).

    Example: portal export ticketing-2021 park-a --out park-a-requests.csv
    """
    settings = load_settings()
    actor = f"cli:{_os_user()}"
    # One transaction: if the CSV cannot be written, the audit log does not say it was.
    with database(settings) as engine, engine.begin() as conn:
        require_partner(conn, incident, partner)
        body, rows = export_requests(conn, incident=incident, partner=partner, actor=actor)
        if out_file is None:
            sys.stdout.buffer.write(body)
            sys.stdout.buffer.flush()
        else:
            write_private(out_file, body)
    if out_file is not None:
        say(f"exported {rows} request(s) of {incident}/{partner} to {out_file} (mode 0600)")


def _os_user() -> str:
    """The login name that ran the command, for the audit log; "(unknown)" if it has none
    that reads as a plain name (the log holds no address)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return name if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) else "(unknown)"


@operator_errors
def admin_create(
    username: Annotated[str, typer.Argument(help="The operator's name (lower case, no @).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an operator account for the admin area.

    The password is asked twice without showing it, or read from the first line of
    standard input with --password-stdin. It must be at least 12 characters long and not
    one of the 10,000 most common passwords. The hash is argon2id.

    Example: portal admin create alice
    """
    settings = load_settings()
    accounts.check_username(username)
    password = _read_password(password_stdin)
    accounts.check_password(password, username=username)
    with database(settings) as engine, engine.begin() as conn:
        operator = accounts.create_operator(conn, username=username, password=password)
        audit.record(conn, actor="cli", action="operator_created", object=f"operator:{username}")
    out.print(
        f"operator {operator.username} created; sign in at {settings.base_url}/admin/login",
        soft_wrap=True,
    )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise PortalError("no password on standard input")
        return password
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@operator_errors
def admin_list() -> None:
    """List the operator accounts: name, created, last login, disabled.

    Example: portal admin list
    """
    from portal.operator import accounts

    settings = load_settings()
    with database(settings) as engine, engine.connect() as conn:
        operators = accounts.list_operators(conn)
    table = Table(title="operator accounts")
    for column in ("name", "created", "last login", "disabled"):
        table.add_column(column, overflow="fold")
    for op in operators:
        table.add_row(
            op.username,
            when(op.created_at),
            when(op.last_login_at) or "never",
            when(op.disabled_at) or "no",
        )
    print_table(table)


@operator_errors
def admin_disable(
    username: Annotated[str, typer.Argument(help="The operator's name.")],
) -> None:
    """Disable an operator account; its sessions end at once.

    Example: portal admin disable alice
    """
    settings = load_settings()
    with database(settings) as engine, engine.begin() as conn:
        accounts.disable_operator(conn, username)
        audit.record(conn, actor="cli", action="operator_disabled", object=f"operator:{username}")
    out.print(f"operator {username} disabled; their sessions have ended")
