"""Secrets and logs: structured logs without personal data; no https with dev secrets."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer

from portal.core.blind_index import blind_index, normalise
from portal.incidents import stored
from portal.store import db
from tests.security.conftest import (
    KNOWN,
    LONG_SECRET,
    SLUG,
    Site,
    form_token,
    link_in,
    links_to,
    wait_until,
)
from tests.server import portal_env

pytestmark = pytest.mark.e2e

E2E_PEPPER = b"e2e-pepper"  # tests/server.py portal_env
E2E_SECRET_KEY = "e2e-secret-key"


def run_the_whole_path(site: Site) -> list[str]:
    """Lookups (known, unknown, invalid), confirmation, results, deletion; the secrets seen."""
    person, stranger = site.visitor(), site.visitor()
    address = KNOWN[60]
    results = person.sign_in(site.smtp, address)
    assert 'data-partner="park-a"' in results
    response = person.http.post(
        f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": form_token(results)}
    )
    assert response.status_code == 303
    assert stranger.lookup("stranger@example.net").status_code == 303
    sealed = stranger.http.cookies["portal_sent"]
    assert "stranger@example.net" in stranger.http.get(f"/{SLUG}/sent").text
    assert stranger.lookup("not valid@example.net").status_code == 400
    # Addresses and tokens typed into the URL itself, where no route expects them.
    token = links_to(site.smtp, address)[-1].rsplit("/v/", 1)[1]
    for path in ("/url-typed@example.net/", f"//v/{token}", f"/V/{token}", f"/v/{token}/x"):
        assert stranger.http.get(path).status_code == 404
    wait_until(lambda: not site.mail_pending())
    cookies = [v for v in (*person.http.cookies.values(), *stranger.http.cookies.values())]
    tokens = [form_token(results), person.csrf(), stranger.csrf()]
    return [*cookies, sealed, *tokens, person.client_address, stranger.client_address]


def link_secrets(site: Site) -> list[str]:
    """Every link token mailed in this session, and the random secret inside each."""
    serializer = URLSafeTimedSerializer(E2E_SECRET_KEY, salt="portal.link")
    found = []
    for message in site.smtp.received:
        link = link_in(message)
        if link:
            token = link.rsplit("/v/", 1)[1]
            found += [token, token.split(".")[0]]
        if link.startswith(site.portal.url):
            found.append(serializer.loads(token))
    return found


def addresses(site: Site) -> set[str]:
    mailed = {r for m in site.smtp.received for r in m.rcpt_tos}
    return mailed | set(KNOWN) | {"stranger@example.net", "alice@example.org", "bob@example.org"}


def blind_indexes(site: Site, emails: set[str]) -> list[str]:
    with site.engine.connect() as conn:
        salt = db.ensure_salt(conn)
        incident = stored.get_incident(conn, SLUG)
    assert incident is not None
    found = []
    for email in emails:
        bidx = blind_index(normalise(email), pepper=E2E_PEPPER, salt=salt, params=incident.kdf)
        found += [
            bidx.hex(),
            base64.b64encode(bidx).decode().rstrip("="),
            base64.urlsafe_b64encode(bidx).decode().rstrip("="),
        ]
    return found


def test_it_keeps_personal_data_and_secrets_out_of_the_log(site: Site) -> None:
    seen = run_the_whole_path(site)
    emails = addresses(site)
    log = site.portal.log()
    assert '"POST /v/… 303"' in log and f'"POST /{SLUG}/deletion 303"' in log

    lowered = log.lower()
    leaks = [e for e in (*emails, "url-typed@example.net") if e.lower() in lowered]
    leaks += [e.split("@")[0] for e in emails if f"{e.split('@')[0].lower()}@" in lowered]
    leaks += [s for s in (*seen, *link_secrets(site)) if len(s) >= 8 and s in log]
    leaks += [b for b in blind_indexes(site, emails) if b in log]
    assert not leaks
    assert E2E_PEPPER.decode() not in log and E2E_SECRET_KEY not in log


def test_it_writes_one_json_object_per_log_line(site: Site) -> None:
    lines = [line for line in site.portal.log().splitlines() if line.strip()]
    banner = [line for line in lines if not line.startswith("{")]

    assert all(line.startswith("serving on http://") for line in banner), banner
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    access = [entry for entry in entries if entry["logger"] == "portal.access"]
    assert all(set(entry) - {"time", "level", "logger", "message"} for entry in access)
    assert not [entry for entry in access if "client" in entry or "?" in entry["path"]]


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = portal_env(tmp_path, PORTAL_BASE_URL="https://lek.example.org", **env)
    for name in ("PORTAL_SECRET_KEY", "PORTAL_PEPPER"):
        if name not in env:
            environment.pop(name)
    return subprocess.run(
        [sys.executable, "-m", "portal", "serve", "--port", "9"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_refuses_to_serve_https_with_generated_secrets(tmp_path: Path) -> None:
    done = serve(tmp_path)

    assert done.returncode == 1
    assert "refusing to serve https with generated secrets" in done.stderr
    assert "PORTAL_PEPPER" in done.stderr and "PORTAL_SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_it_refuses_to_serve_https_with_a_short_secret(tmp_path: Path) -> None:
    done = serve(tmp_path, PORTAL_SECRET_KEY="changeme", PORTAL_PEPPER=LONG_SECRET)

    assert done.returncode == 1
    assert "PORTAL_SECRET_KEY shorter than 32" in done.stderr


def test_it_keeps_generated_secrets_private(tmp_path: Path) -> None:
    serve(tmp_path)

    for name in ("secret_key", "pepper"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
