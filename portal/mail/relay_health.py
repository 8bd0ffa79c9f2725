"""What a process's recent attempts to reach the mail relay say: for /healthz, in memory;
and the check of the relay at start."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from portal.mail.delivery import Sender, SmtpSender

log = logging.getLogger("portal.mail")

# A failure counts this long: past the longest backoff (5 min), so that a relay that stays
# down, with mail waiting, keeps being reported between two retries of one message.
RECENT_SECONDS = 360.0
# Failed attempts in a row that make the relay "failing": one 451 to one message is weather.
FAILING_AFTER = 2


@dataclass
class RelayHealth:
    """Counts the relay's failures in a row since its last success."""

    clock: Callable[[], float] = time.monotonic
    in_a_row: int = 0
    last_failure: float = float("-inf")
    reason: str | None = field(default=None)

    def succeeded(self) -> None:
        self.in_a_row, self.reason = 0, None

    def failed(self, reason: str, *, decisive: bool = False) -> None:
        """One failed attempt; `decisive`: the relay could not be reached at all (the
        check at start), which needs no second attempt to be believed."""
        self.in_a_row = max(self.in_a_row + 1, FAILING_AFTER if decisive else 0)
        self.last_failure, self.reason = self.clock(), reason

    @property
    def failing(self) -> bool:
        recent = self.clock() - self.last_failure <= RECENT_SECONDS
        return recent and self.in_a_row >= FAILING_AFTER


async def check_relay(sender: Sender, health: RelayHealth | None = None) -> None:
    """Tries the relay once (connect, EHLO, STARTTLS and AUTH as configured) and warns when
    it does not answer: people are told "check your inbox" meanwhile. Sends nothing."""
    if not isinstance(sender, SmtpSender):
        return
    reason = await sender.probe()
    if reason is None:
        log.info("mail relay %s answers", sender.relay)
        if health is not None:
            health.succeeded()
        return
    log.warning("mail relay %s not reachable: %s; mail waits in the outbox", sender.relay, reason)
    if health is not None:
        health.failed(reason, decisive=True)
