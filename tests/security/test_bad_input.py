"""Bad input: refused with a clear 400 and the form, never echoed, never in a mail header."""

from __future__ import annotations

import html
import re
import socket

import httpx
import pytest

from tests.security.conftest import SLUG, Site, Visitor, links_to, wait_until

pytestmark = pytest.mark.e2e

BAD_ADDRESSES = {
    "crlf header injection": "victim@example.org\r\nBcc: evil@attacker.example",
    "lf": "victim@example.org\nBcc: evil@attacker.example",
    "cr": "victim@example.org\rBcc:evil@attacker.example",
    "nul": "victim\x00@example.org",
    "tab inside": "vic\ttim@example.org",
    "zero-width": "vic\u200btim@example.org",
    "too long": "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".example",
    "local part too long": "a" * 65 + "@example.org",
    "cyrillic in latin domain": "victim@p\u0430ypal.com",
    "greek in latin domain": "victim@g\u03bfogle.com",
    "whole-script look-alike": "victim@\u0430\u0440\u0440\u04cf\u0435.com",
    "html": "<script>alert(1)</script>@example.org",
    "html in domain": "victim@<img src=x onerror=alert(1)>.org",
    "attribute breakout": '"><svg onload=alert(1)>@example.org',
    "sql quote or": "' OR '1'='1'--@example.org",
    "sql union": "x@example.org' UNION SELECT bidx FROM exposures--",
    "sql drop": "x@example.org'; DROP TABLE exposures;--",
    "sql comment": "admin@example.org/* */",
    "no at": "victim.example.org",
    "two ats": "a@b@example.org",
    "empty": "",
    "spaces": "   ",
    "localhost": "root@localhost",
    "ip literal": "root@[127.0.0.1]",
}


@pytest.fixture(scope="module")
def visitor(site: Site) -> Visitor:
    return site.visitor()


@pytest.mark.parametrize("address", BAD_ADDRESSES.values(), ids=BAD_ADDRESSES.keys())
def test_it_refuses_a_bad_address_with_the_form(visitor: Visitor, address: str) -> None:
    response = visitor.lookup(address)

    assert response.status_code == 400
    assert f'action="/{SLUG}/lookup"' in response.text
    assert 'data-error="email"' in response.text
    # The form keeps what was typed (WCAG 3.3.1, issue 13), escaped, in its own field only.
    field = re.search(r'(<input id="email"[^>]*value=")([^"]*)"', response.text)
    assert field, "the email field comes back"
    typed = "".join(ch for ch in address if ch.isprintable())
    assert html.unescape(field.group(2)) == typed
    rest = response.text.replace(field.group(0), field.group(1) + '"')
    assert "<script>alert" not in response.text
    assert "onerror=" not in rest and "onload=" not in rest
    if address.strip():
        assert address not in rest
        assert html.escape(address) not in rest, "the input is echoed in its field only"


def test_it_lets_nothing_reach_a_mail_header(site: Site, visitor: Visitor) -> None:
    for address in BAD_ADDRESSES.values():
        assert visitor.lookup(address).status_code == 400
    # A genuine lookup after them: once its mail is out, anything they queued is out too.
    assert visitor.lookup("after-bad-input@example.net").status_code == 303
    wait_until(lambda: links_to(site.smtp, "after-bad-input@example.net"))

    headers = [str(v) for m in site.smtp.received for v in m.message.values()]
    recipients = [r for m in site.smtp.received for r in m.rcpt_tos]
    assert not [h for h in headers if "attacker.example" in h or "\n" in h or "\r" in h]
    assert not [r for r in recipients if "attacker" in r or "victim" in r]


def test_it_accepts_an_apostrophe_as_the_address_rules_do(site: Site) -> None:
    """o'brien@ is a real mailbox: queries are parameterised, the quote is harmless."""
    address = "o'brien@example.net"
    response = site.visitor().lookup(address)

    assert response.status_code == 303
    assert httpx.get(f"{site.portal.url}/healthz").json() == {"status": "ok"}
    wait_until(lambda: links_to(site.smtp, address))


def test_it_refuses_a_body_over_the_limit(visitor: Visitor) -> None:
    token = visitor.csrf()
    big = visitor.http.post(
        f"/{SLUG}/lookup", data={"email": "a@example.org", "csrf_token": token, "x": "y" * 17_000}
    )
    assert big.status_code == 413
    assert 'data-error-status="413"' in big.text  # the tidy page, in the visitor's language
    assert big.headers["content-security-policy"].startswith("default-src 'none'")

    def chunks() -> object:
        yield f"csrf_token={token}&email=".encode()
        for _ in range(40):
            yield b"a" * 1024

    streamed = visitor.http.post(
        f"/{SLUG}/lookup",
        content=chunks(),  # type: ignore[arg-type]
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert 'data-error-status="413"' in streamed.text


def test_it_refuses_a_content_length_that_is_not_a_number(site: Site) -> None:
    host, port = site.portal.url.removeprefix("http://").split(":")
    request = (
        f"POST /{SLUG}/lookup HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1e9\r\n\r\na=b"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]

    assert status_line.split()[1] in (b"400", b"413")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/page", 404),
        ("GET", "/no-such-incident/", 404),
        ("POST", "/no-such-incident/lookup", 404),
        ("GET", "/%3Cscript%3Ealert(1)%3C/script%3E/", 404),
        ("GET", "/%00/", 404),
        ("GET", "/static/../portal/config.py", 404),
        ("GET", "/static/..%2f..%2fportal%2fconfig.py", 404),
        ("GET", "/" + "a" * 4000 + "/", 404),
        ("DELETE", f"/{SLUG}/", 405),
        ("PUT", f"/{SLUG}/lookup", 405),
        ("PATCH", "/v/token", 405),
        ("POST", "/", 405),
        ("POST", "/static/portal.css", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_it_answers_odd_requests_with_a_tidy_page(
    visitor: Visitor, method: str, path: str, status: int
) -> None:
    response = visitor.http.request(method, path)

    assert response.status_code == status
    assert f'data-error-status="{status}"' in response.text
    assert_no_internals(response)
    assert "<script>alert" not in response.text


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"email": "a@example.org"}'),
        ("text/plain", b"email=a@example.org"),
        ("application/xml", b"<email>a@example.org</email>"),
        ("", b"email=a@example.org"),
    ],
)
def test_it_refuses_other_content_types_with_415(
    visitor: Visitor, content_type: str, body: bytes
) -> None:
    response = visitor.http.post(
        f"/{SLUG}/lookup", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 415
    assert 'data-error-status="415"' in response.text


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
        ("multipart/form-data", b"garbage"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n'
            b"hi\r\n--x--\r\n",
        ),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % n for n in range(100))),
        ("application/x-www-form-urlencoded", b"email=%ff%fe%00&csrf_token=%zz"),
        ("application/x-www-form-urlencoded; charset=utf-7", b"email=+ADw-script+AD4-"),
    ],
    ids=[
        "multipart-no-name",
        "multipart-no-boundary",
        "file",
        "many-fields",
        "bad-escapes",
        "utf7",
    ],
)
def test_it_never_fails_on_a_malformed_body(
    visitor: Visitor, site: Site, content_type: str, body: bytes
) -> None:
    response = visitor.http.post(
        f"/{SLUG}/lookup", content=body, headers={"content-type": content_type}
    )

    assert response.status_code in (400, 403)
    assert_no_internals(response)


def test_no_request_of_this_module_made_a_server_error(site: Site) -> None:
    log = site.portal.log()

    assert '"status": 500' not in log
    assert "unhandled" not in log
    assert "Traceback" not in log


def assert_no_internals(response: httpx.Response) -> None:
    for leak in ("Traceback", 'File "', ".py", "sqlalchemy", "starlette", "Exception"):
        assert leak not in response.text, leak
