"""The composition root that `app` and the CLI share: templates, the mail worker, the reminders.

Each is built here once per process and handed down; no feature module builds a worker or
finds the templates folder itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine
from starlette.templating import Jinja2Templates

from portal.core.config import Settings
from portal.mail.outbox import OutboxHook, each
from portal.mail.renderer import Renderer
from portal.mail.worker import MailWorker
from portal.reach import followups, outcomes
from portal.requests import deletions, digests, forwarding

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"


def renderer(*, pages: Callable[[Path], Jinja2Templates] | None = None) -> Renderer:
    """The one renderer of this process: emails always, pages when the web asks for them."""
    return Renderer(TEMPLATES_DIR, pages=pages)


def mail_worker(engine: Engine, settings: Settings) -> MailWorker:
    """The outbox worker, telling requests when their partner's copy went out or failed,
    and notices when they were delivered, bounced or given up on."""
    return MailWorker(
        engine,
        settings,
        on_sent=_both(
            each(deletions.mark_forwarded),
            each(digests.mark_forwarded),
            outcomes.mark_sent,
            each(followups.mark_sent),
        ),
        on_failed=_both(
            each(deletions.mark_forward_failed),
            each(digests.mark_failed),
            outcomes.mark_failed,
            each(followups.mark_failed),
        ),
    )


def _both(*hooks: OutboxHook) -> OutboxHook:
    """One outbox hook that runs each of `hooks` in turn, in the same transaction."""

    def run(conn: Connection, rows: Sequence[tuple[int, int | None]]) -> None:
        for hook in hooks:
            hook(conn, rows)

    return run


async def reminders(
    engine: Engine, settings: Settings, renderer: Renderer, worker: MailWorker, stop: asyncio.Event
) -> None:
    """Reminds partners, and queues the daily digests when due, next to the mail worker,
    which then sends them at once."""
    await asyncio.gather(
        forwarding.remind_periodically(
            engine, settings, stop, renderer=renderer, queued=worker.wake
        ),
        digests.send_periodically(engine, settings, stop, renderer=renderer, queued=worker.wake),
    )


async def deliver_and_remind(engine: Engine, settings: Settings, stop: asyncio.Event) -> None:
    """The mail worker and the reminders, apart from the web (`portal mail-worker`)."""
    worker = mail_worker(engine, settings)
    await asyncio.gather(
        worker.run_until_signalled(stop), reminders(engine, settings, renderer(), worker, stop)
    )
