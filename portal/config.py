"""Settings: every environment variable of the design, read once, typed and validated."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from limits import parse_many
from starlette.config import Config

from portal.errors import PortalError

log = logging.getLogger("portal.config")

ENV_FILE = ".env"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Settings:
    """The portal's configuration; built by `Settings.from_env()` or directly in tests."""

    instance_dir: Path
    database_url: str
    secret_key: str
    pepper: bytes
    base_url: str = "http://127.0.0.1:8000"
    smtp_url: str | None = None
    mail_from: str = "portal@localhost"
    redis_url: str | None = None
    link_ttl: int = 3600
    session_ttl: int = 1800
    limit_per_address: str = "5/hour"
    limit_per_client: str = "20/hour"
    limit_confirm_per_client: str = "30/hour"
    limit_login: str = "10/hour"
    trusted_proxies: frozenset[str] = frozenset()
    max_body_bytes: int = 16 * 1024
    deletion_retention_days: int = 90
    admin_session_ttl: int = 900
    limit_login_per_account: str = "10/hour"
    partner_reminder_days: int = 7
    audit_retention_days: int = 730
    generated_secrets: frozenset[str] = field(default_factory=frozenset)

    @property
    def https(self) -> bool:
        return urlsplit(self.base_url).scheme.lower() == "https"

    @property
    def outbox_dir(self) -> Path:
        return self.instance_dir / "outbox"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Reads the environment (and `.env` in the working folder) once."""
        env_file = Path(ENV_FILE) if environ is None and Path(ENV_FILE).is_file() else None
        config = Config(env_file=env_file, environ=os.environ if environ is None else environ)
        instance_dir = Path(config("PORTAL_INSTANCE_DIR", default="./instance")).resolve()
        generated: set[str] = set()
        secret_key = config("PORTAL_SECRET_KEY", default=None)
        if not secret_key:
            secret_key = _instance_secret(instance_dir, "secret_key")
            generated.add("PORTAL_SECRET_KEY")
        pepper = config("PORTAL_PEPPER", default=None)
        if not pepper:
            pepper = _instance_secret(instance_dir, "pepper")
            generated.add("PORTAL_PEPPER")
        settings = cls(
            instance_dir=instance_dir,
            database_url=config(
                "PORTAL_DATABASE_URL", default=f"sqlite:///{instance_dir / 'portal.db'}"
            ),
            secret_key=secret_key,
            pepper=pepper.encode(),
            base_url=config("PORTAL_BASE_URL", default="http://127.0.0.1:8000").rstrip("/"),
            smtp_url=config("PORTAL_SMTP_URL", default=None) or None,
            mail_from=config("PORTAL_MAIL_FROM", default="portal@localhost"),
            redis_url=config("PORTAL_REDIS_URL", default=None) or None,
            link_ttl=_positive_int(config("PORTAL_LINK_TTL", default="3600"), "PORTAL_LINK_TTL"),
            session_ttl=_positive_int(
                config("PORTAL_SESSION_TTL", default="1800"), "PORTAL_SESSION_TTL"
            ),
            limit_per_address=config("PORTAL_LIMIT_PER_ADDRESS", default="5/hour"),
            limit_per_client=config("PORTAL_LIMIT_PER_CLIENT", default="20/hour"),
            limit_confirm_per_client=config("PORTAL_LIMIT_CONFIRM_PER_CLIENT", default="30/hour"),
            limit_login=config("PORTAL_LIMIT_LOGIN", default="10/hour"),
            trusted_proxies=frozenset(
                p.strip()
                for p in config("PORTAL_TRUSTED_PROXIES", default="").split(",")
                if p.strip()
            ),
            deletion_retention_days=_positive_int(
                config("PORTAL_DELETION_RETENTION_DAYS", default="90"),
                "PORTAL_DELETION_RETENTION_DAYS",
                unit="days",
            ),
            admin_session_ttl=_positive_int(
                config("PORTAL_ADMIN_SESSION_TTL", default="900"), "PORTAL_ADMIN_SESSION_TTL"
            ),
            limit_login_per_account=config("PORTAL_LIMIT_LOGIN_PER_ACCOUNT", default="10/hour"),
            partner_reminder_days=_positive_int(
                config("PORTAL_PARTNER_REMINDER_DAYS", default="7"),
                "PORTAL_PARTNER_REMINDER_DAYS",
                unit="days",
            ),
            audit_retention_days=_positive_int(
                config("PORTAL_AUDIT_RETENTION_DAYS", default="730"),
                "PORTAL_AUDIT_RETENTION_DAYS",
                unit="days",
            ),
            generated_secrets=frozenset(generated),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuses settings that cannot work, with the variable to fix."""
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise PortalError(
                f"PORTAL_BASE_URL must start with http:// or https://: {self.base_url}"
            )
        if self.smtp_url and urlsplit(self.smtp_url).scheme not in (
            "smtp",
            "smtp+starttls",
            "smtps",
        ):
            raise PortalError("PORTAL_SMTP_URL must be smtp://, smtp+starttls:// or smtps://")
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss"):
            raise PortalError("PORTAL_REDIS_URL must be redis:// or rediss://")
        for name, value in (
            ("PORTAL_LIMIT_PER_ADDRESS", self.limit_per_address),
            ("PORTAL_LIMIT_PER_CLIENT", self.limit_per_client),
            ("PORTAL_LIMIT_CONFIRM_PER_CLIENT", self.limit_confirm_per_client),
            ("PORTAL_LIMIT_LOGIN", self.limit_login),
            ("PORTAL_LIMIT_LOGIN_PER_ACCOUNT", self.limit_login_per_account),
        ):
            try:
                parse_many(value)
            except ValueError:
                raise PortalError(
                    f"{name} is not in limits notation (e.g. 5/hour): {value}"
                ) from None

    def refuse_unsafe_production(self) -> None:
        """On https, generated dev secrets are not acceptable: they live beside the data.

        Nor are short ones: the pepper is all that stands between a leaked database and a
        dictionary of addresses, and the secret key signs every link, session and form.
        """
        if not self.https:
            return
        if self.generated_secrets:
            names = ", ".join(sorted(self.generated_secrets))
            raise PortalError(f"refusing to serve https with generated secrets; set {names}")
        for name, value in (
            ("PORTAL_SECRET_KEY", self.secret_key.encode()),
            ("PORTAL_PEPPER", self.pepper),
        ):
            if len(value) < MIN_SECRET_BYTES:
                raise PortalError(
                    f"refusing to serve https with a {name} shorter than {MIN_SECRET_BYTES} "
                    "characters; generate one with: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'"
                )
        if not self.smtp_url:
            # The dev outbox is a folder on this host: nobody would ever get their link.
            raise PortalError("refusing to serve https without PORTAL_SMTP_URL")


def _positive_int(value: str, name: str, *, unit: str = "seconds") -> int:
    try:
        number = int(value)
    except ValueError:
        raise PortalError(f"{name} must be a whole number of {unit}: {value!r}") from None
    if number <= 0:
        raise PortalError(f"{name} must be positive: {value!r}")
    return number


def _instance_secret(instance_dir: Path, name: str) -> str:
    """Reads a secret from the instance folder, creating it (mode 0600) on first use.

    The file appears whole or not at all (written aside, then linked into place), so two
    processes starting at once agree on one value and a crash leaves no empty secret.
    """
    path = instance_dir / name
    if not path.exists():
        instance_dir.mkdir(parents=True, exist_ok=True)
        _create_secret(path)
    value = path.read_text().strip()
    if not value:
        raise PortalError(f"{path} is empty: delete it or set PORTAL_{name.upper()}")
    return value


def _create_secret(path: Path) -> None:
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(aside, path)
    except FileExistsError:
        return  # another process was first: use its value
    finally:
        aside.unlink()
    log.warning(
        "generated %s into %s; set PORTAL_%s in production (and keep it safe)",
        path.name,
        path,
        path.name.upper(),
    )
