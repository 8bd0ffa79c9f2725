"""Operator test helpers: the persona dora, her sign-in, and requests made by the people."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.core.config import Settings
from portal.operator import accounts
from portal.requests.deletions import DeletionRequest, request_deletion
from tests.factories import RENDERER
from tests.person.test_lookups import sign_in_directly

# Operators: dora works the queue, eve is the colleague acting at the same moment.
DORA, DORA_PASSWORD = "dora", "a long passphrase she keeps"
EVE, EVE_PASSWORD = "eve", "another long passphrase of hers"


def create_operators(engine: Engine) -> None:
    with engine.begin() as conn:
        accounts.create_operator(conn, username=DORA, password=DORA_PASSWORD)
        accounts.create_operator(conn, username=EVE, password=EVE_PASSWORD)


def form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no csrf_token in the page"
    return match.group(1)


def sign_in(client: TestClient, username: str = DORA, password: str = DORA_PASSWORD) -> None:
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"username": username, "password": password, "csrf_token": form_token(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin/"


def ask_deletion(
    engine: Engine, settings: Settings, address: str, partner: str = "all"
) -> list[DeletionRequest]:
    """A person signs in and asks for deletion: the request as the public flow makes it."""
    session = sign_in_directly(engine, settings, address)
    with engine.begin() as conn:
        return request_deletion(conn, settings, session, partner=partner, renderer=RENDERER)


def post_form(client: TestClient, page_path: str, action: str, **fields: str):  # type: ignore[no-untyped-def]
    """Posts a form of the page at `page_path` with that page's csrf_token, as a browser does."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(
        action, data={**fields, "csrf_token": form_token(page.text)}, follow_redirects=False
    )


def portal_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[Any]:
    """`portal ARGS` in a real process on the app's database; stdout as bytes, stderr text."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    environment.update(
        PORTAL_INSTANCE_DIR=str(settings.instance_dir),
        PORTAL_DATABASE_URL=settings.database_url,
        PORTAL_SECRET_KEY=settings.secret_key,
        PORTAL_PEPPER=settings.pepper.decode(),
        PYTHONIOENCODING="utf-8",
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-m", "portal", *args],
        env=environment,
        cwd=settings.instance_dir,
        capture_output=True,
        timeout=120,
        check=False,
    )
    done.stderr = done.stderr.decode("utf-8")
    return done
