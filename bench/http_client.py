"""A minimal kept-alive HTTP/1.1 client for the load benchmarks, and the pages' CSRF form.

httpx cost the client more than the portal cost the server: at a few hundred requests a
second it, not the portal, set the pace. This client writes a request and reads one
answer per call on one connection, nothing more.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Response:
    """An answer: its status, headers (names in lower case) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key == name), "")

    def cookies(self) -> dict[str, str]:
        """The cookies it sets (name=value of each Set-Cookie, the attributes left out)."""
        pairs = (value.split(";", 1)[0] for key, value in self.headers if key == "set-cookie")
        return dict(pair.strip().split("=", 1) for pair in pairs if "=" in pair)


class Connection:
    """One kept-alive connection to host:port; one request at a time."""

    def __init__(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.host, self.reader, self.writer = host, reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(f"{host}:{port}", reader, writer)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        """Sends one request (a form is posted url-encoded) and reads the whole answer."""
        body = urlencode(form).encode() if form is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if form is not None:
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
            head += f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        return await self._answer()

    async def _answer(self) -> Response:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        headers = []
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(int(status_line.split()[1]), headers, b"")
        if response.header("transfer-encoding").lower() == "chunked":
            body = await self._chunks()
        else:
            body = await self.reader.readexactly(int(response.header("content-length") or 0))
        return Response(response.status, headers, body)

    async def _chunks(self) -> bytes:
        body = b""
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            body += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()  # the empty line after the last chunk
        return body

    def close(self) -> None:
        self.writer.close()


def csrf_of(page: bytes | str) -> str:
    """The form's csrf_token in a page."""
    match = CSRF.search(page.encode() if isinstance(page, str) else page)
    assert match, "no csrf_token in the page"
    return match.group(1).decode()


def form_session(url: str, path: str) -> tuple[str, int, str, str]:
    """(host, port, the CSRF cookie header, the form token) from one visit of a form page."""
    with httpx.Client(base_url=url) as client:
        token = csrf_of(client.get(path).text)
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port, cookie, token


def metric(url: str, name: str) -> float:
    """A counter or gauge without labels from the portal's /metrics; 0 when absent."""
    for row in httpx.get(f"{url}/metrics").text.splitlines():
        if row.startswith(f"{name} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0
