"""Where bounces come from: a Maildir, an mbox file, standard input, or an LMTP listener.

The LMTP listener (aiosmtpd's `LMTP`) is what a mail server hands bounces to: it accepts
only recipients at PORTAL_BOUNCE_ADDRESS with a tag and answers one status per recipient
after DATA, as LMTP asks (RFC 2033) and Mailman 3's LMTP runner does. A bounce it cannot
record for now (the database away) is answered 451, so the mail server keeps it and tries
again; one it ignores (forged, unparseable) is still answered 250, so that no bounce of a
bounce goes out.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from pathlib import Path
from typing import BinaryIO

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session
from anyio import to_thread

from portal.reach.bounces import BounceReader

log = logging.getLogger("portal.bounces")

SEEN = "S"  # the Maildir flag of a bounce read: the next run leaves it alone


def read_maildir(reader: BounceReader, folder: Path) -> None:
    """Reads each bounce of a Maildir not read before (new/ and cur/ without the Seen flag),
    then flags it Seen, so that a run from cron reads each bounce once."""
    box = mailbox.Maildir(folder, factory=None, create=False)
    for key in list(box.keys()):
        found = box.get_message(key)
        if SEEN in found.get_flags():
            continue
        reader.read(box.get_bytes(key))
        found.set_subdir("cur")
        found.add_flag(SEEN)
        box[key] = found


def read_mbox(reader: BounceReader, path: Path) -> None:
    """Reads every bounce of an mbox file; the file is left as it was."""
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            reader.read(box.get_bytes(key))
    finally:
        box.close()


def read_stream(reader: BounceReader, stream: BinaryIO) -> None:
    """Reads one bounce from a stream (standard input: a mail server's pipe transport)."""
    reader.read(stream.read())


class BounceHandler:
    """aiosmtpd's handler: bounce recipients only, one status per recipient after DATA."""

    def __init__(self, reader: BounceReader) -> None:
        self.reader = reader

    async def handle_RCPT(
        self,
        server: LMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.reader.is_ours(address):
            return "550 5.1.1 not a bounce address of this portal"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        statuses = [await self._one(data, recipient) for recipient in envelope.rcpt_tos]
        return "\r\n".join(statuses)

    async def _one(self, data: bytes, recipient: str) -> str:
        try:
            outcome = await to_thread.run_sync(self.reader.read, data, [recipient])
        except Exception as exc:
            log.warning("bounce not recorded, asked again later: %s", type(exc).__name__)
            return "451 4.3.0 cannot record the bounce now, try again later"
        return f"250 2.0.0 {outcome.split(':')[0]}"


async def serve_lmtp(reader: BounceReader, host: str, port: int, stop: asyncio.Event) -> None:
    """Listens for bounces over LMTP on host:port until `stop` is set."""
    loop = asyncio.get_running_loop()
    handler = BounceHandler(reader)
    server = await loop.create_server(lambda: LMTP(handler, hostname="portal"), host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
