"""The mail tests' settings: a real SMTP server (tests/fixtures_mail.py) and a named sender."""

from __future__ import annotations

from dataclasses import replace

import pytest

from portal.core.config import Settings
from tests.fixtures_mail import SmtpServer


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return replace(settings, smtp_url=smtp_server.url(), mail_from="Portal <portal@example.net>")
