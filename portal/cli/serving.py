"""Commands that run the portal: `init`, `serve`, `mail-worker` and `demo`."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from portal import workers
from portal.cli.base import database, load_settings, operator_errors, out, progress_bar, safe_url
from portal.core import logs
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents import demo as demo_data
from portal.incidents.fingerprints import refuse_another_pepper
from portal.mail.delivery import sender_for
from portal.mail.relay_health import check_relay


@operator_errors
def init() -> None:
    """Create or migrate the database and create instance secrets if missing.

    Example: portal init
    """
    settings = load_settings()
    with database(settings):
        pass
    out.print(f"database ready: {safe_url(settings.database_url)}")


@operator_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Web worker processes.")] = 1,
    no_mail_worker: Annotated[
        bool, typer.Option("--no-mail-worker", help="Leave mail to `portal mail-worker`.")
    ] = False,
) -> None:
    """Run the portal with uvicorn; queued mail is delivered in-process unless told not to.

    Every setting is checked first. Without PORTAL_BASE_URL, the links in mail point to
    this host and port.

    Example: PORTAL_BASE_URL=https://lek.example.org portal serve --host 0.0.0.0 --workers 4
    """
    settings = _served_at(load_settings(server=True), host=host, port=port)
    settings.refuse_unsafe_production()
    if workers > 1 and not settings.redis_url:
        logging.getLogger("portal.cli").warning(
            "each of the %d workers keeps its own rate limits; set PORTAL_REDIS_URL to share them",
            workers,
        )
    with database(settings) as engine:
        refuse_another_pepper(engine, settings.pepper)
    if no_mail_worker:
        # The mail workers apart check the relay when they start; this process promises
        # "check your inbox" all the same, so it says so too.
        asyncio.run(check_relay(sender_for(settings)))
    _serve(settings, host=host, port=port, workers=workers, mail=not no_mail_worker)


def _serve(settings: Settings, *, host: str, port: int, workers: int, mail: bool) -> None:
    os.environ["PORTAL_IN_PROCESS_MAIL"] = "1" if mail else "0"
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_folder(settings))
    out.print(f"serving on http://{host}:{port}  (base URL {settings.base_url})")
    try:
        uvicorn.run(
            "portal.app:from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # uvloop and httptools (dependencies) where they install; else asyncio and h11.
            loop="auto",
            http="auto",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            # A deploy's SIGTERM: the requests in flight get this long at most; the lookups
            # they queued are written within the same time (portal.app's lifespan).
            timeout_graceful_shutdown=settings.shutdown_timeout,
        )
    except SystemExit as exc:
        if exc.code in (0, None):
            return
        # uvicorn has logged why (a port in use, say); the operator gets one line too.
        raise PortalError(f"could not serve on {host}:{port} (see the log line above)") from None


def _metrics_folder(settings: Settings) -> Path:
    """Where the workers write their metrics for /metrics to sum; emptied at each start.

    Figures of a previous run would otherwise be added to this one's.
    """
    folder = settings.instance_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return folder


@operator_errors
def mail_worker() -> None:
    """Deliver queued mail and remind partners until stopped (when run apart from the web).

    Example: portal mail-worker
    """
    settings = load_settings(server=True)
    with database(settings) as engine:
        refuse_another_pepper(engine, settings.pepper)
        out.print("delivering mail and reminding partners; stop with Ctrl+C")
        asyncio.run(workers.deliver_and_remind(engine, settings, asyncio.Event()))


@operator_errors
def demo(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    records: Annotated[int, typer.Option(min=10, help="Synthetic people to make.")] = 2400,
) -> None:
    """Load a synthetic incident with three partners and serve it on http://127.0.0.1:PORT.

    Mail goes to the instance outbox; its links are printed here.

    Example: portal demo --port 8000
    """
    logs.configure(logging.INFO, structured=False)
    settings = Settings.from_env()
    settings = _served_at(settings, host="127.0.0.1", port=port)
    with database(settings) as engine, tempfile.TemporaryDirectory() as folder:
        refuse_another_pepper(engine, settings.pepper)
        imported = demo_data.load_demo(
            engine, settings, Path(folder), records=records, progress=progress_bar
        )
    if imported is None:
        out.print("demo records already imported")
    for partner, summary in (imported or {}).items():
        out.print(f"{partner}: {summary.imported} records")
    out.print(
        "\n[bold]Try these addresses[/] (mail is written to the outbox and its link printed):"
    )
    for synthetic, what in demo_data.DEMO_ADDRESSES.items():
        out.print(f"  {synthetic:30} {what}", highlight=False)
    _serve(settings, host="127.0.0.1", port=port, workers=1, mail=True)


def _served_at(settings: Settings, *, host: str, port: int) -> Settings:
    """Without PORTAL_BASE_URL, links in mail point where the portal listens.

    The URL goes into the environment: uvicorn's worker processes read their settings there.
    """
    if not settings.base_url_is_default:
        return settings
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        logging.getLogger("portal.cli").warning(
            "PORTAL_BASE_URL is not set: links in mail point to http://127.0.0.1:%d, which "
            "works on this machine only",
            port,
        )
        host = "127.0.0.1"
    named = f"[{host}]" if ":" in host else host
    os.environ["PORTAL_BASE_URL"] = f"http://{named}:{port}"
    return Settings.from_env()
