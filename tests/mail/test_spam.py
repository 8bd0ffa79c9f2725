"""Every email the portal sends passes SpamAssassin's local rules with room to spare.

A notice in the spam folder is a notice not given (GDPR Art. 34). Every kind of email, in
Dutch and in English, goes the real way to a real SMTP server (tests/every_email.py); the
bytes that arrive are scored by `spamassassin -t -L` (local rules only: no network, so the
score depends on the message alone) and must score at most MAX_SCORE. One spamassassin
process reads many messages as an mbox (starting one costs a second or two), a process per
core. Without SpamAssassin (`apt-get install spamassassin`; .ci/run installs it) the test is
skipped with that reason; under CI it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import Engine

from portal.core.config import Settings
from tests.every_email import Sent, send_every_email

SPAMASSASSIN = shutil.which("spamassassin")
MAX_SCORE = 0.5
# An mbox "From " line that no message holds: where one message ends in the output.
SEPARATOR = b"From spamassassin-test@portal.invalid Thu Jan  1 00:00:00 2026\n"
_STATUS = re.compile(
    r"^X-Spam-Status: \w+, score=(-?[\d.]+) .*?tests=(.*?)\sautolearn=", re.M | re.S
)
_MESSAGE_ID = re.compile(r"^Message-ID: (<\S+>)", re.M | re.I)


@dataclass(frozen=True)
class Verdict:
    score: float
    rules: list[str]
    report: str  # SpamAssassin's table of the rules hit, with their points


@pytest.fixture
def spamassassin() -> str:
    if SPAMASSASSIN is None:
        missing = "spamassassin is missing: apt-get install spamassassin (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return SPAMASSASSIN


def judged(spamassassin: str, messages: list[bytes]) -> dict[str, Verdict]:
    """SpamAssassin's verdict on each message, by Message-ID: one process per core."""
    cores = min(os.cpu_count() or 1, 4, len(messages))
    batches = [messages[i::cores] for i in range(cores)]
    with ThreadPoolExecutor(max_workers=cores) as pool:
        outputs = list(pool.map(lambda batch: _run(spamassassin, batch), batches))
    verdicts = dict(pair for output in outputs for pair in _verdicts(output))
    assert len(verdicts) == len(messages), "a verdict for every message"
    return verdicts


def _run(spamassassin: str, messages: list[bytes]) -> str:
    mbox = b"".join(SEPARATOR + _mbox_entry(data) for data in messages)
    done = subprocess.run(
        [spamassassin, "-t", "-L", "--mbox"], input=mbox, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    return done.stdout.decode("utf-8", "replace")


def _mbox_entry(data: bytes) -> bytes:
    """A message as an mbox holds it: LF line ends, body lines that start "From " quoted."""
    text = data.replace(b"\r\n", b"\n")
    return re.sub(rb"^(>*From )", rb">\1", text, flags=re.M) + b"\n"


def _verdicts(output: str) -> Iterator[tuple[str, Verdict]]:
    for scored in output.split(SEPARATOR.decode())[1:]:
        status, message_id = _STATUS.search(scored), _MESSAGE_ID.search(scored)
        assert status and message_id, f"SpamAssassin's output:\n{scored[:3000]}"
        rules = [rule for rule in re.split(r"[\s,]+", status.group(2)) if rule not in ("", "none")]
        report = scored[scored.find("Content analysis details:") :]
        yield message_id.group(1), Verdict(float(status.group(1)), rules, report)


@pytest.mark.backends("sqlite", reason="a message's bytes do not depend on the database")
def test_it_sends_no_email_that_spamassassin_scores_above_half_a_point(
    spamassassin: str, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # As deployed: a name under https, and mail from the organisation's own domain.
    site, mail_from = "https://lek.ticketdienst.example", "portal@ticketdienst.example"
    deployed = replace(settings, base_url=site, mail_from=mail_from)
    sent = send_every_email(engine, deployed, tmp_path)
    verdicts = judged(spamassassin, [s.data for s in sent])
    scored = sorted(((s, verdicts[str(s.message["Message-ID"])]) for s in sent), key=_by_name)
    for s, verdict in scored:  # shown with -s, and on a failure
        print(f"{s.name}: {verdict.score} {' '.join(verdict.rules)}")
    too_high = [f"{s.name}: {v.score}\n{v.report}" for s, v in scored if v.score > MAX_SCORE]
    assert not too_high, "\n".join(too_high)


def _by_name(item: tuple[Sent, Verdict]) -> str:
    return item[0].name
