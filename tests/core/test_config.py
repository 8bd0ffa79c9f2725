"""Settings.from_env: the defaults of design §2, generated secrets, .env, and refusals."""

from __future__ import annotations

import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from portal.core.config import Settings
from portal.core.errors import PortalError

KEY = "k" * 48
PEPPER = "p" * 48


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PORTAL_"):
            monkeypatch.delenv(name)


def given(tmp_path: Path, **values: str) -> dict[str, str]:
    """An environment with an instance folder and both secrets, plus `values`."""
    environ = {
        "PORTAL_INSTANCE_DIR": str(tmp_path / "instance"),
        "PORTAL_SECRET_KEY": KEY,
        "PORTAL_PEPPER": PEPPER,
    }
    environ.update({f"PORTAL_{name}": value for name, value in values.items()})
    return environ


def test_it_applies_the_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"PORTAL_SECRET_KEY": KEY, "PORTAL_PEPPER": PEPPER})
    instance = tmp_path.resolve() / "instance"
    assert settings.instance_dir == instance
    assert settings.database_url == f"sqlite:///{instance / 'portal.db'}"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.smtp_url is None
    assert settings.mail_from == "portal@localhost"
    assert settings.redis_url is None
    assert settings.link_ttl == 3600
    assert settings.session_ttl == 1800
    assert settings.limit_per_address == "5/hour"
    assert settings.limit_per_client == "20/hour"
    assert settings.trusted_proxies == frozenset()
    assert settings.deletion_retention_days == 90
    assert settings.notice_link_ttl == 30 * 24 * 3600
    assert settings.notice_rate == 10
    assert settings.shutdown_timeout == 30
    assert settings.bounce_address is None
    assert settings.smtp_connections == 4
    assert settings.generated_secrets == frozenset()
    assert not settings.https


def test_it_reads_every_variable_it_is_given(tmp_path: Path) -> None:
    settings = Settings.from_env(
        given(
            tmp_path,
            DATABASE_URL="postgresql://portal@db.example/portal",
            BASE_URL="https://lek.example.org/",
            SMTP_URL="smtp+starttls://user:pass@mail.example:587",
            MAIL_FROM="lek@example.org",
            REDIS_URL="redis://127.0.0.1:6379/0",
            LINK_TTL="600",
            SESSION_TTL="900",
            LIMIT_PER_ADDRESS="3/hour",
            LIMIT_PER_CLIENT="10/minute",
            TRUSTED_PROXIES="10.0.0.1, 10.0.0.2,",
            NOTICE_LINK_TTL="86400",
            NOTICE_RATE="2.5",
            SHUTDOWN_TIMEOUT="90",
            BOUNCE_ADDRESS="bounces@example.org",
            SMTP_CONNECTIONS="8",
        )
    )
    assert settings.bounce_address == "bounces@example.org"
    assert (settings.notice_link_ttl, settings.notice_rate) == (86400, 2.5)
    assert settings.smtp_connections == 8
    assert settings.shutdown_timeout == 90
    assert settings.database_url == "postgresql://portal@db.example/portal"
    assert settings.base_url == "https://lek.example.org"
    assert settings.https
    assert settings.smtp_url == "smtp+starttls://user:pass@mail.example:587"
    assert settings.mail_from == "lek@example.org"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.link_ttl, settings.session_ttl) == (600, 900)
    assert (settings.limit_per_address, settings.limit_per_client) == ("3/hour", "10/minute")
    assert settings.trusted_proxies == frozenset({"10.0.0.1", "10.0.0.2"})
    assert settings.secret_key == KEY
    assert settings.pepper == PEPPER.encode()


def test_it_generates_missing_secrets_privately_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = tmp_path / "instance"
    with caplog.at_level(logging.WARNING, logger="portal.config"):
        settings = Settings.from_env({"PORTAL_INSTANCE_DIR": str(instance)})
    assert settings.generated_secrets == frozenset({"PORTAL_SECRET_KEY", "PORTAL_PEPPER"})
    for name in ("secret_key", "pepper"):
        assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600
    assert (instance / "secret_key").read_text().strip() == settings.secret_key
    assert (instance / "pepper").read_text().strip().encode() == settings.pepper
    assert len(settings.secret_key) >= 32
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "PORTAL_SECRET_KEY" in warnings[0].getMessage()
    assert "PORTAL_PEPPER" in warnings[1].getMessage()


def test_it_reuses_generated_secrets_on_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"PORTAL_INSTANCE_DIR": str(tmp_path / "instance")}
    first = Settings.from_env(environ)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="portal.config"):
        second = Settings.from_env(environ)
    assert second.secret_key == first.secret_key
    assert second.pepper == first.pepper
    assert second.generated_secrets == first.generated_secrets
    assert not caplog.records


def test_it_generates_nothing_when_secrets_are_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="portal.config"):
        settings = Settings.from_env(given(tmp_path))
    assert not (tmp_path / "instance" / "secret_key").exists()
    assert not (tmp_path / "instance" / "pepper").exists()
    assert settings.generated_secrets == frozenset()
    assert not caplog.records


def test_it_generates_only_the_missing_secret(tmp_path: Path) -> None:
    environ = given(tmp_path)
    del environ["PORTAL_PEPPER"]
    settings = Settings.from_env(environ)
    assert settings.generated_secrets == frozenset({"PORTAL_PEPPER"})
    assert settings.secret_key == KEY
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_it_reads_dotenv_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        f"PORTAL_INSTANCE_DIR={tmp_path / 'from-dotenv'}\n"
        f"PORTAL_SECRET_KEY={KEY}\n"
        f"PORTAL_PEPPER={PEPPER}\n"
        "PORTAL_LINK_TTL=600\n"
        "PORTAL_MAIL_FROM=dotenv@example.org\n"
    )
    settings = Settings.from_env()
    assert settings.instance_dir == tmp_path.resolve() / "from-dotenv"
    assert settings.secret_key == KEY
    assert settings.link_ttl == 600
    assert settings.mail_from == "dotenv@example.org"
    assert settings.generated_secrets == frozenset()


def test_it_prefers_the_environment_over_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        f"PORTAL_SECRET_KEY={KEY}\nPORTAL_PEPPER={PEPPER}\nPORTAL_LINK_TTL=600\n"
    )
    monkeypatch.setenv("PORTAL_LINK_TTL", "120")
    assert Settings.from_env().link_ttl == 120


def test_it_ignores_dotenv_when_given_an_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORTAL_LINK_TTL=600\n")
    assert Settings.from_env(given(tmp_path)).link_ttl == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BASE_URL", "ftp://lek.example.org"),
        ("BASE_URL", "lek.example.org"),
        ("SMTP_URL", "http://mail.example"),
        ("SMTP_URL", "mail.example:25"),
        ("SMTP_URL", "smtp:/broken"),
        ("SMTP_URL", "smtp://"),
        ("SMTP_URL", "smtps://mail.example:99999"),
        ("SMTP_URL", "smtp://user:secret@mail.example:twentyfive"),
        ("SMTP_URL", "smpt://mail.example"),
        ("BASE_URL", "https://"),
        ("BASE_URL", "http://lek.example.org:0"),
        ("REDIS_URL", "memcached://127.0.0.1"),
        ("REDIS_URL", "redis:/6379"),
        ("REDIS_URL", "redis://127.0.0.1:6379/zero"),
        ("MAIL_FROM", "not an address"),
        ("BOUNCE_ADDRESS", "bounces"),
        ("BOUNCE_ADDRESS", "bounces+x@example.org"),
        ("BOUNCE_ADDRESS", "Bounces <bounces@example.org>"),
        ("BOUNCE_ADDRESS", "bounces@localhost"),
        ("LIMIT_PER_ADDRESS", "5/hour;"),
        ("LIMIT_PER_CLIENT", "0/hour"),
        ("LIMIT_CONFIRM_PER_CLIENT", "often"),
        ("LIMIT_LOGIN", ""),
        ("TRUSTED_PROXIES", "10.0.0.1, proxy.internal"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SESSION_TTL", "30m"),
        ("LINK_TTL", "an hour"),
        ("LINK_TTL", "0"),
        ("LINK_TTL", "-60"),
        ("SESSION_TTL", "1.5"),
        ("LIMIT_PER_ADDRESS", "five a day"),
        ("LIMIT_PER_CLIENT", "20/fortnight"),
        ("DELETION_RETENTION_DAYS", "0"),
        ("NOTICE_LINK_TTL", "30 days"),
        ("NOTICE_LINK_TTL", "0"),
        ("NOTICE_RATE", "0"),
        ("NOTICE_RATE", "-1"),
        ("NOTICE_RATE", "fast"),
        ("NOTICE_RATE", "nan"),
        ("NOTICE_RATE", "inf"),
        ("SHUTDOWN_TIMEOUT", "0"),
        ("SHUTDOWN_TIMEOUT", "30s"),
        ("SMTP_CONNECTIONS", "0"),
        ("SMTP_CONNECTIONS", "many"),
    ],
)
def test_it_refuses_an_invalid_value_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(PortalError) as caught:
        Settings.from_env(given(tmp_path, **{name: value}))
    assert f"PORTAL_{name}" in str(caught.value)


def test_it_never_repeats_the_smtp_password_when_refusing_it(tmp_path: Path) -> None:
    with pytest.raises(PortalError) as caught:
        Settings.from_env(given(tmp_path, SMTP_URL="smtp://user:hunter2@mail.example:x"))
    assert "PORTAL_SMTP_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


SMTP_FORM = (
    "write it as smtp://user:pass@host:587, smtp+starttls://user:pass@host:587 or "
    "smtps://user:pass@host:465"
)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("mail.example.org", f"'mail.example.org' is not a URL; {SMTP_FORM}"),
        ("mail.example.org:587", f"'mail.example.org:587' is not a URL; {SMTP_FORM}"),
        ("http://mail.example.org", f"'http://mail.example.org' has scheme 'http'; {SMTP_FORM}"),
        ("smtp://", f"'smtp://' has no host; {SMTP_FORM}"),
        (
            "smtp://mail.example.org:25x",
            f"'smtp://mail.example.org:25x' has a port that is not a number 1-65535; {SMTP_FORM}",
        ),
    ],
)
def test_it_shows_what_a_valid_smtp_url_looks_like(tmp_path: Path, value: str, said: str) -> None:
    with pytest.raises(PortalError) as caught:
        Settings.from_env(given(tmp_path, SMTP_URL=value))

    assert str(caught.value).startswith(f"PORTAL_SMTP_URL: {said}")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("user:hunter2@mail.example.org", "'user:***@mail.example.org' is not a URL"),
        ("http://user:hunter2@mail.example.org", "'http://user:***@mail.example.org' has scheme"),
        ("smtp://user:hunter2@", "'smtp://user:***@' has no host"),
        ("smtp://user:hun://ter2@mail.example.org:x", "'smtp://user:***@mail.example.org:x'"),
        ("smtp://user:hunter2@pw@mail.example.org:x", "'smtp://user:***@mail.example.org:x'"),
    ],
)
def test_it_shows_the_smtp_url_given_without_its_password(
    tmp_path: Path, value: str, shown: str
) -> None:
    with pytest.raises(PortalError) as caught:
        Settings.from_env(given(tmp_path, SMTP_URL=value))

    assert shown in str(caught.value)
    assert "hunter2" not in str(caught.value) and "ter2" not in str(caught.value)


def test_it_trusts_proxies_by_address_and_by_network(tmp_path: Path) -> None:
    settings = Settings.from_env(
        given(tmp_path, TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7, fd00::/8")
    )
    assert settings.trusts_proxy("10.20.30.40")
    assert settings.trusts_proxy("::ffff:10.1.1.1")
    assert settings.trusts_proxy("192.168.1.7")
    assert settings.trusts_proxy("fd12::1")
    assert not settings.trusts_proxy("192.168.1.8")
    assert not settings.trusts_proxy("11.0.0.1")
    assert not settings.trusts_proxy("testclient")


def test_it_knows_whether_the_base_url_was_given(tmp_path: Path) -> None:
    assert Settings.from_env(given(tmp_path)).base_url_is_default
    given_url = Settings.from_env(given(tmp_path, BASE_URL="http://127.0.0.1:8000"))
    assert not given_url.base_url_is_default


def test_it_accepts_each_smtp_scheme(tmp_path: Path) -> None:
    for scheme in ("smtp", "smtp+starttls", "smtps"):
        url = f"{scheme}://mail.example"
        assert Settings.from_env(given(tmp_path, SMTP_URL=url)).smtp_url == url


def test_it_refuses_https_with_generated_secrets(tmp_path: Path) -> None:
    environ = {
        "PORTAL_INSTANCE_DIR": str(tmp_path / "instance"),
        "PORTAL_BASE_URL": "https://lek.example.org",
    }
    settings = Settings.from_env(environ)
    with pytest.raises(PortalError) as caught:
        settings.refuse_unsafe_production()
    assert "PORTAL_PEPPER" in str(caught.value)
    assert "PORTAL_SECRET_KEY" in str(caught.value)


def test_it_allows_generated_secrets_on_http(tmp_path: Path) -> None:
    settings = Settings.from_env({"PORTAL_INSTANCE_DIR": str(tmp_path / "instance")})
    assert settings.generated_secrets
    settings.refuse_unsafe_production()


def test_it_allows_https_with_given_secrets_and_smtp(tmp_path: Path) -> None:
    Settings.from_env(
        given(tmp_path, BASE_URL="https://lek.example.org", SMTP_URL="smtp://mail.example.org")
    ).refuse_unsafe_production()


def test_it_refuses_https_with_mail_to_the_local_outbox(tmp_path: Path) -> None:
    settings = Settings.from_env(given(tmp_path, BASE_URL="https://lek.example.org"))
    with pytest.raises(PortalError, match="without PORTAL_SMTP_URL"):
        settings.refuse_unsafe_production()


def test_it_refuses_https_with_a_short_given_secret(tmp_path: Path) -> None:
    environ = given(tmp_path, BASE_URL="https://lek.example.org", PEPPER="short")
    with pytest.raises(PortalError, match="PORTAL_PEPPER"):
        Settings.from_env(environ).refuse_unsafe_production()


def test_it_treats_an_upper_case_https_base_url_as_https(tmp_path: Path) -> None:
    environ = {
        "PORTAL_INSTANCE_DIR": str(tmp_path / "instance"),
        "PORTAL_BASE_URL": "HTTPS://lek.example.org",
    }
    settings = Settings.from_env(environ)
    assert settings.https
    with pytest.raises(PortalError):
        settings.refuse_unsafe_production()


def test_it_names_the_unit_of_a_bad_retention(tmp_path: Path) -> None:
    with pytest.raises(PortalError) as caught:
        Settings.from_env(given(tmp_path, DELETION_RETENTION_DAYS="ninety"))
    assert "seconds" not in str(caught.value)
    assert "days" in str(caught.value)


def test_it_agrees_on_one_secret_when_processes_start_together(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    environ = {"PORTAL_INSTANCE_DIR": str(instance)}
    with ThreadPoolExecutor(8) as pool:
        peppers = set(pool.map(lambda _: Settings.from_env(environ).pepper, range(16)))
    assert len(peppers) == 1
    assert sorted(p.name for p in instance.iterdir()) == ["pepper", "secret_key"]


def test_it_refuses_an_empty_secret_file(tmp_path: Path) -> None:
    (tmp_path / "pepper").write_text("")
    with pytest.raises(PortalError, match="pepper is empty"):
        Settings.from_env({"PORTAL_INSTANCE_DIR": str(tmp_path), "PORTAL_SECRET_KEY": "k"})
