"""Settings: every environment variable of the design, read once, typed and validated."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from limits import parse_many
from starlette.config import Config

from portal.core.errors import PortalError

log = logging.getLogger("portal.config")

ENV_FILE = ".env"
MIN_SECRET_BYTES = 32
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
# Connections kept open to the relay per mail worker, each carrying one message at a time
# (aiosmtplib does not pipeline): the throughput comes from parallel connections.
SMTP_CONNECTIONS = 4
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """The portal's configuration; built by `Settings.from_env()` or directly in tests."""

    instance_dir: Path
    database_url: str
    secret_key: str
    pepper: bytes
    base_url: str = "http://127.0.0.1:8000"
    smtp_url: str | None = None
    smtp_connections: int = SMTP_CONNECTIONS  # kept open to the relay, per mail worker
    mail_from: str = "portal@localhost"
    redis_url: str | None = None
    link_ttl: int = 3600
    session_ttl: int = 1800
    limit_per_address: str = "5/hour"
    limit_per_client: str = "20/hour"
    limit_confirm_per_client: str = "30/hour"
    limit_per_code_client: str = "10/hour"  # letter codes tried per client (design §8)
    # Where a window envelope shows the address on a letter, in mm: left, top, width, height
    # (DIN 5008 form B).
    letter_window: tuple[float, float, float, float] = (20.0, 45.0, 85.0, 45.0)
    limit_login: str = "10/hour"
    trusted_proxies: frozenset[str] = frozenset()
    max_body_bytes: int = 16 * 1024
    deletion_retention_days: int = 90
    admin_session_ttl: int = 900
    limit_login_per_account: str = "10/hour"
    partner_reminder_days: int = 7
    audit_retention_days: int = 730
    security_contact: str | None = None  # security.txt's Contact; unset: the first incident's
    notice_link_ttl: int = 30 * 24 * 3600  # the direct link in a notice (design §7)
    notice_rate: float = 10.0  # notices sent per second across all workers
    # VERP (design §8): each message's envelope sender becomes local+TAG@domain of this.
    bounce_address: str | None = None
    generated_secrets: frozenset[str] = field(default_factory=frozenset)
    # PORTAL_BASE_URL was not set: `portal serve --port P` may put its own port in links.
    base_url_is_default: bool = False
    # Lookups waiting to be hashed, per process; past it one is shed (portal.person.lookup_queue).
    lookup_queue_size: int = 10000
    hash_threads: int = 0  # threads hashing lookups per process; 0: one per core
    incident_cache_ttl: float = 1.0  # seconds a page may show an incident from before a load
    pepper_check_interval: float = 30.0  # seconds /healthz may answer from its last pepper check
    # Seconds a `portal serve` given SIGTERM has to answer its requests and write every
    # lookup it accepted before it exits (design §6, Failures).
    shutdown_timeout: int = 30

    @property
    def https(self) -> bool:
        return urlsplit(self.base_url).scheme.lower() == "https"

    @property
    def outbox_dir(self) -> Path:
        return self.instance_dir / "outbox"

    @cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        """PORTAL_TRUSTED_PROXIES as networks: an address is its own /32 (or /128)."""
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in self.trusted_proxies)

    def trusts_proxy(self, address: str) -> bool:
        """Whether `address` is one of the proxies whose X-Forwarded-For is believed."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_networks)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Reads the environment (and `.env` in the working folder) once."""
        env_file = Path(ENV_FILE) if environ is None and Path(ENV_FILE).is_file() else None
        config = Config(env_file=env_file, environ=os.environ if environ is None else environ)
        instance_dir = Path(config("PORTAL_INSTANCE_DIR", default="./instance")).resolve()
        secret_key, pepper, generated = _secrets(config, instance_dir)

        def whole(name: str, default: str, unit: str = "seconds") -> int:
            return _positive_int(config(name, default=default), name, unit=unit)

        def text(name: str, default: str | None = None) -> str | None:
            return config(name, default=default) or None

        settings = cls(
            instance_dir=instance_dir,
            database_url=config(
                "PORTAL_DATABASE_URL", default=f"sqlite:///{instance_dir / 'portal.db'}"
            ),
            secret_key=secret_key,
            pepper=pepper.encode(),
            base_url=(text("PORTAL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            base_url_is_default=not text("PORTAL_BASE_URL"),
            smtp_url=text("PORTAL_SMTP_URL"),
            smtp_connections=whole("PORTAL_SMTP_CONNECTIONS", str(SMTP_CONNECTIONS), "connections"),
            mail_from=config("PORTAL_MAIL_FROM", default="portal@localhost"),
            redis_url=text("PORTAL_REDIS_URL"),
            link_ttl=whole("PORTAL_LINK_TTL", "3600"),
            session_ttl=whole("PORTAL_SESSION_TTL", "1800"),
            limit_per_address=config("PORTAL_LIMIT_PER_ADDRESS", default="5/hour"),
            limit_per_client=config("PORTAL_LIMIT_PER_CLIENT", default="20/hour"),
            limit_per_code_client=config("PORTAL_LIMIT_PER_CODE_CLIENT", default="10/hour"),
            letter_window=letter_window(config("PORTAL_LETTER_WINDOW", default="20,45,85,45")),
            limit_confirm_per_client=config("PORTAL_LIMIT_CONFIRM_PER_CLIENT", default="30/hour"),
            limit_login=config("PORTAL_LIMIT_LOGIN", default="10/hour"),
            trusted_proxies=frozenset(
                p.strip()
                for p in config("PORTAL_TRUSTED_PROXIES", default="").split(",")
                if p.strip()
            ),
            deletion_retention_days=whole("PORTAL_DELETION_RETENTION_DAYS", "90", "days"),
            admin_session_ttl=whole("PORTAL_ADMIN_SESSION_TTL", "900"),
            limit_login_per_account=config("PORTAL_LIMIT_LOGIN_PER_ACCOUNT", default="10/hour"),
            partner_reminder_days=whole("PORTAL_PARTNER_REMINDER_DAYS", "7", "days"),
            audit_retention_days=whole("PORTAL_AUDIT_RETENTION_DAYS", "730", "days"),
            security_contact=text("PORTAL_SECURITY_CONTACT"),
            notice_link_ttl=whole("PORTAL_NOTICE_LINK_TTL", "2592000"),
            notice_rate=positive_rate(
                config("PORTAL_NOTICE_RATE", default="10"), "PORTAL_NOTICE_RATE"
            ),
            bounce_address=text("PORTAL_BOUNCE_ADDRESS"),
            lookup_queue_size=whole("PORTAL_LOOKUP_QUEUE_SIZE", "10000", "lookups"),
            hash_threads=whole("PORTAL_HASH_THREADS", str(_cores()), "threads"),
            shutdown_timeout=whole("PORTAL_SHUTDOWN_TIMEOUT", "30", "seconds"),
            generated_secrets=frozenset(generated),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuses settings that cannot work, with the variable to fix, before anything starts."""
        base = _url("PORTAL_BASE_URL", self.base_url, ("http", "https"), "https://host")
        if base.query or base.fragment:
            raise PortalError("PORTAL_BASE_URL must not have a query or fragment")
        if self.smtp_url:
            _url(
                "PORTAL_SMTP_URL",
                self.smtp_url,
                SMTP_SCHEMES,
                "smtp://user:pass@host:587, smtp+starttls://user:pass@host:587 or "
                "smtps://user:pass@host:465",
            )
        if self.redis_url:
            redis = _url(
                "PORTAL_REDIS_URL", self.redis_url, ("redis", "rediss"), "redis://host:port/db"
            )
            if redis.path.strip("/") and not redis.path.strip("/").isdigit():
                raise PortalError(
                    "PORTAL_REDIS_URL must end in a database number: redis://host:port/db"
                )
        self._validate_mail_from()
        self._validate_bounce_address()
        self._validate_security_contact()
        self._validate_limits()
        self._validate_proxies()

    def _validate_mail_from(self) -> None:
        _, address = parseaddr(self.mail_from)
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) or any(ch.isspace() for ch in address):
            raise PortalError(
                f"PORTAL_MAIL_FROM must be an email address, or Name <address>: {self.mail_from!r}"
            )

    def _validate_bounce_address(self) -> None:
        address = self.bounce_address
        if address is None:
            return
        local, at, domain = address.rpartition("@")
        plain = address.isascii() and not any(ch.isspace() or ch in '<>+"' for ch in address)
        if not (at and local and "." in domain and plain):
            raise PortalError(
                "PORTAL_BOUNCE_ADDRESS must be a plain ASCII address without a + (the portal "
                f"adds +TAG to its local part), such as bounces@example.org: {address!r}"
            )

    def _validate_security_contact(self) -> None:
        contact = self.security_contact
        if contact is None:
            return
        parts = urlsplit(contact)
        is_url = parts.scheme in ("https", "mailto", "tel") and bool(parts.netloc or parts.path)
        local, at, domain = contact.rpartition("@")
        is_address = bool(at and local and "." in domain) and not parts.scheme
        if not (is_url or is_address) or any(ch.isspace() for ch in contact):
            raise PortalError(
                "PORTAL_SECURITY_CONTACT must be an email address, or a mailto:, https: or "
                f"tel: URI (RFC 9116): {contact!r}"
            )

    def _validate_limits(self) -> None:
        for name, value in (
            ("PORTAL_LIMIT_PER_ADDRESS", self.limit_per_address),
            ("PORTAL_LIMIT_PER_CLIENT", self.limit_per_client),
            ("PORTAL_LIMIT_PER_CODE_CLIENT", self.limit_per_code_client),
            ("PORTAL_LIMIT_CONFIRM_PER_CLIENT", self.limit_confirm_per_client),
            ("PORTAL_LIMIT_LOGIN", self.limit_login),
            ("PORTAL_LIMIT_LOGIN_PER_ACCOUNT", self.limit_login_per_account),
        ):
            try:
                items = parse_many(value)
            except ValueError:
                raise PortalError(
                    f"{name} is not in limits notation (e.g. 5/hour or 10/hour;50/day): {value!r}"
                ) from None
            if any(item.amount < 1 for item in items):
                raise PortalError(f"{name} must allow at least one per period: {value!r}")

    def _validate_proxies(self) -> None:
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise PortalError(
                    "PORTAL_TRUSTED_PROXIES takes IP addresses or networks (10.0.0.0/8), "
                    f"comma-separated: {entry!r} is neither"
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


def _url(name: str, url: str, schemes: tuple[str, ...], form: str) -> SplitResult:
    """The URL split, or a PortalError naming the variable, the value as given (never its
    password) and what a valid one looks like."""
    parts = urlsplit(url)
    given = f"{name}: {_without_password(url)!r}"
    if "://" not in url:
        raise PortalError(f"{given} is not a URL; write it as {form}")
    if parts.scheme.lower() not in schemes:
        raise PortalError(f"{given} has scheme {parts.scheme!r}; write it as {form}")
    if not parts.hostname:
        raise PortalError(f"{given} has no host; write it as {form}")
    try:
        port = parts.port
    except ValueError:
        raise PortalError(
            f"{given} has a port that is not a number 1-65535; write it as {form}"
        ) from None
    if port == 0:
        raise PortalError(f"{given} has port 0; the port is a number 1-65535")
    return parts


def _without_password(url: str) -> str:
    """The URL with any password before its host written as ***: user:***@host."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{separator}{user}{colon and ':***'}@{host}"


def _positive_int(value: str, name: str, *, unit: str = "seconds") -> int:
    try:
        number = int(value)
    except ValueError:
        raise PortalError(f"{name} must be a whole number of {unit}: {value!r}") from None
    if number <= 0:
        raise PortalError(f"{name} must be positive: {value!r}")
    return number


# At most: 100,000 a second, 10 µs apart (a schedule step stays whole microseconds), is "no
# throttle" for any relay; issue 22 measures the mail worker with `--rate 100000`.
MAX_NOTICE_RATE = 100_000.0


def letter_window(value: str) -> tuple[float, float, float, float]:
    """PORTAL_LETTER_WINDOW: "left,top,width,height" in millimetres, inside an A4 page."""
    try:
        left, top, width, height = (float(part) for part in value.split(","))
    except ValueError:
        raise PortalError(
            f"PORTAL_LETTER_WINDOW must be left,top,width,height in mm (e.g. 20,45,85,45): "
            f"{value!r}"
        ) from None
    if min(left, top) < 0 or min(width, height) <= 0 or left + width > 210 or top + height > 297:
        raise PortalError(
            f"PORTAL_LETTER_WINDOW must lie inside an A4 page (210x297 mm): {value!r}"
        )
    return left, top, width, height


def positive_rate(value: str, name: str) -> float:
    """A number of messages per second: positive, finite, fractions allowed (0.5: one in 2 s)."""
    try:
        rate = float(value)
    except ValueError:
        raise PortalError(f"{name} must be a number of messages per second: {value!r}") from None
    if not 0 < rate <= MAX_NOTICE_RATE:
        raise PortalError(
            f"{name} must be more than 0 and at most {MAX_NOTICE_RATE:,.0f} per second: {value!r}"
        )
    return rate


def _secrets(config: Config, instance_dir: Path) -> tuple[str, str, set[str]]:
    """The secret key and the pepper, each from the environment or else the instance
    folder (made there on first use); and which of the two were made or read there."""
    generated: set[str] = set()
    secret_key = config("PORTAL_SECRET_KEY", default=None)
    if not secret_key:
        secret_key = _instance_secret(instance_dir, "secret_key")
        generated.add("PORTAL_SECRET_KEY")
    pepper = config("PORTAL_PEPPER", default=None)
    if not pepper:
        pepper = _instance_secret(instance_dir, "pepper")
        generated.add("PORTAL_PEPPER")
    return secret_key, pepper, generated


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


def _cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
